"""What a worker holds per live execution, whatever the command prints (issue 21, item 6).

    .venv/bin/python bench/stream_memory.py [--commands 8] [--megabytes 100] [--runs 3]

The issue's case: --commands commands at once, each printing --megabytes MB of random
bytes (head -c N /dev/urandom: mostly not UTF-8, so U+FFFD and escapes), then the same
with as many bytes of "a" (plain text), the baseline, in the same run; each with no
client following them, and with one WebSocket client following each (reading as fast as
it can, then leaving). Each variant gets a fresh daphne (embedded profile as `make run` serves it:
SQLite, the in-process frame log, the default HOMELAB_STREAM_LIMIT of 1 MiB and
HOMELAB_OUTPUT_LIMIT), so its VmRSS starts clean; the two alternate over --runs rounds.
Measured: RSS before, at the peak, and once every command has ended (the logs are then
kept for HOMELAB_STREAM_RETENTION_SECONDS). Prints medians, MB per execution, and the
ratio random / "a".

Then, in this process and independent of the machine, what one execution's frame log
holds after 100 MB of each (tracemalloc over commands/engine/output.LiveOutput).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import threading  # noqa: E402

from bench.stream import RssSampler, Stack, follow, messages, rss_mb, sh  # noqa: E402
from tests.live import call, start  # noqa: E402

MB = 1_000_000
OUTPUTS = {
    "random": lambda size: sh(f"head -c {size} /dev/urandom"),
    "a": lambda size: sh(f"head -c {size} /dev/zero | tr '\\0' a"),
}


def run_variant(
    stack: Stack, name: str, commands: int, size: int, followed: bool
) -> dict[str, float]:
    """One fresh daphne, `commands` executions of OUTPUTS[name] at once (each followed by a
    WebSocket client when followed): RSS in MB."""
    with stack.serve(f"{name}-{time.monotonic_ns()}") as server:
        warm = start(server, stack.key, stack.server_id, "echo hi", "b_hi")
        wait_ended(server, stack, [warm])
        time.sleep(0.5)
        before = rss_mb(server.process.pid)
        sampler = RssSampler(server.process.pid)
        sampler.start()
        try:
            ids = [
                start(server, stack.key, stack.server_id, OUTPUTS[name](size), f"b_{name}")
                for _ in range(commands)
            ]
            readers = [
                threading.Thread(target=read_stream, args=(server, stack, i), daemon=True)
                for i in (ids if followed else [])
            ]
            for reader in readers:
                reader.start()
            wait_ended(server, stack, ids)
            for reader in readers:
                reader.join(timeout=600)
            time.sleep(0.5)
            after = rss_mb(server.process.pid)
        finally:
            sampler.done.set()
            sampler.join()
    return {"before": before, "peak": sampler.peak, "after": after}


def read_stream(server, stack: Stack, execution_id: int) -> None:
    with follow(server, stack.key, execution_id) as ws:
        for message in messages(ws):
            if message.startswith('{"type":"result"'):
                return


def wait_ended(server, stack: Stack, ids: list[int]) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        statuses = [
            call("GET", f"{server.base}/api/v1/executions/{i}/", stack.key)[2]["status"]
            for i in ids
        ]
        if "running" not in statuses:
            if set(statuses) != {"succeeded"}:
                raise RuntimeError(f"executions ended {statuses}")
            return
        time.sleep(0.2)
    raise RuntimeError("the executions did not end within 600 s")


def log_held_mb(name: str, size: int) -> tuple[float, int]:
    """(MB the frame log holds, frames in it) for one execution printing `size` bytes."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "homelab.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-" + "x" * 40)
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from commands.engine import framelog
    from commands.engine.output import LiveOutput

    backend = framelog.backend()
    log_id = 900_000 + len(name)
    chunk = 32 * 1024  # what paramiko hands over at a time, about
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    backend.start(framelog.execution_log(log_id), ttl=60)
    output = LiveOutput(log_id, stream_limit=1024 * 1024, output_limit=10240)
    for _ in range(size // chunk):
        output("stdout", os.urandom(chunk) if name == "random" else b"a" * chunk)
    output.flush()
    del output
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    frames = backend.read(framelog.execution_log(log_id), 0) or []
    return held / MB, len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=8, help="commands at once")
    parser.add_argument("--megabytes", type=int, default=100, help="output per command, MB")
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians)")
    args = parser.parse_args()
    size = args.megabytes * MB
    rules = {"b_hi": "echo hi", **{f"b_{name}": make(size) for name, make in OUTPUTS.items()}}

    stack = Stack()
    variants = [(name, followed) for followed in (False, True) for name in OUTPUTS]
    results: dict[tuple[str, bool], list[dict[str, float]]] = {v: [] for v in variants}
    try:
        stack.set_up(rules)
        for _ in range(args.runs):
            for name, followed in variants:  # alternating: the machine's load falls alike
                results[name, followed].append(
                    run_variant(stack, name, args.commands, size, followed)
                )
    finally:
        stack.stop()
    held = {name: log_held_mb(name, 100 * MB) for name in OUTPUTS}
    report(args, results, held)


def report(args, results: dict[tuple[str, bool], list[dict[str, float]]], held: dict) -> None:
    median = statistics.median
    print(
        f"Stream memory: {args.commands} commands at once x {args.megabytes} MB each; daphne, "
        f"embedded profile, {os.cpu_count()} CPUs; medians of {args.runs}"
    )
    print(f"{'output':24} {'RSS before':>11} {'peak':>7} {'after':>7} {'growth':>8} "
          f"{'per execution':>14}")  # fmt: skip
    growth = {}
    for (name, followed), runs in results.items():
        before, peak, after = (median(run[k] for run in runs) for k in ("before", "peak", "after"))
        growth[name, followed] = median(run["after"] - run["before"] for run in runs)
        label = f"{name}, {'one follower each' if followed else 'no follower'}"
        print(
            f"{label:24} {before:10.0f}M {peak:6.0f}M {after:6.0f}M "
            f"{growth[name, followed]:7.1f}M {growth[name, followed] / args.commands:13.1f}M"
        )
    for followed in (False, True):
        base = growth["a", followed]
        ratio = growth["random", followed] / base if base > 0 else float("nan")
        print(f"growth, random / a, {'followed' if followed else 'unfollowed'}: {ratio:.2f}x")
    for name, (mb, frames) in held.items():
        print(f"one execution's frame log after 100 MB of {name}: {mb:.2f} MB in {frames} frames")


if __name__ == "__main__":
    main()
