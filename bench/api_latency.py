"""What the HTTP API adds on top of the SSH executor, per command (medians, one run).

    .venv/bin/python bench/api_latency.py [--runs 200]

Sets up the embedded profile in a temporary folder (SQLite, local-memory cache) with the
project's own management commands, serves it with one daphne process, starts a throwaway
OpenSSH sshd on 127.0.0.1 (tests/sshd.py), and measures `echo hi`:

  executor, warm pool       SSHPooledExecutor.execute() in this process (the baseline)
  POST .../execute          the whole API: auth, whitelist, audit row before and after,
                            throttle (rate raised for the bench), executor, JSON

interleaved in rounds, and prints median / p95 and the difference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import interleaved, summary  # noqa: E402
from commands import ssh  # noqa: E402
from tests.live import wait_for_http  # noqa: E402
from tests.sshd import SSHDaemon, free_port, keygen, public_key, terminate  # noqa: E402


def manage(env: dict, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
        capture_output=True, text=True,
    ).stdout  # fmt: skip


def post(port: int, key: str, command: str, action: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/servers/1/commands/execute",
        data=json.dumps({"command": command, "action_type": action}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Api-Key {key}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def embedded_service(work: Path, **settings: str) -> tuple[SSHDaemon, Path, dict, str]:
    """A throwaway sshd and the embedded profile (SQLite in work) set up as a user would,
    with server `box`, rule `t_hi` (`echo hi`) and the quota raised: (sshd, client key,
    the environment to serve it with, an API key)."""
    key_file = keygen(work / "id_ed25519", "bench")
    daemon = SSHDaemon(workdir=work / "sshd", authorized_keys=[public_key(key_file)]).start()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}",
        "DJANGO_SECRET_KEY": "bench-only-" + "x" * 40,
        "HOMELAB_EXECUTE_RATE": "1000000/min",
        **settings,
    }
    env.pop("REDIS_URL", None)
    manage(env, "migrate", "--noinput")
    api_key = manage(env, "createapikey", "bench").strip().splitlines()[-1]
    manage(env, "addserver", "box", daemon.host, "--port", str(daemon.port),
           "--user", daemon.username, "--key-file", str(key_file))  # fmt: skip
    manage(env, "trusthost", "box", "--yes")
    manage(env, "allowcommand", "t_hi", "echo hi")
    return daemon, key_file, env, api_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="homelab-bench-api-"))
    daemon, key_file, env, api_key = embedded_service(work)
    port = free_port()
    log = (work / "daphne.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port),
         "homelab.asgi:application"],
        cwd=ROOT, env=env, stdout=log, stderr=log,
    )  # fmt: skip
    target = ssh.SSHTarget("box", daemon.host, daemon.port, daemon.username, str(key_file),
                           daemon.host_key)  # fmt: skip
    executor = ssh.SSHPooledExecutor()
    variants = {
        "executor, warm pool": (
            lambda: executor.execute(target, ["echo", "hi"], timeout=30), args.runs),
        "POST .../execute": (lambda: post(port, api_key, "echo hi", "t_hi"), args.runs),
    }  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/api/schema/")
        samples = interleaved(variants, args.rounds)
    finally:
        executor.close()
        terminate(server)
        daemon.stop()

    print(f"`echo hi` via OpenSSH sshd on 127.0.0.1, {os.cpu_count()} CPUs, embedded profile")
    print(f"{'variant':24} {'n':>5} {'median ms':>10} {'p95 ms':>8}")
    medians = {}
    for name, values in samples.items():
        medians[name], p95 = summary(values)
        print(f"{name:24} {len(values):5d} {medians[name]:10.2f} {p95:8.2f}")
    base, api = medians.values()
    print(f"API overhead: {api - base:.2f} ms per command ({api / base:.2f}x the executor)")


if __name__ == "__main__":
    main()
