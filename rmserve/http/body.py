"""Reading a request body against the server's limits, charged as its bytes arrive.

A body is read in chunks from the connection, never on the strength of its Content-Length:
each chunk kept is charged to the core's in-flight byte budget (``RewardCore.reserve_bytes``)
and to its client address's share (``ClientShares``) when it arrives, so headers that promise
64 MiB and then stall hold nothing. The read has a deadline that grows with what arrives: the
next bytes must come within ``timeout_seconds``, and the whole body by ``timeout_seconds`` plus
its size at ``min_bytes_per_second`` (the slow-body defence of nginx's ``client_body_timeout``
and Envoy's request timeouts); past it the request is 408 and its reservation released.

``Content-Encoding: gzip`` (or ``x-gzip``) and ``deflate`` (zlib or raw) are inflated here,
in bounded steps: the inflated bytes count against ``max_message_bytes`` and the budget, and a
body that would inflate past the limit is 413 without the rest being inflated. A corrupt or
truncated compressed body is 400; any other encoding is 415 naming ``Content-Encoding``
(aiohttp's own decompression is off: ``HttpFront`` starts it with ``auto_decompress=False``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from rmserve.errors import Overloaded

# The most inflated bytes one step of decompression makes before they are charged.
INFLATE_STEP_BYTES = 256 * 1024
SUPPORTED_ENCODINGS = "gzip, deflate"


@dataclass(frozen=True)
class BodyLimits:
    max_bytes: int  # max_message_bytes: on the wire and once inflated
    timeout_seconds: float  # longest wait for more of a body; the grace before the rate applies
    min_bytes_per_second: float  # 0: no rate, only the wait for each chunk


def refusal(status: type[web.HTTPException], code: str, message: str) -> web.HTTPException:
    """An HTTP error with the JSON error body every other refusal has; the connection closes
    after it (the rest of a refused body is not worth reading)."""
    text = json.dumps({"error": {"code": code, "message": message}})
    headers = {"Connection": "close"}
    if status is web.HTTPUnsupportedMediaType:
        headers["Accept-Encoding"] = SUPPORTED_ENCODINGS  # RFC 7694
    return status(text=text, content_type="application/json", headers=headers)


class _TooLarge(web.HTTPClientError):
    """413 (aiohttp's own class wants the sizes, which an inflating body does not know)."""

    status_code = 413


def too_large(message: str) -> web.HTTPException:
    return refusal(_TooLarge, "INVALID_ARGUMENT", message)


def bad_body(message: str) -> web.HTTPException:
    return refusal(web.HTTPBadRequest, "INVALID_ARGUMENT", message)


class ClientShares:
    """Request bytes held per client address, so one address cannot hold the whole budget."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}

    def held(self, address: str) -> int:
        return self._held.get(address, 0)

    @contextlib.contextmanager
    def share(self, address: str, limit: int) -> Iterator[Callable[[int], None]]:
        """A ``charge(n)`` for one request of ``address``, at most ``limit`` bytes held by the
        address in all; what it charged is given back when the block ends."""
        charged = 0

        def charge(size: int) -> None:
            nonlocal charged
            held = self._held.get(address, 0)
            if held + size > limit:
                raise Overloaded(
                    f"memory: client {address} holds {held} request bytes in flight, {size} "
                    f"more would exceed http_max_inflight_bytes_per_client={limit}; retry later",
                    retry_after_ms=1000,
                )
            self._held[address] = held + size
            charged += size

        try:
            yield charge
        finally:
            if charged:
                left = self._held[address] - charged
                if left:
                    self._held[address] = left
                else:
                    del self._held[address]


class Inflater:
    """One compressed body, inflated a bounded step at a time."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._zlib: zlib._Decompress | None = (
            zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip" else None
        )

    def _decoder(self, first: bytes) -> zlib._Decompress:
        if self._zlib is None:  # deflate: zlib-wrapped as RFC 9110 says, or raw as some send
            wrapped = (
                len(first) >= 2 and first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0
            )
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        return self._zlib

    def inflate(self, chunk: bytes) -> Iterator[bytes]:
        """The inflated bytes of ``chunk``, at most ``INFLATE_STEP_BYTES`` at a time."""
        decoder = self._decoder(chunk)
        data = chunk
        while True:
            if decoder.eof:
                if data or decoder.unused_data:
                    raise bad_body(
                        f"request body: data after the end of the {self.encoding} stream"
                    )
                return
            try:
                out = decoder.decompress(data, INFLATE_STEP_BYTES)
            except zlib.error as e:
                raise bad_body(f"request body: corrupt {self.encoding} data ({e})") from None
            if out:
                yield out
            data = decoder.unconsumed_tail
            if not data and len(out) < INFLATE_STEP_BYTES and not decoder.eof:
                return  # the chunk is used up: more input is needed

    def finish(self) -> None:
        if self._zlib is None or not self._zlib.eof:
            raise bad_body(f"request body: {self.encoding} data ends before its end (truncated)")


def inflater_for(request: web.Request) -> Inflater | None:
    """The decoder for the body's ``Content-Encoding`` (None: identity), or 415."""
    header = request.headers.get("Content-Encoding", "")
    encoding = header.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return Inflater("gzip")
    if encoding == "deflate":
        return Inflater("deflate")
    raise refusal(
        web.HTTPUnsupportedMediaType,
        "INVALID_ARGUMENT",
        f"Content-Encoding: {header!r} is not supported; send {SUPPORTED_ENCODINGS} or none",
    )


async def read_body(
    request: web.Request, limits: BodyLimits, charge: Callable[[int], None]
) -> bytes:
    """The body, inflated; ``charge(n)`` is called for every ``n`` bytes kept, before they are
    kept (it raises ``Overloaded`` to refuse). 408 when the body is too slow, 413 over
    ``max_bytes``, 400 for a broken body, 415 for an unsupported encoding."""
    inflater = inflater_for(request)
    loop = asyncio.get_running_loop()
    start = loop.time()
    received = 0  # on the wire
    kept: list[bytes] = []
    size = 0  # kept (inflated)
    while True:
        now = loop.time()
        # Every byte that arrives buys 1 / min_bytes_per_second more time.
        deadline = now + limits.timeout_seconds
        if limits.min_bytes_per_second > 0:
            earned = start + limits.timeout_seconds + received / limits.min_bytes_per_second
            deadline = min(deadline, earned)
        try:
            async with asyncio.timeout(max(0.0, deadline - now)):
                chunk = await request.content.readany()
        except TimeoutError:
            raise refusal(
                web.HTTPRequestTimeout,
                "DEADLINE_EXCEEDED",
                f"request body: {received} bytes in {loop.time() - start:.1f}s, too slow "
                f"(http_body_timeout_seconds={limits.timeout_seconds:g}, "
                f"http_min_body_bytes_per_second={limits.min_bytes_per_second:g})",
            ) from None
        except HttpProcessingError as e:  # e.g. a bad chunk size, a short body
            raise bad_body(f"request body: {e.message or type(e).__name__}") from None
        if not chunk:
            break
        received += len(chunk)
        if received > limits.max_bytes:
            raise too_large(
                f"request body: over max_message_bytes={limits.max_bytes} bytes as sent"
            )
        pieces = [chunk] if inflater is None else inflater.inflate(chunk)
        for piece in pieces:
            if size + len(piece) > limits.max_bytes:
                raise too_large(
                    f"request body: inflates to over max_message_bytes={limits.max_bytes} bytes"
                )
            charge(len(piece))
            kept.append(piece)
            size += len(piece)
    if inflater is not None:
        inflater.finish()
    return b"".join(kept)
