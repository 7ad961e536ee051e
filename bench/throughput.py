"""Server throughput against bare onnxruntime, in one run, on three length mixes.

For each mix (prompt+response tokens uniform in short 16..64, mixed 16..256, long 256..512):

  1. raw onnxruntime session on pre-tokenised pairs, all sorted by length, at its best batch
     size (the median of three timings at that size: two before the server runs, one after)
  2. the server with 64 concurrent single-pair Score callers
  3. the server with ScoreBatch requests of 256 pairs (two callers)

with the server's default policy, ``caps`` (``--max-batch-tokens 1024 --max-padding-ratio
1.05``; the ``measured`` cost-model policy this script also ran until it was removed is in the
docs/guides/serving.md#batch-policy). ``--unbatched`` adds the server with batching off. Unless
``--no-replay``, the policy is also replayed on the bare session over the server's in-flight
window (``throughput_replay.py``, one batch at a time as with ``--engine-workers 1``):
``replay / raw`` is what the policy and the window cost.

For each server run, over the measured load only (counters read after the load generator's
warm-up): batches, mean rows, padding (padded / real tokens), the engine's busy fraction and
its real tokens per busy second, the server's CPU by thread group and the load generator's.
The load generator runs in its own process and shares the cores with the server. Every run
records ``other_cpu_cores``: what the rest of the machine used meanwhile (a figure taken while
it is not ~0 measured a shared machine). Use a MiniLM artifact with max_length >= 512
(``rmserve train --base-model minilm --max-length 512``): with the tiny test model the server's
overhead dominates and the ratios mean nothing.

    .venv/bin/python bench/throughput.py --artifact A --out bench/results/throughput-mixes.json
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import re
import statistics
import time
from pathlib import Path
from typing import Any

from bench_record import add_record_arguments, finish_record, start_record
from throughput_replay import replay

from rmserve import testing
from rmserve.engine.session import OrtEngine, load_artifact
from rmserve.server.model_build import core_config
from rmserve.server.settings import ServerSettings
from rmserve.testing import ServerProcess
from rmserve.text.preprocess import PreparedPair
from rmserve.tools.loadtest import LoadPair, run

MIXES = {"short": (16, 64), "mixed": (16, 256), "long": (256, 512)}
PAIRS = {"short": 1024, "mixed": 512, "long": 192}  # about the same tokens in each mix
BATCH_DEADLINE_S = 600.0  # a ScoreBatch of 256 long pairs takes tens of seconds on 2 cores
OLD_CAPS: dict[str, Any] = {"max_batch_tokens": 1024, "max_padding_ratio": 1.05}
POLICIES: dict[str, dict[str, Any]] = {"caps": {"batch_policy": "caps", **OLD_CAPS}}
RAW_BATCH_SIZES = (1, 4, 8, 16, 32)
REPLAY_MODES = {"score64": (1, 64), "batch256": (256, 2)}  # pairs per request, callers
_WORD_TEXT = (
    "the reward model scores each answer for helpful correct and polite replies while "
    "capital city river mountain number water light music garden paper window market "
    "teacher doctor simple bright quiet quickly often before after under over between"
)
WORDS = _WORD_TEXT.split()


def make_pairs(artifact: Path, count: int, seed: int, lo: int, hi: int) -> list[LoadPair]:
    """Pairs whose prompt+response token count (specials included) is uniform in lo..hi."""
    pre = load_artifact(artifact).preprocessor
    if pre.config.max_length < hi:
        raise SystemExit(f"the artifact's max_length {pre.config.max_length} is under {hi}")
    overhead = pre.prepare("", "").num_tokens
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        total = rng.randint(lo, hi) - overhead
        response_words = max(1, total // 3)
        prompt = " ".join(rng.choice(WORDS) for _ in range(total - response_words))
        response = " ".join(rng.choice(WORDS) for _ in range(response_words))
        pairs.append(LoadPair(prompt, response))
    return pairs


def server_flags(overrides: dict[str, Any]) -> list[str]:
    return [f for k, v in overrides.items() for f in (f"--{k.replace('_', '-')}", str(v))]


def timed_sorted(engine: OrtEngine, prepared: list[PreparedPair], batch_size: int) -> float:
    """Seconds to score all of ``prepared``, sorted by length, in batches of ``batch_size``."""
    ordered = sorted(prepared, key=lambda p: p.num_tokens)
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    engine.score(batches[0])
    start = time.perf_counter()
    for batch in batches:
        engine.score(batch)
    return time.perf_counter() - start


def raw_onnxruntime(
    engine: OrtEngine, prepared: list[PreparedPair], batch_sizes: tuple[int, ...]
) -> dict[str, Any]:
    """All pairs sorted by length, in batches of each size; the best size timed again. The
    caller times it a third time after the server runs (``raw_rate``: the median of the three,
    so neither one lucky run nor a burst of load elsewhere sets the baseline)."""
    other, cpu = OtherLoad(), time.process_time()
    by_size = {size: timed_sorted(engine, prepared, size) for size in batch_sizes}
    best = min(by_size, key=lambda size: by_size[size])
    return {
        "name": "raw onnxruntime",
        "best_batch_size": best,
        "seconds_by_batch_size": by_size,
        "seconds_at_best_batch": [by_size[best], timed_sorted(engine, prepared, best)],
        "other_cpu_cores": other.cores(time.process_time() - cpu),
    }


def raw_rate(raw: dict[str, Any], prepared: list[PreparedPair]) -> None:
    """Fill in ``raw``'s rates from the median of its timings at the best batch size."""
    seconds = statistics.median(raw["seconds_at_best_batch"])
    raw["pairs_per_s"] = len(prepared) / seconds
    raw["tokens_per_s"] = sum(p.num_tokens for p in prepared) / seconds


