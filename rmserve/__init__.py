"""rmserve: serve Bradley-Terry reward models over gRPC with dynamic batching."""
