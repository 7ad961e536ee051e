"""rmserve.v1: the protobuf and gRPC code generated from protos/rmserve/v1/reward.proto by
scripts/gen_protos.py (never edited by hand). May import: nothing of rmserve."""