def replays(
    artifact: Path, engine: OrtEngine, prepared: list[PreparedPair], threads: int
) -> dict[str, dict[str, Any]]:
    """For each policy, ``throughput_replay.replay`` with the limits the server would use."""
    out = {}
    for policy, overrides in POLICIES.items():
        settings = ServerSettings(artifact=artifact, intra_op_threads=threads, **overrides)
        config = core_config(settings)
        limits = config.limits
        for mode, (request_pairs, in_flight) in REPLAY_MODES.items():
            other, cpu = OtherLoad(), time.process_time()
            got = replay(engine, prepared, request_pairs, in_flight, limits, policy)
            got["other_cpu_cores"] = other.cores(time.process_time() - cpu)
            out[f"{mode} {policy} replay"] = got
    return out


def start_server(artifact: Path, threads: int, extra: list[str]) -> ServerProcess:
    server = testing.start_server(artifact, None, "--intra-op-threads", str(threads), *extra)
    try:
        server.wait_serving()
    except AssertionError:
        server.kill()
        raise
    return server


def _load_process(
    target: str, pairs: list[LoadPair], kwargs: dict[str, Any], out: Any, go: Any
) -> None:
    """Warm the server up, say so, wait for ``go`` (the parent reads the server's counters
    meanwhile), then run the measured load."""
    warm = {k: v for k, v in kwargs.items() if k not in ("duration_s", "batch_size")}
    run(target, pairs[:64], duration_s=2.0, batch_size=16, **warm)
    out.put("warm")
    go.wait()
    out.put(run(target, pairs, **kwargs).summary())


def metric_samples(metrics_page: str) -> dict[str, float]:
    """Unlabelled ``rmserve_*`` samples of a /metrics page."""
    samples: dict[str, float] = {}
    for line in metrics_page.splitlines():
        m = re.match(r"(rmserve_\w+?) ([-+0-9.e]+|NaN)$", line)
        if m:
            samples[m.group(1)] = float(m.group(2))
    return samples


