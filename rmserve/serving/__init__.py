"""The protocol-free core: tokenise → queue → batch → infer with a lifecycle, its
configuration and states, the shaping of every reply, admission by memory and returning freed
memory to the OS. Knows no gRPC, no HTTP and no settings class: adapters and the server wiring
call it.

May import: the layers below (``batching``, ``engine``, ``text``, ``rewards``,
``observability``, ``artifact``, ``errors``); never ``grpc``, ``aiohttp`` or
``rmserve.server.app``.
"""
