"""Executes per second with the quota raised, 1 and 4 workers (issue 12, goal 4).

    .venv/bin/python bench/throughput.py [--clients 16] [--seconds 10]

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
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import CLK_TCK, CPUS, Bench, Client, cpu_seconds, header, row
from tests.sshd import SSHDaemon


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
    args = parser.parse_args()

    bench = Bench("throughput")
    results = {}
    try:
        daemon = bench.sshd()
        embedded = bench.embedded_env()
        scale_out = bench.scale_out_env()
        keys = {"embedded": bench.set_up(embedded, [daemon])}
        keys["scale-out"] = bench.set_up(scale_out, [daemon])
        settings = [
            ("embedded, 1 worker (SQLite)", embedded, "embedded", 1),
            ("scale-out, 1 worker (PostgreSQL, Redis)", scale_out, "scale-out", 1),
            (f"scale-out, {args.workers} workers", scale_out, "scale-out", args.workers),
            (f"scale-out, {args.workers} workers, DB pool of 8 (opt-in)",
             {**scale_out, "HOMELAB_DB_POOL_SIZE": "8"}, "scale-out", args.workers),
        ]  # fmt: skip
        for name, env, profile, count in settings:
            port, pids = bench.workers(env, count)
            hammer(port, keys[profile], args.clients, 1.0)  # warm every worker's pool
            cpu_before, sshd_before = cpu_seconds(pids), sshd_cpu(daemon)
            services_before = service_cpu("postgres") + service_cpu("redis-server")
            done, elapsed, failed = hammer(port, keys[profile], args.clients, args.seconds)
            cpu = cpu_seconds(pids) - cpu_before
            services = service_cpu("postgres") + service_cpu("redis-server") - services_before
            sshd = sshd_cpu(daemon) - sshd_before
            results[name] = (done, elapsed, failed, cpu, sshd, services)
            bench.stop_workers(pids)
    finally:
        bench.close()

    print(header(f"Issue 12, goal 4: throughput of `true`, {args.clients} keep-alive clients "
                 f"x {args.seconds:g} s each, quota raised, {CPUS} CPUs"))  # fmt: skip
    for name, (done, elapsed, failed, cpu, sshd, services) in results.items():
        rate = done / elapsed
        print(row(f"{name}: executes/s", f"{rate:.0f}"))
        print(row("  executes/s per CPU of the machine", f"{rate / CPUS:.0f}"))
        print(row("  executes per CPU-second of the workers", f"{done / cpu:.0f}"))
        use = f"{cpu / elapsed:.2f}/{sshd / elapsed:.2f}/{services / elapsed:.2f}"
        print(row("  CPU use, cores: workers / sshd / PostgreSQL+Redis", use))
        print(row("  answers not 200 with exit 0", f"{failed}", "0", failed == 0))


if __name__ == "__main__":
    main()
