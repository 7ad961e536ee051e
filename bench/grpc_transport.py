"""What gRPC itself costs per unary call in Python, by server kind, in one run.

A raw-bytes echo method (no rmserve code) served by ``grpc.aio`` on asyncio's default loop (what
rmserve runs), ``grpc.aio`` on uvloop (if installed) and the thread-pool ``grpc.server``; a
client process with 64 concurrent callers. The handler answers after ``--delay-ms`` (a timer on
the loop, a sleep on a pool thread) so the call rate is near a reward server's, not the
transport's maximum. Reports the server process's CPU per call and the ratio to ``aio``:
the floor under rmserve's per-``Score`` CPU on the event loop.

    .venv/bin/python bench/grpc_transport.py --out bench/results/grpc-transport-cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import multiprocessing
import os
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from bench_record import add_record_arguments, finish_record, start_record

SERVICE, METHOD = "bench.Echo", "Call"
CALLERS = 64
REQUEST = b"x" * 300  # about a short Score request


def _same(raw: bytes) -> bytes:
    return raw


def _serve(kind: str, bound: Any, delay_s: float) -> None:
    """Serve on any free 127.0.0.1 port (port 0, so nothing can take it first); its number
    goes to the ``bound`` queue."""
    if kind == "sync":

        def blocking(request: bytes, _context: Any) -> bytes:
            time.sleep(delay_s)
            return request

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=CALLERS))
        handler = grpc.unary_unary_rpc_method_handler(
            blocking, request_deserializer=_same, response_serializer=_same
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),)
        )
        bound.put(server.add_insecure_port("127.0.0.1:0"))
        server.start()
        server.wait_for_termination()
        return
    if kind == "uvloop":
        import uvloop

        uvloop.install()

    async def main() -> None:
        async def answer(request: bytes, _context: Any) -> bytes:
            loop = asyncio.get_running_loop()
            done: asyncio.Future[bytes] = loop.create_future()
            loop.call_later(delay_s, done.set_result, request)
            return await done

        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(
            answer, request_deserializer=_same, response_serializer=_same
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        bound.put(port)
        await server.wait_for_termination()

    asyncio.run(main())


def _client(port: int, seconds: float, out: Any, go: Any) -> None:
    async def main() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(
                f"/{SERVICE}/{METHOD}", request_serializer=_same, response_deserializer=_same
            )
            for _ in range(3 * CALLERS):  # connect (the server may still be starting), warm up
                await call(REQUEST, timeout=60, wait_for_ready=True)
            out.put("warm")
            await asyncio.get_running_loop().run_in_executor(None, go.wait)
            calls = 0
            end = time.perf_counter() + seconds

            async def caller() -> None:
                nonlocal calls
                while time.perf_counter() < end:
                    await call(REQUEST, timeout=60)
                    calls += 1

            await asyncio.gather(*(caller() for _ in range(CALLERS)))
            out.put(calls)

    asyncio.run(main())


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(kind: str, seconds: float, delay_s: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    bound, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(kind, bound, delay_s), daemon=True)
    server.start()
    try:
        port = int(bound.get(timeout=120))
        client = ctx.Process(target=_client, args=(port, seconds, out, go))
        client.start()
        if out.get(timeout=120) != "warm":
            raise RuntimeError("the client did not warm up")
        assert server.pid is not None
        before, started = process_cpu_s(server.pid), time.perf_counter()
        go.set()
        calls = int(out.get(timeout=120 + seconds))
        wall, cpu = time.perf_counter() - started, process_cpu_s(server.pid) - before
        client.join(timeout=60)
    finally:
        server.kill()
        server.join()
    return {
        "kind": kind,
        "calls": calls,
        "calls_per_s": calls / wall,
        "server_cpu_ms": 1e3 * cpu / calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, default=100.0, help="handler answers after")
    parser.add_argument("--rounds", type=int, default=2, help="runs per kind, interleaved")
    add_record_arguments(parser, duration=8.0)
    args = parser.parse_args()
    record = start_record(args)
    kinds = ["aio", "sync"] + (["uvloop"] if importlib.util.find_spec("uvloop") else [])
    runs = [
        measure(kind, args.duration, args.delay_ms / 1e3)
        for _ in range(args.rounds)
        for kind in kinds
    ]
    per_kind = {
        kind: sorted(r["server_cpu_ms"] for r in runs if r["kind"] == kind) for kind in kinds
    }
    median = {kind: values[len(values) // 2] for kind, values in per_kind.items()}
    ratios = {f"{kind} / aio": median[kind] / median["aio"] for kind in kinds if kind != "aio"}
    finish_record(record, args, {"delay_ms": args.delay_ms, "runs": runs, "ratios": ratios})
    for r in runs:
        print(
            f"{r['kind']:7} {r['calls_per_s']:7.0f} calls/s  {r['server_cpu_ms']:.3f} ms CPU/call"
        )
    print("  " + "  ".join(f"{k} = {v:.2f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
