"""daphne against uvicorn serving homelab, side by side in one run (medians, p95).

    .venv/bin/python bench/asgi_servers.py [--runs 200]

Sets up the embedded profile in a temporary folder (SQLite) with the project's own
management commands and a throwaway OpenSSH sshd on 127.0.0.1, serves the same database
with one daphne and one uvicorn (httptools, uvloop) process, and measures, interleaved:

  401 (no key)         the server and Django's middleware, no database
  POST .../execute     the whole API with `echo hi` over SSH

Needs bench/requirements.txt (make bench installs it). That every status has its reason
phrase under daphne is a test (tests/test_errors_that_say_the_fix.py).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.api_latency import embedded_service  # noqa: E402
from bench.common import interleaved, summary  # noqa: E402
from tests.live import wait_for_http  # noqa: E402
from tests.sshd import free_port, terminate  # noqa: E402

BIN = Path(sys.executable).parent
APP = "homelab.asgi:application"
SERVERS = {
    "daphne": lambda port: [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), APP],
    "uvicorn": lambda port: [
        str(BIN / "uvicorn"), "--host", "127.0.0.1", "--port", str(port), "--http", "httptools",
        "--loop", "uvloop", "--no-access-log", "--lifespan", "off", APP,
    ],
}  # fmt: skip


def request(port: int, method: str, path: str, key: str | None = None, body=None):
    """(status line, body) over a fresh connection, as a script's client would."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Api-Key {key}"
    conn.request(method, path, body=json.dumps(body) if body else None, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return f"{response.status} {response.reason}", data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="homelab-bench-asgi-"))
    daemon, _, env, key = embedded_service(work, DJANGO_DEBUG="0")
    ports = {name: free_port() for name in SERVERS}
    procs = []
    execute = "/api/v1/servers/box/commands/execute"
    body = {"command": "echo hi", "action_type": "t_hi"}
    variants = {}
    for name, port in ports.items():
        variants[f"{name}: 401 (no key)"] = (
            lambda p=port: request(p, "GET", "/api/v1/servers/"),
            args.runs,
        )
        variants[f"{name}: POST .../execute"] = (
            lambda p=port: request(p, "POST", execute, key, body), args.runs)  # fmt: skip
    try:
        for name, command in SERVERS.items():
            log = (work / f"{name}.log").open("wb")
            procs.append(subprocess.Popen(command(ports[name]), cwd=ROOT, env=env, stdout=log,
                                          stderr=log))  # fmt: skip
        for port in ports.values():
            wait_for_http(f"http://127.0.0.1:{port}/api/schema/")
        samples = interleaved(variants, args.rounds)
    finally:
        for proc in procs:
            terminate(proc)
        daemon.stop()

    print(f"`echo hi` via OpenSSH sshd on 127.0.0.1, {os.cpu_count()} CPUs, embedded profile")
    print(f"{'variant':34} {'n':>5} {'median ms':>10} {'p95 ms':>8}")
    for name, values in samples.items():
        median, p95 = summary(values)
        print(f"{name:34} {len(values):5d} {median:10.2f} {p95:8.2f}")


if __name__ == "__main__":
    main()
