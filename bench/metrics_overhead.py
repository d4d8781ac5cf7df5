"""Issue 19's speed goals: what metrics cost an execute, and what a scrape costs.

    .venv/bin/python bench/metrics_overhead.py [--runs 300] [--rounds 5] [--scrapes 15]
                                               [--only execute|scrape]

1. HTTP execute p50 with metrics against without, in one run: one throwaway sshd; three
   embedded daphne workers set up alike, `HOMELAB_METRICS=0`, metrics on (this process's
   registry) and metrics on in multiprocess mode (PROMETHEUS_MULTIPROC_DIR); POST
   .../execute of `true` over keep-alive, interleaved in rounds so noise hits all alike.
   Goal: <= 2% slower.
2. A scrape at 100 servers x 20 action types: every (server, action type) pair has run,
   succeeded and failed, so each has its duration histogram. In one process
   (metrics.render() in a child process filled that way), and over HTTP from a worker in
   multiprocess mode whose directory two filled workers left. Goal: <= 20 ms. Also as the
   pairs grow (50 to 2,000), to show where the goal holds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import CPUS, Bench, Client, header, interleaved, row, summary  # noqa: E402

FILL = """
import json, sys, time, statistics
import django
django.setup()
from commands.observability import metrics
servers, actions, scrapes = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
checkpoints = {int(n) for n in sys.argv[4].split(",") if n} | {servers * actions}
done = 0
for s in range(servers):
    metrics.SSH_CONNECTIONS.labels(f"server-{s:03d}").set(1)
    for a in range(actions):
        server, action = f"server-{s:03d}", f"action_{a:02d}"
        for status, seconds in (("succeeded", 0.3), ("failed", 2.0)):
            metrics.EXECUTIONS.labels(server, action, status).inc()
            metrics.DURATION.labels(server, action).observe(seconds)
        done += 1
        if done in checkpoints:
            times = []
            for _ in range(scrapes):
                started = time.perf_counter()
                body, _ = metrics.render()
                times.append((time.perf_counter() - started) * 1000)
            print(json.dumps([done, statistics.median(times), len(body), body.count(b"\\n")]))
"""
SWEEP = "50,100,200,500,1000"

# What the metric receivers cost one execution, without HTTP's noise: started + finished.
RECEIVERS = """
import sys, time
import django
django.setup()
from commands.models import Execution
from commands.observability import receivers
row = Execution(pk=1, server_name="box0", action_type="t_true", status="succeeded",
                exit_code=0, duration_ms=4)
runs = int(sys.argv[1])
started = time.perf_counter()
for _ in range(runs):
    receivers.execution_started(Execution, execution=row)
    receivers.execution_finished(Execution, execution=row)
