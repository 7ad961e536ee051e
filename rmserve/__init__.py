"""rmserve: serve Bradley-Terry reward models over gRPC with dynamic batching.

Packages by layer, each importing only the layers below it (``[tool.importlinter]`` in
pyproject.toml; docs/architecture.md draws them), top to bottom:

- ``testing``: test doubles and a real-server launcher;
- ``tools``: ``rmserve eval`` and ``rmserve loadtest``;
- ``server``: ``rmserve serve`` (settings, wiring, security, listeners, health check);
- ``grpc`` | ``http``: the protocol adapters;
- ``serving``: the protocol-free core, its config, replies and memory budget;
- ``batching``: the batcher, batch collection, warm-up, pending requests;
- ``engine`` | ``observability``: the onnxruntime session | metrics and the reward watch;
- ``text`` | ``rewards``: tokenising and templates | reward arithmetic;
- ``artifact`` | ``errors`` | ``cli_args`` | ``v1``: the manifest | domain errors | flags from
  settings | the generated protobuf code.

``client`` stands beside them (it needs no server code) and ``cli`` is the ``rmserve`` command.
"""
