"""Latency of `true` through the SSH executor on a warm pool, against the alternatives.

    .venv/bin/python bench/executor_latency.py [--runs 300]     (or: make bench)

Starts a throwaway OpenSSH sshd on 127.0.0.1 (tests/sshd.py: its own host key, client key,
and `SetEnv SHLVL=1` so root's ~/.bashrc does not run `pyenv init` on every command) and
measures, in one run, interleaved in rounds so machine noise hits every variant alike:

  raw paramiko, `true`        a reused paramiko transport with TCP_NODELAY: the floor
  raw paramiko, wrapped       the same, running the command the executor sends (the
                              server-side `timeout -k` wrapper): the floor for our work
  executor (warm pool)        SSHPooledExecutor.execute(target, ["true"])
  fresh Fabric Connection     Connection(...).run("true") and close, per command

and prints median / p95 per variant and the ratios. Results go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fabric  # noqa: E402
import paramiko  # noqa: E402

from bench.common import interleaved, summary  # noqa: E402
from commands import ssh  # noqa: E402
from commands.ssh.channel import server_side_command  # noqa: E402
from tests.sshd import SSHDaemon, keygen, public_key  # noqa: E402


def raw_transport(daemon: SSHDaemon, key: Path) -> paramiko.Transport:
    sock = socket.create_connection((daemon.host, daemon.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(sock)
    transport.connect(
        hostkey=ssh.parse_host_key(daemon.host_key),
        username=daemon.username,
        pkey=paramiko.PKey.from_path(key),
    )
    return transport


def raw_run(transport: paramiko.Transport, command: str) -> None:
    chan = transport.open_session(timeout=10)
    chan.exec_command(command)
    chan.status_event.wait(10)
    chan.close()


def bench_daemon() -> tuple[SSHDaemon, Path, ssh.SSHTarget]:
    """A throwaway sshd on 127.0.0.1 with its own keys, and the executor's target for it."""
    workdir = Path(tempfile.mkdtemp(prefix="homelab-bench-"))
    key = keygen(workdir / "id_ed25519", "bench")
    daemon = SSHDaemon(workdir=workdir / "sshd", authorized_keys=[public_key(key)]).start()
    target = ssh.SSHTarget("bench", daemon.host, daemon.port, daemon.username, str(key),
                           daemon.host_key)  # fmt: skip
    return daemon, key, target


def fresh_fabric_connection(daemon: SSHDaemon, key: Path) -> fabric.Connection:
    """Stock Fabric usage (no TCP_NODELAY, invoke's runner), but with the host key pinned."""
    connect_kwargs = {"key_filename": str(key), "look_for_keys": False, "allow_agent": False}
    conn = fabric.Connection(
        daemon.host, user=daemon.username, port=daemon.port, connect_kwargs=connect_kwargs
    )
    pinned = ssh.parse_host_key(daemon.host_key)
    conn.client.get_host_keys().add(f"[{daemon.host}]:{daemon.port}", pinned.get_name(), pinned)
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return conn


def fresh_fabric_run(daemon: SSHDaemon, key: Path) -> None:
    with fresh_fabric_connection(daemon, key) as conn:
        conn.run("true", hide=True, in_stream=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="commands per warm variant")
    parser.add_argument("--fresh-runs", type=int, default=30, help="fresh Fabric connections")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args()

    daemon, key, target = bench_daemon()
    executor = ssh.SSHPooledExecutor()
    transport = raw_transport(daemon, key)
    wrapped = server_side_command(["true"], 10)
    variants: dict[str, tuple[Callable[[], object], int]] = {
        "raw paramiko, `true` (floor)": (lambda: raw_run(transport, "true"), args.runs),
        "raw paramiko, wrapped command": (lambda: raw_run(transport, wrapped), args.runs),
        "executor, warm pool": (lambda: executor.execute(target, ["true"], timeout=10), args.runs),
        "fresh Fabric Connection": (lambda: fresh_fabric_run(daemon, key), args.fresh_runs),
    }
    try:
        samples = interleaved(variants, args.rounds)
    finally:
        executor.close()
        transport.close()
        daemon.stop()

    print(f"`true` on OpenSSH sshd, 127.0.0.1, {os.cpu_count()} CPUs; wrapped = {wrapped!r}")
    print(f"{'variant':34} {'n':>5} {'median ms':>10} {'p95 ms':>8}")
    stats = {name: summary(values) for name, values in samples.items()}
    for name, (median, p95) in stats.items():
        print(f"{name:34} {len(samples[name]):5d} {median:10.2f} {p95:8.2f}")
    floor, floor_wrapped, pooled, fresh = (stats[name][0] for name in variants)
    print(f"executor / raw floor (`true`):       {pooled / floor:.2f}x")
    print(f"executor / raw wrapped (same work):  {pooled / floor_wrapped:.2f}x")
    print(f"fresh Fabric / executor:             {fresh / pooled:.1f}x")


if __name__ == "__main__":
    main()
