"""Live streaming over the WebSocket: latency, throughput and the server's memory (one run).

    .venv/bin/python bench/stream.py [--lines 200] [--megabytes 100] [--runs 3] ...

Sets up the embedded profile (SQLite in a temporary folder, the in-process frame log, no
REDIS_URL) with the project's management commands, starts a throwaway OpenSSH sshd on
127.0.0.1 (bench_daemon) and serves homelab.asgi:application with daphne, DJANGO_DEBUG=0,
on a free loopback port: one for latency and throughput, a fresh one (a clean RSS) for
each memory variant:

  latency     a rule prints --lines lines, each the server's `date +%s.%N`, --gap seconds
              apart; the client subtracts each from time.time() when its frame arrives
              (sshd runs on this machine: one clock)
  throughput  a rule prints --megabytes MB; a client connects right after the 202 and
              counts the data bytes until the result frame (HOMELAB_STREAM_LIMIT above it)
  memory      daphne's VmRSS, sampled every 50 ms, before and at the peak while --clients
              clients each follow an execution printing --each-megabytes MB (default
              HOMELAB_STREAM_LIMIT, so every stream is cut): fast readers, then slow ones
              (a small receive buffer, reading --slow-kib KiB/s)

and prints one table: metric, measured, goal, met. Results go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from websockets.exceptions import ConnectionClosed, ConnectionClosedOK  # noqa: E402
from websockets.sync.client import ClientConnection, connect  # noqa: E402

from bench.executor_latency import bench_daemon  # noqa: E402
from tests.live import Daphne, key_headers, manage, server_id_from, start  # noqa: E402

MB = 1_000_000
RSS_EVERY = 0.05  # seconds between RSS samples
RECV_TIMEOUT = 120  # seconds without a frame before a client gives up


def sh(script: str) -> str:
    """A rule's template, and the command a client sends: `sh -c` with a literal script."""
    return shlex.join(["sh", "-c", script])


def lines_rule(lines: int, gap: float) -> str:
    # The first second lets the client connect before the first line (no replay in it).
    return sh(f"sleep 1; for i in $(seq {lines}); do date +%s.%N; sleep {gap}; done")


def bulk_rule(size: int) -> str:
    return sh(f"head -c {size} /dev/zero | tr '\\0' x")


class Stack:
    """The sshd, the temporary database, an API key, one server and the bench's rules."""

    def __init__(self) -> None:
        self.daemon, self.key_file, _ = bench_daemon()
        self.work = Path(tempfile.mkdtemp(prefix="homelab-bench-stream-"))
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{self.work / 'db.sqlite3'}",
            "DJANGO_SECRET_KEY": "bench-only-" + "x" * 40,
            "DJANGO_DEBUG": "0",
            "HOMELAB_EXECUTE_RATE": "1000/min",
        }
        self.env.pop("REDIS_URL", None)
        self.key, self.server_id = "", 0

    def set_up(self, rules: dict[str, str]) -> None:
        """Through manage.py, as an admin would: the schema, a key, the server, the rules."""
        manage(self.env, "migrate", "--noinput")
        self.key = manage(self.env, "createapikey", "bench").strip().splitlines()[-1]
        out = manage(self.env, "addserver", "box", self.daemon.host, "--port",
                     str(self.daemon.port), "--user", self.daemon.username,
                     "--key-file", str(self.key_file))  # fmt: skip
        manage(self.env, "trusthost", "box", "--yes")
        for action, template in rules.items():
            manage(self.env, "allowcommand", action, template, "--timeout", "600")
        self.server_id = server_id_from(out, "box", self.env)

    @contextlib.contextmanager
    def serve(self, name: str, **settings: str) -> Iterator[Daphne]:
        """A daphne with these extra settings, stopped by its PID on the way out."""
        server = Daphne(env={**self.env, **settings}, log=self.work / f"daphne-{name}.log")
        try:
            yield server.start()
        finally:
            server.stop()

    def stop(self) -> None:
        self.daemon.stop()


def follow(server: Daphne, key: str, execution_id: int, *, rcvbuf: int = 0) -> ClientConnection:
    """An open WebSocket on the execution's stream (rcvbuf: a small kernel receive buffer)."""
    url = f"{server.ws}/ws/v1/executions/{execution_id}/"
    sock = None
    if rcvbuf:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect
        sock.connect(("127.0.0.1", server.port))
    return connect(
        url,
        sock=sock,
        additional_headers=key_headers(key),
        proxy=None,  # loopback only, whatever the environment's proxy variables say
        compression=None,  # daphne does not negotiate permessage-deflate anyway
        max_size=None,
        max_queue=2 if rcvbuf else 16,  # a slow reader leaves the backlog to the server
        open_timeout=10,
    )


