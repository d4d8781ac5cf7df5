"""Peak memory of one command that prints 50 MB, through the executor and through Fabric.

    .venv/bin/python bench/executor_memory.py [--megabytes 50]

Starts a throwaway OpenSSH sshd on 127.0.0.1 (tests/sshd.py) and runs
`head -c <N>M /dev/zero | tr '\\0' x` three ways, measuring the peak of Python
allocations (tracemalloc) during the call:

  executor, `true`             the baseline: what one small command costs
  executor, N MB of output     capped buffers (10 KiB per stream, the default)
  Fabric Connection.run        stock invoke runner, which keeps all output in memory

and prints the peaks and their ratios to the baseline. Results go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.executor_latency import bench_daemon, fresh_fabric_connection  # noqa: E402
from commands import ssh  # noqa: E402


def peak_kib(fn: Callable[[], object]) -> tuple[float, float]:
    """(peak KiB of Python allocations during fn, seconds it took)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    started = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1024, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=int, default=50)
    args = parser.parse_args()
    big = f"head -c {args.megabytes}M /dev/zero | tr '\\0' x"

    daemon, key, target = bench_daemon()
    executor = ssh.SSHPooledExecutor()
    # The executor takes one argv-shaped command; the pipeline runs under `sh -c`.
    sh_big = ["sh", "-c", big]
    results: dict[str, tuple[float, float]] = {}
    try:
        executor.execute(target, ["true"], timeout=30)  # warm the pool outside the measurement
        results["executor, `true`"] = peak_kib(
            lambda: executor.execute(target, ["true"], timeout=30)
        )
        results[f"executor, {args.megabytes} MB of output"] = peak_kib(
            lambda: executor.execute(target, sh_big, timeout=120)
        )
        with fresh_fabric_connection(daemon, key) as conn:
            conn.run("true", hide=True, in_stream=False)
            results["Fabric Connection.run"] = peak_kib(
                lambda: conn.run(big, hide=True, in_stream=False)
            )
    finally:
        executor.close()
        daemon.stop()

    base = results["executor, `true`"][0]
    print(f"{args.megabytes} MB of output on OpenSSH sshd, 127.0.0.1; peak Python allocations")
    print(f"{'variant':32} {'peak KiB':>10} {'seconds':>8} {'x baseline':>11}")
    for name, (kib, seconds) in results.items():
        print(f"{name:32} {kib:10.0f} {seconds:8.2f} {kib / base:11.1f}")


if __name__ == "__main__":
    main()