print((time.perf_counter() - started) / runs * 1e6)
"""


def receivers_us(env: dict, runs: int = 20000) -> float:
    """Microseconds the metric receivers take per execution, in a child process."""
    out = subprocess.run(
        [sys.executable, "-c", RECEIVERS, str(runs)],
        cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "homelab.settings"},
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout  # fmt: skip
    return float(out.split()[-1])


def fill(env: dict, servers: int, actions: int, scrapes: int, sweep: str = "") -> list[list]:
    """[pairs, median render ms, bytes, lines] at each checkpoint, from a child process
    that fills the series (pairs that ran, each succeeded and failed) server by server."""
    out = subprocess.run(
        [sys.executable, "-c", FILL, str(servers), str(actions), str(scrapes), sweep],
        cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "homelab.settings"},
        check=True, capture_output=True, text=True, timeout=900,
    ).stdout  # fmt: skip
    return [json.loads(line) for line in out.splitlines() if line.startswith("[")]


def http_scrape(port: int, key: str, scrapes: int) -> tuple[float, int]:
    """(median ms, bytes) of GET /metrics over one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times, size = [], 0
    for _ in range(scrapes + 1):
        started = time.perf_counter()
        conn.request("GET", "/metrics", headers={"Authorization": f"Api-Key {key}"})
        response = conn.getresponse()
        body = response.read()
        times.append((time.perf_counter() - started) * 1000)
        assert response.status == 200, body[:200]
        size = len(body)
    conn.close()
    return statistics.median(times[1:]), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scrapes", type=int, default=15)
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--actions", type=int, default=20)
    parser.add_argument("--only", choices=("execute", "scrape"))
    args = parser.parse_args()
    in_process = one_file = []
    samples: dict[str, list[float]] = {}
    costs: dict[str, float] = {}
    http_ms = http_bytes = 0.0

    bench = Bench("metrics")
    try:
        daemon = bench.sshd()
        variants, ports = {}, {}
        multiproc = bench.work / "multiproc"
        for name, settings in (
            ("metrics off", {"HOMELAB_METRICS": "0"}),
            ("metrics on", {}),
            ("metrics on, multiprocess", {"PROMETHEUS_MULTIPROC_DIR": str(multiproc)}),
        ):
            if args.only == "scrape" and name != "metrics on":
                continue  # the scrape needs one set-up, for its key and environment
            env = bench.embedded_env(name.replace(" ", "_").replace(",", ""), **settings)
            if "PROMETHEUS_MULTIPROC_DIR" not in settings:
                env.pop("PROMETHEUS_MULTIPROC_DIR", None)
            key = bench.set_up(env, [daemon])
            port, _ = bench.workers(env, 1)
            client = Client(port, key)
            variants[name] = (lambda c=client: c.execute("box0", "true", "t_true"), args.runs)
            ports[name] = (port, key, env)
        if args.only != "scrape":
            samples = interleaved(variants, args.rounds)
            plain = ports["metrics on"][2]
            costs["metrics on"] = receivers_us(plain)
            costs["metrics on, multiprocess"] = receivers_us(
                {**plain, "PROMETHEUS_MULTIPROC_DIR": str(bench.work / "receivers")}
            )
        if args.only == "execute":
            return report(args, samples, costs, in_process, one_file, http_ms, http_bytes)

        # The scrape: in one process as the pairs grow, in multiprocess mode (one
        # worker's file), and two workers' files read by a third over HTTP.
        plain_env = ports["metrics on"][2]
        in_process = fill(plain_env, args.servers, args.actions, args.scrapes, SWEEP)
        one_file = fill(
            {**plain_env, "PROMETHEUS_MULTIPROC_DIR": str(bench.work / "one")},
            args.servers, args.actions, args.scrapes, SWEEP,
        )  # fmt: skip
        scrape_dir = bench.work / "scrape"
        scrape_env = {**plain_env, "PROMETHEUS_MULTIPROC_DIR": str(scrape_dir)}
        for _ in range(2):  # two workers that ran everything, then stopped
            fill(scrape_env, args.servers, args.actions, 1)
        port, _ = bench.workers(scrape_env, 1)
        http_ms, http_bytes = http_scrape(port, ports["metrics on"][1], args.scrapes)
    finally:
        bench.close()
    report(args, samples, costs, in_process, one_file, http_ms, http_bytes)


def report(args, samples, costs, in_process, one_file, http_ms, http_bytes) -> None:
    print(header(f"Issue 19: metrics, embedded profile, {CPUS} CPUs, `true` on one sshd"))
    for name, values in samples.items():
        p50, p95 = summary(values)
        print(row(f"HTTP execute p50, {name} (n={len(values)})", f"{p50:.2f} ms"))
        print(row(f"HTTP execute p95, {name}", f"{p95:.2f} ms"))
    for name in ("metrics on", "metrics on, multiprocess") if samples else ():
        ratio = summary(samples[name])[0] / summary(samples["metrics off"])[0]
        print(row(f"p50 {name} / metrics off", f"{ratio:.3f}x", "<= 1.02x", ratio <= 1.02))
        share = costs[name] / 1000 / summary(samples["metrics off"])[0]
        print(row(f"  receivers per execution, {name}", f"{costs[name]:.1f} us"))
        print(row("  as a share of the p50 execute", f"{share:.2%}", "<= 2%", share <= 0.02))
    pairs = f"{args.servers} servers x {args.actions} action types"
    for label, results in (("one process", in_process), ("multiprocess, 1 file", one_file)):
        for count, ms, size, lines in results:
            name = f"scrape, {label}, {count} (server, action) pairs"
            print(row(name, f"{ms:.1f} ms", "<= 20 ms", ms <= 20))
            print(row(f"  its size ({lines} lines)", f"{size / 1024:.0f} KiB"))
    if http_bytes:
        print(
            row(f"scrape over HTTP, 2 workers' files, {pairs}", f"{http_ms:.1f} ms",
                "<= 20 ms", http_ms <= 20)
        )  # fmt: skip
        print(row("  its size", f"{http_bytes / 1024:.0f} KiB"))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