def messages(ws: ClientConnection) -> Iterator[str]:
    """The frames of ws until the server closes it cleanly (TimeoutError if one is late)."""
    while True:
        try:
            yield ws.recv(timeout=RECV_TIMEOUT)
        except ConnectionClosedOK:
            return


def execute(server: Daphne, stack: Stack, action: str, command: str) -> int:
    return start(server, stack.key, stack.server_id, command, action)


# --- latency ------------------------------------------------------------------------------
def latency_ms(server: Daphne, stack: Stack, command: str) -> list[float]:
    """Per line: time.time() at its frame's arrival minus the server's timestamp in it."""
    execution_id = execute(server, stack, "b_lines", command)
    delays: list[float] = []
    pending = ""
    with follow(server, stack.key, execution_id) as ws:
        for message in messages(ws):
            now = time.time()
            frame = json.loads(message)
            if frame["type"] == "result":
                break
            if frame["type"] == "output" and frame["stream"] == "stdout":
                *complete, pending = (pending + frame["data"]).split("\n")
                delays += [(now - float(line)) * 1000 for line in complete if line]
    return delays


# --- throughput ---------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(server: Daphne, stack: Stack, command: str, size: int) -> dict[str, float]:
    """One run: MB/s from the POST to the result frame, and who spent the CPU."""
    daphne_cpu, client_cpu = cpu_seconds(server.process.pid), time.process_time()
    started = time.perf_counter()
    execution_id = execute(server, stack, "b_bulk", command)
    received = 0
    with follow(server, stack.key, execution_id) as ws:
        for message in messages(ws):
            if message.startswith('{"type":"output"'):
                received += len(json.loads(message)["data"].encode())
            elif message.startswith('{"type":"result"'):
                break
            else:
                raise RuntimeError(f"unexpected frame: {message[:200]}")
    elapsed = time.perf_counter() - started
    if received != size:
        raise RuntimeError(f"received {received} bytes of {size}")
    return {
        "mb_s": received / MB / elapsed,
        "seconds": elapsed,
        "daphne_cpu": cpu_seconds(server.process.pid) - daphne_cpu,
        "client_cpu": time.process_time() - client_cpu,
    }


# --- memory -------------------------------------------------------------------------------
def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / MB
    raise RuntimeError(f"no VmRSS for {pid}")


