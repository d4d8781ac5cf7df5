"""Executes per second with the quota raised, 1 and 4 workers (issue 12, goal 4).

    .venv/bin/python bench/throughput.py [--clients 16] [--seconds 10] [--servers daphne,uvicorn]
        [--baseline TREE_OR_COMMIT] [--rounds 3]

One throwaway OpenSSH sshd on 127.0.0.1; HOMELAB_EXECUTE_RATE raised out of the way. For
each setting below, --clients threads (each with its own keep-alive HTTP connection) run
`true` back to back for --seconds through the API; every answer must be 200, exit 0.

  embedded, 1 worker     one daphne, SQLite
  scale-out, 1 worker    one daphne, PostgreSQL (a throwaway database), Redis db 14
  scale-out, 4 workers   four daphne processes sharing one port, same database and Redis
                         (and the same with HOMELAB_DB_POOL_SIZE=8, the opt-in pool)

Reported: executes/s, executes/s per CPU of the machine (the load generator and sshd
share the same CPUs), and executes per CPU-second the workers themselves used
(utime + stime from /proc), with sshd's and PostgreSQL's + Redis's CPU for scale
(everything on this machine named postgres or redis-server is counted).

With --baseline (issue 20, goal 3; `make bench` passes 025b19b, the code before that
issue's work), the embedded and pooled settings of that tree run under daphne in the
same rounds, and the goal is our executes/s over its executes/s (>= 1.5x).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    CLK_TCK,
    CPUS,
    ROOT,
    Bench,
    Client,
    baseline_tree,
    cpu_seconds,
    header,
    row,
)
from tests.sshd import SSHDaemon

EMBEDDED = "embedded, 1 worker (SQLite)"
POOLED = "scale-out, {} workers, DB pool of 8 (opt-in)"


def sshd_cpu(daemon: SSHDaemon) -> float:
    """CPU seconds of the daemon's session processes, with their reaped children (the
    commands and their shells)."""
    total = 0
    for pid in daemon.session_pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15])
    return total / CLK_TCK


def service_cpu(command: str) -> float:
    """CPU seconds of every process named `command` (postgres, redis-server), with their
    reaped children: PostgreSQL forks a backend per connection, its time lands here."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        if name == command:
            total += sum(int(value) for value in text.rpartition(")")[2].split()[11:15])
    return total / CLK_TCK


def hammer(port: int, key: str, clients: int, seconds: float) -> tuple[int, float, int]:
    """(answers 200/exit 0, elapsed seconds, failures) of clients running `true` in a loop."""
    stop_at = time.monotonic() + seconds
    done, failed = [0] * clients, [0] * clients

    def work(n: int) -> None:
        client = Client(port, key)
        while time.monotonic() < stop_at:
            try:
                client.execute("box0", "true", "t_true")
                done[n] += 1
            except Exception:
                failed[n] += 1
        client.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done), time.monotonic() - started, sum(failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--servers", default="daphne", help="daphne and/or uvicorn")
    parser.add_argument(
        "--baseline",
        metavar="TREE_OR_COMMIT",
        help="another checkout of the project, or a commit of this one (unpacked with `git "
        "archive`): its embedded and pooled scale-out settings run under daphne beside ours, "
        "and the issue-20 goal is their ratio",
    )
    parser.add_argument("--rounds", type=int, default=1, help="each setting this many times, "
                        "interleaved; the median round is reported")  # fmt: skip
    args = parser.parse_args()

    bench = Bench("throughput")
    results: dict[str, list[tuple]] = {}
    try:
        daemon = bench.sshd()
        trees = {"": ROOT}
        if args.baseline:
            trees["baseline"] = baseline_tree(args.baseline, bench.work)
        envs, keys = {}, {}
        for tree, cwd in trees.items():
            envs[tree, "embedded"] = bench.embedded_env(f"embedded{tree}")
            envs[tree, "scale-out"] = bench.scale_out_env()
            for profile in ("embedded", "scale-out"):
                keys[tree, profile] = bench.set_up(envs[tree, profile], [daemon], cwd=cwd)
        pooled = POOLED.format(args.workers)
        settings = [
            (EMBEDDED, "embedded", {}, 1),
            ("scale-out, 1 worker (PostgreSQL, Redis)", "scale-out", {}, 1),
            (f"scale-out, {args.workers} workers", "scale-out", {}, args.workers),
            (pooled, "scale-out", {"HOMELAB_DB_POOL_SIZE": "8"}, args.workers),
        ]
        compared = (EMBEDDED, pooled)  # the settings the baseline runs too (goal 3)
        servers = args.servers.split(",")
        runs = [
            (f"{name}, {server}" if len(servers) > 1 else name, "", profile, extra, count, server)
            for name, profile, extra, count in settings
            for server in servers
        ]
        if args.baseline:
            runs += [
                (f"{name}, baseline", "baseline", profile, extra, count, "daphne")
                for name, profile, extra, count in settings
                if name in compared
            ]
        for _ in range(args.rounds):
            for name, tree, profile, extra, count, server in runs:
                env = {**envs[tree, profile], **extra}
                port, pids = bench.workers(env, count, server=server, cwd=trees[tree])
                key = keys[tree, profile]
                hammer(port, key, args.clients, 1.0)  # warm every worker's pool
                cpu_before, sshd_before = cpu_seconds(pids), sshd_cpu(daemon)
                services_before = service_cpu("postgres") + service_cpu("redis-server")
                done, elapsed, failed = hammer(port, key, args.clients, args.seconds)
                cpu = cpu_seconds(pids) - cpu_before
                services = service_cpu("postgres") + service_cpu("redis-server") - services_before
                sshd = sshd_cpu(daemon) - sshd_before
                results.setdefault(name, []).append((done, elapsed, failed, cpu, sshd, services))
                bench.stop_workers(pids)
    finally:
        bench.close()

    rounds_note = f", median of {args.rounds} interleaved rounds" if args.rounds > 1 else ""
    print(header(f"Issue 12, goal 4: throughput of `true`, {args.clients} keep-alive clients "
                 f"x {args.seconds:g} s each, quota raised, {CPUS} CPUs{rounds_note}"))  # fmt: skip
    rates = {}
    for name, rounds in results.items():
        done, elapsed, failed, cpu, sshd, services = sorted(rounds, key=lambda r: r[0] / r[1])[
            len(rounds) // 2
        ]
        rate = rates[name] = done / elapsed
        failed = sum(r[2] for r in rounds)
        print(row(f"{name}: executes/s", f"{rate:.0f}"))
        print(row("  executes/s per CPU of the machine", f"{rate / CPUS:.0f}"))
        print(row("  executes per CPU-second of the workers", f"{done / cpu:.0f}"))
        use = f"{cpu / elapsed:.2f}/{sshd / elapsed:.2f}/{services / elapsed:.2f}"
        print(row("  CPU use, cores: workers / sshd / PostgreSQL+Redis", use))
        print(row("  answers not 200 with exit 0", f"{failed}", "0", failed == 0))
    if args.baseline:
        print()
        print(header("Issue 20, goal 3: executes/s per CPU against the baseline tree, same run"))
        suffix = ", daphne" if len(servers) > 1 else ""
        for name in compared:
            ratio = rates[name + suffix] / rates[f"{name}, baseline"]
            print(row(f"{name.split(',')[0]}, daphne: ours / baseline", f"{ratio:.2f}x",
                      ">= 1.5x", ratio >= 1.5))  # fmt: skip


if __name__ == "__main__":
    main()
