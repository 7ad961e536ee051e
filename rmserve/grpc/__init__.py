"""The gRPC adapter: bytes → protobuf → core call → protobuf, with the one table that maps
core errors to status codes.

May import: ``rmserve.serving`` and below, ``rmserve.v1``; never ``rmserve.http`` or
``rmserve.server.app``.
"""