def batch_figures(
    before: dict[str, float], after: dict[str, float], seconds: float
) -> dict[str, Any]:
    """What the engine did during the measured load, from the server's counters before and
    after it: batches, their mean size and padding (padded / real tokens over all batches),
    the fraction of the wall time the engine was running, and its tokens per running second."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = delta("rmserve_batch_size_count") or float("nan")
    engine_s = delta("rmserve_inference_duration_seconds_sum") or float("nan")
    real = delta("rmserve_tokens_total") or float("nan")
    return {
        "batches": delta("rmserve_batch_size_count"),
        "mean_batch_size": delta("rmserve_batch_size_sum") / batches,
        "padding_ratio": delta("rmserve_batch_tokens_sum") / real,
        "mean_inference_s": engine_s / batches,
        "engine_busy_fraction": engine_s / seconds,
        "engine_tokens_per_busy_s": real / engine_s,
    }


def machine_busy_s() -> float:
    """CPU seconds all cores of the machine spent busy since boot (``/proc/stat``)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """CPU the rest of the machine used during a measurement, in cores: the machine's busy
    time minus what the measured processes used (``own_s``)."""

    def __init__(self) -> None:
        self.busy, self.wall = machine_busy_s(), time.perf_counter()

    def cores(self, own_s: float) -> float:
        return (machine_busy_s() - self.busy - own_s) / (time.perf_counter() - self.wall)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads by group: ``main`` (the event loop: gRPC handlers,
    small requests' tokenising, the batcher), ``grpc-core`` (gRPC's C threads: sockets,
    timers) and ``other`` (the engine thread, onnxruntime's workers, tokeniser workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    groups = {"main": 0.0, "grpc-core": 0.0, "other": 0.0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        seconds = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        group = "main" if int(tid) == pid else "grpc-core" if comm != "python" else "other"
        groups[group] += seconds
    return groups


def server_run(
    name: str, artifact: Path, pairs: list[LoadPair], threads: int, server_flags: list[str],
    load: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    server = start_server(artifact, threads, server_flags)
    port, pid = server.port, server.process.pid
    try:
        ctx = multiprocessing.get_context("spawn")
        queue, go = ctx.Queue(), ctx.Event()
        generator = ctx.Process(
            target=_load_process, args=(f"127.0.0.1:{port}", pairs, load, queue, go)
        )
        generator.start()
        if queue.get(timeout=900) != "warm":
            raise RuntimeError("the load generator did not warm up")
        counters, cpu, started = metric_samples(server.scrape()), thread_cpu(pid), time.time()
        other = OtherLoad()
        go.set()
        summary: dict[str, Any] = queue.get(timeout=900)
        seconds = time.time() - started
        page, cpu_after = server.scrape(), thread_cpu(pid)
        server_cpu_s = sum(cpu_after.values()) - sum(cpu.values())
        other_cores = other.cores(server_cpu_s + summary["client_cpu_s"])
        generator.join(timeout=60)
    finally:
        server.terminate()
    summary.update(batch_figures(counters, metric_samples(page), summary["duration_s"]))
    summary["server_cpu_share_by_thread"] = {
        group: (cpu_after[group] - cpu[group]) / seconds for group in cpu
    }
    summary["other_cpu_cores"] = other_cores
    summary["name"] = name
    summary["load_generator_cpu_share"] = summary["client_cpu_s"] / summary["duration_s"]
    return summary


def run_mix(mix: str, args: argparse.Namespace) -> dict[str, Any]:
    lo, hi = MIXES[mix]
    pairs = make_pairs(args.artifact, int(PAIRS[mix] * args.pairs_scale), args.seed, lo, hi)
    loaded = load_artifact(args.artifact)
    engine = OrtEngine(loaded, "cpu", args.threads)
    prepared = loaded.preprocessor.prepare_many(
        [p.prompt for p in pairs], [p.response for p in pairs]
    )
    raw = raw_onnxruntime(engine, prepared, RAW_BATCH_SIZES)
    raw_rate(raw, prepared)
    print(f"{mix}: raw {raw['tokens_per_s']:.0f} tokens/s", flush=True)
    runs: dict[str, dict[str, Any]] = {"raw": raw}
    if args.replay:
        runs.update(replays(args.artifact, engine, prepared, args.threads))
    del engine
    single = {"mode": "score", "concurrency": 64, "duration_s": args.duration}
    batched = {"mode": "score-batch", "batch_size": 256, "concurrency": 2}
    batched.update(duration_s=args.duration, deadline_s=BATCH_DEADLINE_S)
    for policy, overrides in POLICIES.items():
        flags = server_flags(overrides)
        runs[f"score64 {policy}"] = server_run(
            f"{mix}: server {policy}, 64 Score callers", args.artifact, pairs, args.threads,
            flags, single,
        )  # fmt: skip
        runs[f"batch256 {policy}"] = server_run(
            f"{mix}: server {policy}, ScoreBatch of 256", args.artifact, pairs, args.threads,
            flags, batched,
        )  # fmt: skip
        for key in (f"score64 {policy}", f"batch256 {policy}"):
            print(f"{mix}: {key} {runs[key]['tokens_per_s']:.0f} tokens/s", flush=True)
    if args.one_worker:  # the engine as before engine workers: one batch at a time
        for mode, load in (("score64", single), ("batch256", batched)):
            runs[f"{mode} caps 1 worker"] = server_run(
                f"{mix}: {mode} caps, 1 engine worker", args.artifact, pairs, args.threads,
                [*server_flags(POLICIES["caps"]), "--engine-workers", "1"], load,
            )  # fmt: skip
    if args.unbatched:
        runs["unbatched"] = server_run(
            f"{mix}: server, batching off", args.artifact, pairs, args.threads,
            ["--max-batch-size", "1"], single,
        )  # fmt: skip
    engine = OrtEngine(loaded, "cpu", args.threads)
    raw["seconds_at_best_batch"].append(timed_sorted(engine, prepared, raw["best_batch_size"]))
    del engine
    raw_rate(raw, prepared)
    print(f"{mix}: raw again, median {raw['tokens_per_s']:.0f} tokens/s", flush=True)
    base = raw["tokens_per_s"]
    ratios = {f"{key} / raw": r["tokens_per_s"] / base for key, r in runs.items() if key != "raw"}
    for mode in ("score64", "batch256"):
        for policy in POLICIES if args.replay else ():
            ratios[f"{mode} {policy} / replay"] = (
                runs[f"{mode} {policy}"]["tokens_per_s"]
                / runs[f"{mode} {policy} replay"]["tokens_per_s"]
            )
    return {"mix": mix, "tokens": [lo, hi], "pairs": len(pairs), "runs": runs, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=Path("demo/artifact"))
    parser.add_argument("--mixes", nargs="+", choices=list(MIXES), default=list(MIXES))
    add_record_arguments(parser, duration=15.0)
    parser.add_argument(
        "--pairs-scale", type=float, default=1.0, help="scale the pairs per mix (raw runs' length)"
    )
    parser.add_argument("--unbatched", action="store_true", help="also run batching off")
    parser.add_argument(
        "--one-worker", action="store_true", help="also run caps with --engine-workers 1"
    )
    parser.add_argument(
        "--no-replay", dest="replay", action="store_false",
        help="skip the bare engine fed by the server's policy over its in-flight window",
    )  # fmt: skip
    args = parser.parse_args()

    record = start_record(args)
    max_length = load_artifact(args.artifact).manifest.preprocessing.max_length
    results = []
    for mix in args.mixes:
        results.append(run_mix(mix, args))
        figures = {
            "artifact": str(args.artifact),
            "max_length": max_length,
            "policies": POLICIES,
            "mixes": results,
        }
        finish_record(record, args, figures)  # after every mix: a failure keeps what was measured
    head = f"{'run':44} {'tokens/s':>9} {'pairs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'batch':>6}"
    print(head + f" {'other cores':>11}")
    for result in results:
        for r in result["runs"].values():
            print(
                f"{r['name']:44} {r['tokens_per_s']:9.0f} {r['pairs_per_s']:8.1f} "
                f"{r.get('p50_ms', float('nan')):8.1f} {r.get('p99_ms', float('nan')):8.1f} "
                f"{r.get('mean_batch_size', r.get('best_batch_size', 0)):6.1f} "
                f"{r.get('other_cpu_cores', float('nan')):11.2f}"
            )
        print("  " + "  ".join(f"{k} = {v:.3f}" for k, v in result["ratios"].items()))


if __name__ == "__main__":
    main()
