"""50 servers at once: latency, memory and threads per connection, idle reaping (issue 12, goal 3).

    .venv/bin/python bench/many_servers.py [--servers 50] [--rounds 5] [--idle 10]

Starts --servers OpenSSH sshd daemons on 127.0.0.1 (tests/sshd.py; 50 "servers"), the
embedded profile (one daphne, SQLite) with a server row for each, host keys pinned, and
HOMELAB_SSH_IDLE_SECONDS=--idle. HOMELAB_SSH_MAX_CONNECTIONS is 7 for this run so that 50
commands fit on one server's connections too (7 x 8 sessions): both sides of the
comparison then run every command at once, none queued for a session.

  one server, 50 at once     50 threads (own keep-alive HTTP connections) run `true` on box0
  50 servers, 50 at once     the same 50 threads, thread i on box i
  one server, one at a time  sequential `true` on box0 (for scale)

interleaved in rounds; latency per command is from the common release to its answer. The
first 50-server round opens the 49 new connections; the worker's RSS and thread count
before and after it give the cost per warm connection (sshd's side: its session
processes' RSS). Then nothing is sent, and the worker's established connections to the
daemons are counted every 0.25 s until the reaper has closed them all.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    CPUS,
    Bench,
    Client,
    established_to,
    header,
    row,
    rss_and_threads,
    summary,
    timed,
)


def burst(clients: list[Client], servers: list[str]) -> list[float]:
    """Each client runs `true` on its server, all released together; ms per command."""
    barrier = threading.Barrier(len(clients) + 1)
    latencies: list[float] = []
    errors: list[Exception] = []

    def work(client: Client, server: str) -> None:
        barrier.wait()
        started = time.perf_counter()
        try:
            client.execute(server, "true", "t_true")
        except Exception as exc:
            errors.append(exc)
        latencies.append((time.perf_counter() - started) * 1000)

    pairs = zip(clients, servers, strict=True)
    threads = [threading.Thread(target=work, args=pair) for pair in pairs]
    for thread in threads:
        thread.start()
    barrier.wait()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(clients)} failed, e.g. {errors[0]}")
    return latencies


def session_pss_mb(bench: Bench) -> float:
    """Proportional set size (shared pages split among their users) of every daemon's
    session processes (one per connection), MB."""
    total = 0.0
    for daemon in bench.daemons:
        for pid in daemon.session_pids():
            try:
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            for line in rollup.splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) / 1024
    return total


def watch_reaping(pid: int, ports: set[int], idle: float, since: float) -> list[tuple]:
    """(seconds since last use, connections open) each 0.25 s until none are left."""
    seen = []
    deadline = since + idle * 3 + 10
    while time.monotonic() < deadline:
        count = established_to(pid, ports)
        seen.append((time.monotonic() - since, count))
        if count == 0:
            break
        time.sleep(0.25)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--idle", type=float, default=10, help="HOMELAB_SSH_IDLE_SECONDS")
    args = parser.parse_args()
    count = args.servers

    bench = Bench("many")
    try:
        daemons = [bench.sshd() for _ in range(count)]
        ports = {daemon.port for daemon in daemons}
        env = bench.embedded_env(
            HOMELAB_SSH_IDLE_SECONDS=str(int(args.idle)), HOMELAB_SSH_MAX_CONNECTIONS="7"
        )
        key = bench.set_up(env, daemons)
        port, (worker,) = bench.workers(env, 1)
        clients = [Client(port, key) for _ in range(count)]
        one = ["box0"] * count
        many = [f"box{n}" for n in range(count)]
        burst(clients, one)  # warm box0's connections and the worker
        lone, single, spread = [], [], []
        rss_before, threads_before = rss_and_threads(worker)
        open_before = established_to(worker, ports)
        sshd_before = session_pss_mb(bench)
        started = time.perf_counter()
        burst(clients, many)  # cold: opens a connection to each of the other servers
        cold = time.perf_counter() - started
        time.sleep(1)
        rss_after, threads_after = rss_and_threads(worker)
        open_after = established_to(worker, ports)
        sshd_after = session_pss_mb(bench)
        for _ in range(args.rounds):
            single += burst(clients, one)
            spread += burst(clients, many)
            timed(lambda: clients[0].execute("box0", "true", "t_true"), lone, 10)
        # Last, one command on each server but box0: box1..N's connections were then all
        # last used in this burst (box0's, by the rounds before, are left out).
        others = ports - {daemons[0].port}
        last_use = time.monotonic()
        burst(clients[1:], many[1:])
        reaping = watch_reaping(worker, others, args.idle, last_use)
        for client in clients:
            client.close()
    finally:
        bench.close()

    new = max(open_after - open_before, 1)
    (single_p50, single_p95), (spread_p50, spread_p95) = summary(single), summary(spread)
    lone_p50 = summary(lone)[0]
    interval = min(max(args.idle / 4, 0.05), 30.0)
    first_drop = next((t for t, n in reaping if n < reaping[0][1]), None)
    all_gone = reaping[-1][0] if reaping[-1][1] == 0 else None
    on_time = (
        first_drop is not None and all_gone is not None and first_drop >= args.idle - 0.3
        and all_gone <= args.idle + interval + 1.5
    )  # fmt: skip
    print(header(f"Issue 12, goal 3: {count} sshd servers on 127.0.0.1, embedded profile, "
                 f"{CPUS} CPUs; {args.rounds} rounds"))  # fmt: skip
    print(row("one server, 50 at once: per-command p50 / p95 ms",
              f"{single_p50:.1f} / {single_p95:.1f}"))  # fmt: skip
    print(row(f"{count} servers, one each, at once: p50 / p95 ms",
              f"{spread_p50:.1f} / {spread_p95:.1f}"))  # fmt: skip
    print(row(f"{count} servers p50 / one server p50 (same load)",
              f"{spread_p50 / single_p50:.2f}x", "<= 1.5x",
              spread_p50 <= 1.5 * single_p50))  # fmt: skip
    print(row("one server, one at a time: p50 ms", f"{lone_p50:.1f}"))
    print(row(f"{count} servers p50 / one-at-a-time p50", f"{spread_p50 / lone_p50:.1f}x"))
    print(row(f"cold round ({new} new connections at once), wall s", f"{cold:.2f}"))
    print(row("worker RSS per warm connection, KiB",
              f"{(rss_after - rss_before) * 1024 / new:.0f}"))  # fmt: skip
    print(
        row("worker threads per warm connection", f"{(threads_after - threads_before) / new:.2f}")
    )
    print(row("worker RSS / threads with all connections warm",
              f"{rss_after:.0f} MB / {threads_after}"))  # fmt: skip
    print(row("sshd session processes' PSS per connection, KiB",
              f"{(sshd_after - sshd_before) * 1024 / new:.0f}"))  # fmt: skip
    still_open = next((n for t, n in reversed(reaping) if t <= args.idle - 1), "?")
    print(row(f"connections to box1..box{count - 1}, {args.idle - 1:g} s after last use",
              f"{still_open}"))  # fmt: skip
    not_early = first_drop is not None and first_drop >= args.idle - 0.3
    print(row("first one closed, s after last use",
              f"{first_drop:.1f}" if first_drop is not None else "never",
              f">= {args.idle:g}", not_early))  # fmt: skip
    print(row("all closed, s after last use (idle + reaper tick)",
              f"{all_gone:.1f}" if all_gone is not None else "never",
              f"<= {args.idle + interval + 1.5:g}", on_time))  # fmt: skip


if __name__ == "__main__":
    main()
