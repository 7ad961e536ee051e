"""Slow and hostile HTTP clients cannot lock out, stall or inflate the server (issue 26).

Real servers on 127.0.0.1: headers that promise big bodies hold none of the in-flight byte
budget, a stalled body is cut off by its deadline and gives its bytes back, a dropped one too,
compressed bodies are inflated within the limits (bombs are 413 without the memory), and every
malformed request is a 4xx naming what is wrong, without a traceback in the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import zlib
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from rmserve.serving.memory_budget import MIB
from rmserve.testing import ServerProcess, start_server
from rmserve.v1 import reward_pb2
from tests.support.harness import Harness, eventually, make_settings, serving

SESSION_LOOP = pytest.mark.asyncio(loop_scope="session")

GAUGE = "rmserve_inflight_request_bytes"
BOUND_S = 60.0  # "must not hang"; never a performance target


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def gzip_of_zeros(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MIB)
    parts = [packer.compress(block) for _ in range(size // MIB)]
    return b"".join([*parts, packer.flush()])


def gzipped(raw: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return packer.compress(raw) + packer.flush()


async def exchange(port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send one raw request, read the reply to the end of the connection: (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(-1), BOUND_S)
    finally:
        writer.close()
    status = int(reply.split(b" ", 2)[1]) if reply else 0
    return status, reply.partition(b"\r\n\r\n")[2]


def post_head(path: str, length: int, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {length}", "Connection: close"]
    return ("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode()


@pytest.fixture
async def front(tiny_artifact: Path) -> AsyncIterator[Harness]:
    settings = make_settings(tiny_artifact, http_port=0, http_body_timeout_seconds=1.0)
    async with serving(settings) as harness:
        yield harness


@SESSION_LOOP
async def test_header_only_connections_and_half_bodies_lock_nobody_out(
    tiny_artifact: Path,
) -> None:
    async with serving(make_settings(tiny_artifact, http_port=0)) as h:
        port = h.server.http_port
        held = []
        for i in range(20):  # 4 promise 64 MiB, 16 promise 64 KiB; none sends a byte of body
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            size = 64 * MIB if i < 4 else 64 * 1024
            writer.write(post_head("/get_reward", size, "Expect: 100-continue"))
            held.append((reader, writer))
        for reader, _ in held:  # the server has parsed each request and started its handler
            line = await asyncio.wait_for(reader.readline(), BOUND_S)
            assert b" 100 " in line, line
        assert h.metric(GAUGE) == 0
        try:
            request = reward_pb2.ScoreRequest(prompt="how are you?", response="fine")
            replies = await asyncio.gather(*(h.stub.Score(request, timeout=BOUND_S)
                                             for _ in range(64)))  # fmt: skip
            assert all(r.num_tokens > 0 for r in replies)
            body = json.dumps({"query": ["q a"], "prompts": ["q"]}).encode()
            statuses = await asyncio.gather(
                *(exchange(port, post_head("/get_reward", len(body)), body) for _ in range(8))
            )
            assert [s for s, _ in statuses] == [200] * 8, statuses
            # A body half sent is charged what arrived, and released when its client hangs up.
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post_head("/slime/reward", 1 << 20) + b"x" * 1000)
            await writer.drain()
            await eventually(lambda: h.metric(GAUGE) == 1000, "the 1000 bytes to be charged")
            writer.close()
        finally:
            for _, writer in held:
                writer.close()
        await eventually(lambda: h.metric(GAUGE) == 0, "nothing held after they go", BOUND_S)


@SESSION_LOOP
async def test_a_stalled_body_is_cut_off_and_its_bytes_released(front: Harness) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", front.server.http_port)
    try:
        writer.write(post_head("/get_reward", 65536) + b'{"query": [' + b" " * 89)
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(-1), BOUND_S)  # until the server closes
    finally:
        writer.close()
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
    assert b"request body: 100 bytes in" in reply  # what arrived was read (and charged)
    assert b"http_body_timeout_seconds=1" in reply
    assert front.metric(GAUGE) == 0


@SESSION_LOOP
async def test_compressed_bodies_are_inflated_and_broken_ones_are_400(front: Harness) -> None:
    port = front.server.http_port
    raw = json.dumps({"query": ["q a", "q b"], "prompts": ["q", "q"]}).encode()
    gz = gzipped(raw)
    deflated = zlib.compress(raw)
    raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    raw_deflated = raw_deflate.compress(raw) + raw_deflate.flush()
    cases: list[tuple[str, bytes, int, str]] = [
        ("gzip", gz, 200, "rewards"),
        ("x-gzip", gz, 200, "rewards"),
        ("deflate", deflated, 200, "rewards"),
        ("deflate", raw_deflated, 200, "rewards"),
        ("gzip", gz[:10] + b"\xff" * 8 + gz[18:], 400, "request body: corrupt gzip"),
        ("gzip", gz[:-8], 400, "request body: gzip data ends before its end"),
        ("gzip", gz + b"junk", 400, "request body: data after the end"),
        ("br", gz, 415, "Content-Encoding: 'br' is not supported"),
    ]
    for encoding, body, status, text in cases:
        head = post_head("/get_reward", len(body), f"Content-Encoding: {encoding}")
        got, reply = await exchange(port, head, body)
        assert (got, text in reply.decode()) == (status, True), (encoding, got, reply)
    assert front.metric(GAUGE) == 0


@SESSION_LOOP
async def test_lone_surrogates_are_400_naming_the_field(front: Harness) -> None:
    port = front.server.http_port
    cases = [
        ("/get_reward", '{"query": ["q a", "q \\ud800"], "prompts": ["q", "q"]}', "query[1]"),
        ("/get_reward", '{"query": ["q a"], "prompts": ["\\udfff"]}', "prompts[0]"),
        ("/slime/reward", '{"prompt": "q", "response": "a \\ud800"}', "response"),
        ("/slime/reward",
         '{"prompt": [{"role": "user", "content": "\\ud800"}], "response": "a"}',
         "prompt[0].content"),
        ("/classify", '{"model": "m", "input": "x\\udc00"}', "input"),
        ("/classify", '{"messages": [{"role": "user", "content": "q"}, '
         '{"role": "assistant", "content": "\\ud83d"}]}', "messages[1].content"),
    ]  # fmt: skip
    for path, text, field in cases:
        body = text.encode()
        status, reply = await exchange(port, post_head(path, len(body)), body)
        message = json.loads(reply)["error"]["message"]
        assert status == 400, (path, status, reply)
        assert message.startswith(f"{field}: not valid Unicode text"), (path, message)


MALFORMED = [
    ("bad Content-Length", b"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n"),
    ("100 KB URL", b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("1,000 headers",
     b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(1000)) + b"\r\n"),
    ("bad chunk size", b"POST /get_reward HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
     b"\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"),
    ("unsupported encoding", post_head("/get_reward", 2, "Content-Encoding: zstd") + b"{}"),
    ("two encodings", post_head("/get_reward", 2, "Content-Encoding: gzip, br") + b"{}"),
    ("not HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40),
]  # fmt: skip


@SESSION_LOOP
async def test_malformed_requests_are_4xx_without_a_traceback(
    front: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name, raw in MALFORMED:
        status, _ = await exchange(front.server.http_port, raw)
        assert 400 <= status < 500 or status == 0, (name, status)
    for record in caplog.records:
        if record.levelno < logging.INFO:
            continue  # aiohttp logs non-HTTP bytes at DEBUG with their traceback, as it chooses
        assert record.exc_info is None, (record.name, record.getMessage())
        assert record.levelno < logging.ERROR, (record.name, record.getMessage())
    warnings = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert 1 <= len(warnings) <= 2, [r.getMessage() for r in warnings]  # one line per 10 s
    assert await front.health_status() == 1  # SERVING


@pytest.fixture
def process(tiny_artifact: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_server(
        tiny_artifact,
        tmp_path / "server.log",
        "--http-port",
        "0",
        "--max-message-bytes",
        str(4 * MIB),
    )
    try:
        server.wait_serving()
        yield server
    finally:
        server.terminate()


def test_gzip_bombs_are_413_without_the_memory(process: ServerProcess, tmp_path: Path) -> None:
    bomb = gzip_of_zeros(1024 * MIB)  # ~1 MB that inflates to 1 GiB
    url = f"http://127.0.0.1:{process.http_port}/get_reward"
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    ok = requests.post(url, json={"query": ["q a"], "prompts": ["q"]}, timeout=BOUND_S)
    assert ok.status_code == 200, ok.text
    idle = vm_hwm(process.process.pid)
    start = threading.Barrier(5)

    def send(_: int) -> tuple[int, Any]:
        start.wait(BOUND_S)
        reply = requests.post(url, data=bomb, headers=headers, timeout=BOUND_S)
        return reply.status_code, reply.json()

    with ThreadPoolExecutor(5) as pool:
        replies = list(pool.map(send, range(5)))
    peak = vm_hwm(process.process.pid)
    for status, body in replies:
        assert status == 413, body
        assert "inflates to over max_message_bytes" in body["error"]["message"]
    assert peak <= idle + 100 * MIB, (idle // MIB, peak // MIB)
    ok = requests.post(url, json={"query": ["q a"], "prompts": ["q"]}, timeout=BOUND_S)
    assert ok.status_code == 200, ok.text
    assert "Traceback" not in (tmp_path / "server.log").read_text()
