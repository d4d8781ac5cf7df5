"""50 concurrent `sleep 0.5` on one server through the real HTTP API (issue 12, goal 2).

    .venv/bin/python bench/concurrency.py [--clients 50] [--rounds 5] [--limits 4,7]
                                          [--servers daphne,uvicorn]

One throwaway OpenSSH sshd on 127.0.0.1 with sshd's default MaxSessions 10, the embedded
profile (one ASGI process, SQLite). For each HOMELAB_SSH_MAX_CONNECTIONS in --limits and
each server in --servers (daphne, uvicorn) a process of its own; rounds interleaved. In a
round, --clients threads, each with its own keep-alive connection, are released together
and each POSTs `sleep 0.5`; the wall time is from the release to the last answer. The first
round opens the SSH connections (cold); the goal is about the warm ones. Every answer must
be 200 with exit code 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import CPUS, Bench, Client, header, row

GOAL_SECONDS = 1.5


def one_round(port: int, key: str, clients: list[Client], seconds: str) -> tuple[float, int]:
    """(wall seconds from release to the last answer, answers that were not 200/exit 0)."""
    barrier = threading.Barrier(len(clients) + 1)
    failures = []

    def work(client: Client) -> None:
        barrier.wait()
        try:
            client.execute("box0", f"sleep {seconds}", "t_nap")
        except Exception as exc:  # counted, and shown once below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if failures:
        print(f"  {len(failures)} failed, e.g. {failures[0]}", file=sys.stderr)
    return wall, len(failures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5, help="warm rounds per limit")
    parser.add_argument("--limits", default="4,7", help="HOMELAB_SSH_MAX_CONNECTIONS values")
    parser.add_argument("--seconds", default="0.5")
    parser.add_argument("--servers", default="daphne,uvicorn", help="ASGI servers to compare")
    args = parser.parse_args()
    limits = [int(value) for value in args.limits.split(",")]
    servers = args.servers.split(",")

    bench = Bench("concurrency")
    results: dict[int, dict] = {}
    try:
        daemon = bench.sshd()  # MaxSessions 10, sshd's default
        setups = {}
        for limit in limits:
            for server in servers:
                env = bench.embedded_env(
                    f"limit{limit}-{server}", HOMELAB_SSH_MAX_CONNECTIONS=str(limit)
                )
                key = bench.set_up(env, [daemon])
                port, _ = bench.workers(env, 1, server=server)
                clients = [Client(port, key) for _ in range(args.clients)]
                setups[(limit, server)] = (port, key, clients)
                results[(limit, server)] = {"walls": [], "failed": 0}
        for round_number in range(args.rounds + 1):
            for limit, (port, key, clients) in setups.items():
                before = daemon.accepted_connections()
                wall, failed = one_round(port, key, clients, args.seconds)
                if round_number == 0:
                    results[limit]["cold"] = wall
                    results[limit]["opened"] = daemon.accepted_connections() - before
                else:
                    results[limit]["walls"].append(wall)
                results[limit]["failed"] += failed
        for _, _, clients in setups.values():
            for client in clients:
                client.close()
    finally:
        bench.close()

    print(
        header(
            f"Issue 12, goal 2: {args.clients} x `sleep {args.seconds}` at once on one sshd "
            f"(MaxSessions 10), embedded profile, {CPUS} CPUs; {args.rounds} warm rounds"
        )
    )
    for (limit, server), result in results.items():
        walls = result["walls"]
        name = f"{server}, HOMELAB_SSH_MAX_CONNECTIONS={limit}"
        median = statistics.median(walls)
        print(row(f"{name}: warm wall, median s", f"{median:.2f}", f"<= {GOAL_SECONDS}",
                  median <= GOAL_SECONDS and not result["failed"]))  # fmt: skip
        print(row("  warm wall, worst round s", f"{max(walls):.2f}", f"<= {GOAL_SECONDS}",
                  max(walls) <= GOAL_SECONDS))  # fmt: skip
        print(row("  cold first round (opens the connections) s", f"{result['cold']:.2f}"))
        print(row("  SSH connections opened", f"{result['opened']}", f"<= {limit}",
                  result["opened"] <= limit))  # fmt: skip
        total = args.clients * (args.rounds + 1)
        print(row("  answers 200 with exit 0", f"{total - result['failed']}/{total}",
                  "all", not result["failed"]))  # fmt: skip


if __name__ == "__main__":
    main()
