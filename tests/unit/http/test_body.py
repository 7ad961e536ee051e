"""The pieces of the HTTP body reader: bounded inflating, per-client shares, the quiet log."""

from __future__ import annotations

import logging
import zlib

import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from rmserve.errors import Overloaded
from rmserve.http.body import INFLATE_STEP_BYTES, ClientShares, Inflater
from rmserve.http.quiet_log import QuietServerLog, RateLimitedLine


def gzip(raw: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return packer.compress(raw) + packer.flush()


def test_a_bomb_inflates_in_bounded_steps() -> None:
    inflater = Inflater("gzip")
    steps = inflater.inflate(gzip(bytes(64 * INFLATE_STEP_BYTES)))
    first = [next(steps) for _ in range(3)]  # the caller stops when it likes
    assert [len(s) for s in first] == [INFLATE_STEP_BYTES] * 3


@pytest.mark.parametrize("split", [1, 7, 100])
def test_any_split_inflates_to_the_body(split: int) -> None:
    raw = b'{"query": ["a"]}' * 1000
    packed = gzip(raw)
    inflater = Inflater("gzip")
    out = b"".join(p for i in range(0, len(packed), split)
                   for p in inflater.inflate(packed[i : i + split]))  # fmt: skip
    inflater.finish()
    assert out == raw


def test_truncated_and_trailing_data_are_400() -> None:
    packed = gzip(b"x" * 1000)
    short = Inflater("gzip")
    list(short.inflate(packed[:-4]))
    with pytest.raises(web.HTTPBadRequest):
        short.finish()
    with pytest.raises(web.HTTPBadRequest):
        list(Inflater("gzip").inflate(packed + b"more"))


def test_a_client_share_is_capped_and_given_back() -> None:
    shares = ClientShares()
    with shares.share("10.0.0.1", 100) as first, shares.share("10.0.0.1", 100) as second:
        first(60)
        with pytest.raises(Overloaded, match="http_max_inflight_bytes_per_client=100"):
            second(41)
        with shares.share("10.0.0.2", 100) as other:
            other(100)  # another address has its own share
        assert shares.held("10.0.0.1") == 60
    assert shares.held("10.0.0.1") == 0


def test_malformed_requests_are_one_rate_limited_line(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    quiet = QuietServerLog(logging.getLogger("aiohttp.server"))
    quiet.malformed = RateLimitedLine(logging.getLogger("aiohttp.server"), 10.0, lambda: now[0])
    with caplog.at_level(logging.INFO):
        for _ in range(5):
            quiet.exception("Error handling request from %s", "h", exc_info=BadHttpMessage("x"))
        now[0] = 11.0
        quiet.exception("Error handling request from %s", "h", exc_info=BadHttpMessage("x"))
    lines = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert [r.levelno for r in lines] == [logging.WARNING] * 2
    assert all(r.exc_info is None for r in lines)
    assert "4 more such requests" in lines[1].getMessage()