class RssSampler(threading.Thread):
    """The highest VmRSS of a process, sampled every RSS_EVERY seconds until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = rss_mb(pid)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(RSS_EVERY):
            self.peak = max(self.peak, rss_mb(self.pid))


def read_all(ws: ClientConnection, kib_per_second: float) -> dict:
    """Read until the result frame or the end of the connection, paced to kib_per_second
    when non-zero: the result (None if it never came), the bytes and the close code."""
    started, received, result, code = time.monotonic(), 0, None, None
    try:
        for message in messages(ws):
            if message.startswith('{"type":"result"'):
                result = json.loads(message)
            received += len(message)
            if kib_per_second:
                ahead = received / (kib_per_second * 1024) - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    except ConnectionClosed as closed:  # no close frame: the server dropped the TCP link
        code = closed.rcvd.code if closed.rcvd else None
    else:
        code = ws.close_code
    return {"result": result, "bytes": received, "close": code}


def memory(server: Daphne, stack: Stack, command: str, clients: int, slow_kib: float):
    """(RSS before, peak RSS) in MB while `clients` clients each follow one execution, and
    what each client got (read_all)."""
    warm = execute(server, stack, "b_hi", "echo hi")  # imports, pool, first queries
    with follow(server, stack.key, warm) as ws:
        read_all(ws, 0)
    time.sleep(0.5)
    before = rss_mb(server.process.pid)
    sampler = RssSampler(server.process.pid)
    results: list[dict] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            execution_id = execute(server, stack, "b_each", command)
            # A slow reader's small receive buffer keeps its backlog in daphne, as a client
            # on a slow link would, rather than in this machine's socket buffers.
            rcvbuf = 16 * 1024 if slow_kib else 0
            with follow(server, stack.key, execution_id, rcvbuf=rcvbuf) as ws:
                results.append(read_all(ws, slow_kib))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    sampler.start()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        time.sleep(0.2)  # one more sample or so after the last result
    finally:
        sampler.done.set()
        sampler.join()
    if errors:
        raise errors[0]
    return before, sampler.peak, results


# --- the run ------------------------------------------------------------------------------
def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * share), len(ordered) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=200, help="timestamped lines")
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between lines")
    parser.add_argument("--megabytes", type=int, default=100, help="throughput output, MB")
    parser.add_argument("--runs", type=int, default=3, help="throughput runs (median)")
    parser.add_argument("--clients", type=int, default=10, help="concurrent streams")
    parser.add_argument("--each-megabytes", type=int, default=20, help="output per stream")
    parser.add_argument("--slow-kib", type=float, default=256, help="slow reader, KiB/s")
    args = parser.parse_args()
    size = args.megabytes * MB
    rules = {
        "b_hi": "echo hi",
        "b_lines": lines_rule(args.lines, args.gap),
        "b_bulk": bulk_rule(size),
        "b_each": bulk_rule(args.each_megabytes * MB),
    }

    stack = Stack()
    try:
        stack.set_up(rules)
        with stack.serve("bulk", HOMELAB_STREAM_LIMIT=str(2 * size)) as server:
            delays = latency_ms(server, stack, rules["b_lines"])
            runs = [throughput(server, stack, rules["b_bulk"], size) for _ in range(args.runs)]
            after_bulk = rss_mb(server.process.pid)
        memories = {}
        for name, slow in (("fast readers", 0), (f"slow readers ({args.slow_kib:g} KiB/s)", 1)):
            with stack.serve(name.split()[0]) as server:
                memories[name] = memory(
                    server, stack, rules["b_each"], args.clients, args.slow_kib * slow
                )
    finally:
        stack.stop()

    report(args, delays, runs, after_bulk, memories)


def report(
    args: argparse.Namespace,
    delays: list[float],
    runs: list[dict[str, float]],
    after_bulk: float,
    memories: dict[str, tuple[float, float, list[dict]]],
) -> None:
    median = statistics.median
    rates = ", ".join(f"{run['mb_s']:.1f}" for run in runs)
    cpu = {who: median(run[f"{who}_cpu"] for run in runs) for who in ("daphne", "client")}
    print(
        "Live streaming, embedded profile (daphne, SQLite, in-process frame log), "
        f"OpenSSH sshd on 127.0.0.1, {os.cpu_count()} CPUs"
    )
    print(
        f"latency: {len(delays)} lines, {args.gap:g} s apart. throughput: {args.megabytes} MB "
        f"x {args.runs} ({rates} MB/s), CPU s per run: daphne {cpu['daphne']:.2f}, this "
        f"client {cpu['client']:.2f}; daphne RSS after the runs {after_bulk:.0f} MB (a log "
        "is kept HOMELAB_STREAM_RETENTION_SECONDS after its run)"
    )
    p50, rate = percentile(delays, 0.5), median(r["mb_s"] for r in runs)
    rows = [
        ("line -> frame latency p50, ms", f"{p50:.1f}", "<= 20", p50 <= 20),
        ("line -> frame latency p95, ms", f"{percentile(delays, 0.95):.1f}", "", None),
        ("line -> frame latency max, ms", f"{max(delays):.1f}", "", None),
        (f"throughput, {args.megabytes} MB, MB/s (median)", f"{rate:.1f}", ">= 50", rate >= 50),
    ]
    for name, (before, peak, results) in memories.items():
        growth = peak - before
        label = f"RSS growth, {args.clients} x {args.each_megabytes} MB, {name}, MB"
        rows.append((label, f"{growth:.1f}", "< 50", growth < 50))
        rows.append(("  RSS before / peak, MB", f"{before:.0f}/{peak:.0f}", "", None))
        whole = sum(r["result"] is not None and r["close"] == 1000 for r in results)
        label = "  clients given the result and close 1000"
        rows.append((label, str(whole), str(args.clients), whole == args.clients))
    print(f"{'metric':58} {'measured':>9} {'goal':>7} {'met':>4}")
    for label, value, goal, met in rows:
        verdict = "" if met is None else ("yes" if met else "no")
        print(f"{label:58} {value:>9} {goal:>7} {verdict:>4}")


if __name__ == "__main__":
    main()
