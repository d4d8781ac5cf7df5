"""Shared set-up for the issue-12 benches: sshd daemons, the two profiles, ASGI workers.

Everything is on loopback and throwaway: sshd daemons with their own keys (tests/sshd.py),
an embedded profile (SQLite in a temporary folder) or the scale-out profile (a fresh
PostgreSQL database on 127.0.0.1:5432, Redis 127.0.0.1:6379 db 14), daphne workers on a
free port. Every process started here is stopped by its PID (`Bench.close`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.sshd import SSHDaemon, free_port, keygen, public_key, terminate  # noqa: E402

BIN = Path(sys.executable).parent
ASGI_APP = "homelab.asgi:application"
POSTGRES_ADMIN_URL = os.environ.get(
    "HOMELAB_BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)
REDIS_BENCH_URL = os.environ.get("HOMELAB_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
CPUS = os.cpu_count() or 1
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The ASGI servers users run us under, each serving an inherited listening socket.
SERVERS = {
    "daphne": lambda fd, app: [str(BIN / "daphne"), "--fd", str(fd), app],
    "uvicorn": lambda fd, app: [
        str(BIN / "uvicorn"), "--fd", str(fd), "--http", "httptools", "--loop", "uvloop",
        "--no-access-log", "--lifespan", "off", app,
    ],
}  # fmt: skip

# The rules every bench uses; `true` is the latency probe, `sleep {s}` the concurrency one.
RULES = [
    ("t_true", "true", []),
    ("t_nap", "sleep {s}", ["--param", r"s=^[0-9]{1,2}(\.[0-9]{1,3})?$"]),
]


def summary(values: list[float]) -> tuple[float, float]:
    """(median, p95) of values."""
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(int(len(ordered) * 0.95) - 1, 0)]


def timed(fn: Callable[[], object], samples: list[float], runs: int) -> None:
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)


def interleaved(variants: dict[str, tuple[Callable[[], object], int]], rounds: int):
    """Run each variant's share in every round (noise hits all alike); samples in ms."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for fn, _ in variants.values():
        fn()  # warm: pools, imports, first queries, control masters
    for _ in range(rounds):
        for name, (fn, runs) in variants.items():
            timed(fn, samples[name], max(runs // rounds, 1))
    return samples


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_and_threads(pid: int) -> tuple[float, int]:
    """(resident MB, threads) of a process, from /proc/PID/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        values[name] = value.split()
    return int(values["VmRSS"][0]) / 1024, int(values["Threads"][0])


class Client:
    """One keep-alive HTTP/1.1 connection, as a script using requests.Session has."""

    def __init__(self, port: int, key: str, *, keep_alive: bool = True) -> None:
        self.port, self.key, self.keep_alive = port, key, keep_alive
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        reused = self.conn is not None
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Content-Type": "application/json", "Authorization": f"Api-Key {self.key}"}
        try:
            self.conn.request("POST", path, body=json.dumps(body), headers=headers)
            response = self.conn.getresponse()
            data = response.read()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The server closed the idle keep-alive connection (uvicorn does after 5 s)
            # before reading this request: send it again on a new one, as requests does.
            self.close()
            if not reused:
                raise
            return self.post(path, body)
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if not self.keep_alive or response.will_close:
            self.close()
        return response.status, json.loads(data or b"null")

    def execute(self, server: str, command: str, action: str) -> dict:
        status, body = self.post(
            f"/api/v1/servers/{server}/commands/execute",
            {"command": command, "action_type": action},
        )
        if status != 200 or body.get("exit_code") != 0:
            raise RuntimeError(f"execute on {server} answered {status}: {body}")
        return body

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Bench:
    """A temporary folder, a client key, sshd daemons and ASGI workers; close() stops all."""

    def __init__(self, prefix: str) -> None:
        self.work = Path(tempfile.mkdtemp(prefix=f"homelab-{prefix}-"))
        self.key = keygen(self.work / "id_ed25519", "bench")
        self.daemons: list[SSHDaemon] = []
        self.procs: list[subprocess.Popen] = []
        self.databases: list[str] = []

    # --- sshd ---------------------------------------------------------------------------
    def sshd(self, **kwargs) -> SSHDaemon:
        daemon = SSHDaemon(
            workdir=self.work / f"sshd-{len(self.daemons)}",
            authorized_keys=[public_key(self.key)],
            **kwargs,
        )
        self.daemons.append(daemon)
        return daemon.start()

    # --- profiles -----------------------------------------------------------------------
    def embedded_env(self, name: str = "embedded", **settings: str) -> dict:
        env = self._env(f"sqlite:///{self.work / (name + '.sqlite3')}", **settings)
        env.pop("REDIS_URL", None)
        return env

    def scale_out_env(self, **settings: str) -> dict:
        import psycopg

        name = f"homelab_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        url = f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
        return self._env(url, REDIS_URL=REDIS_BENCH_URL, **settings)

    def _env(self, database_url: str, **settings: str) -> dict:
        return {
            **os.environ,
            "DATABASE_URL": database_url,
            "DJANGO_SECRET_KEY": "bench-only-" + "x" * 40,
            "DJANGO_DEBUG": "0",
            "HOMELAB_EXECUTE_RATE": "1000000/min",
            **settings,
        }

    def set_up(self, env: dict, daemons: list[SSHDaemon], cwd: Path = ROOT) -> str:
        """Migrate; servers box0..boxN-1 (one per daemon, host key pinned from the
        daemon's own key file), the bench rules and an API key; the raw key. One Python
        process for it all (50 servers through manage.py one by one take minutes)."""
        servers = [
            (f"box{n}", d.host, d.port, d.username, d.host_key) for n, d in enumerate(daemons)
        ]
        script = f"""
from django.core.management import call_command
call_command("migrate", "--noinput", verbosity=0)
for name, host, port, user, host_key in {servers!r}:
    call_command("addserver", name, host, "--port", str(port), "--user", user,
                 "--key-file", {str(self.key)!r}, stdout=open("/dev/null", "w"))
    call_command("trusthost", name, "--yes", "--host-key", host_key,
                 stdout=open("/dev/null", "w"))
for action, template, extra in {RULES!r}:
    call_command("allowcommand", action, template, *extra, stdout=open("/dev/null", "w"))
call_command("createapikey", "bench")
"""
        out = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", script],
            cwd=cwd, env=env, check=True, capture_output=True, text=True, timeout=600,
        ).stdout  # fmt: skip
        return out.strip().splitlines()[-1]

    # --- ASGI workers -------------------------------------------------------------------
    def workers(
        self,
        env: dict,
        count: int = 1,
        app: str = ASGI_APP,
        cwd: Path = ROOT,
        server: str = "daphne",
    ) -> tuple[int, list[int]]:
        """`count` ASGI server processes (daphne, or uvicorn with httptools and uvloop)
        serving one free loopback port; (port, their PIDs).

        Several workers share one listening socket (`--fd`, as under a process manager
        such as circus or systemd socket activation): the kernel spreads the connections
        among them."""
        port = free_port()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(512)
        pids = []
        try:
            for n in range(count):
                log = (self.work / f"worker-{port}-{n}.log").open("ab")
                proc = subprocess.Popen(
                    SERVERS[server](listener.fileno(), app),
                    cwd=cwd, env=env, stdout=log, stderr=log,
                    pass_fds=(listener.fileno(),),
                )  # fmt: skip
                log.close()
                self.procs.append(proc)
                pids.append(proc.pid)
        finally:
            listener.close()  # the workers hold their own copies
        self.wait_until_serving(port, pids)
        return port, pids

    def wait_until_serving(self, port: int, pids: list[int], timeout: float = 90) -> None:
        """Until the workers answer (a new one may queue a request for seconds while it
        starts on a busy machine, so a timeout is just another try)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs if p.pid in pids):
                raise RuntimeError(
                    f"a worker exited; run again with HOMELAB_BENCH_KEEP=1 and read "
                    f"{self.work}/worker-{port}-*.log"
                )
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/api/schema/")
                conn.getresponse().read()
                conn.close()
                return
            except (OSError, http.client.HTTPException):
                time.sleep(0.2)
        raise RuntimeError(f"the workers on port {port} did not answer within {timeout:g} s")

    def stop_workers(self, pids: list[int]) -> None:
        for proc in [p for p in self.procs if p.pid in pids]:
            if proc.poll() is None:
                terminate(proc)
            self.procs.remove(proc)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                terminate(proc)
        self.procs.clear()
        for daemon in self.daemons:
            daemon.stop()
        if self.databases:
            import psycopg

            with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
                for name in self.databases:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self.databases.clear()
        if not os.environ.get("HOMELAB_BENCH_KEEP"):  # =1 keeps the logs and databases' files
            shutil.rmtree(self.work, ignore_errors=True)


def established_to(pid: int, ports: set[int]) -> int:
    """TCP connections process pid has open to 127.0.0.1:<one of ports> (from `ss`)."""
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established"], capture_output=True, text=True
    ).stdout
    count = 0
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and f"pid={pid}," in line:
            peer_port = int(parts[3].rpartition(":")[2])
            count += peer_port in ports
    return count


def baseline_tree(given: str, work: Path) -> Path:
    """The directory `given` names, or the commit `given` of this repository unpacked in
    work (the benches set their own databases up, so an older schema is no problem)."""
    if Path(given).is_dir():
        return Path(given).resolve()
    tree = work / "baseline"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "archive", given], cwd=ROOT, capture_output=True, check=True, timeout=120
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True, timeout=120)
    return tree


def row(name: str, measured: str, goal: str = "", met: bool | None = None) -> str:
    verdict = "" if met is None else ("yes" if met else "NO")
    return f"{name:58} {measured:>14} {goal:>12} {verdict:>4}"


def header(title: str) -> str:
    return f"{title}\n{'metric':58} {'measured':>14} {'goal':>12} {'met':>4}"
