"""Helpers for the live-execution tests: a real ASGI server, HTTP calls and a WebSocket client.

Everything goes through the public interface: management commands set the service up,
daphne serves it, `websockets` (a real client library) follows the streams.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.sshd import free_port, terminate

ASGI_APP = "homelab.asgi:application"
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


COUNT = "sh -c 'for i in 1 2 3; do echo $i; sleep 1; done'"
NOISY = "sh -c 'echo started; sleep 1; yes x | head -c 300000; echo done'"
# 30 lines of 10,000 x (yes prints "x\n"), 0.1 s apart: still printing 1.5 s in.
TRICKLE = (
    'sh -c \'echo started; for i in $(seq 30); do yes x | head -c 20000 | tr -d "\\n"; '
    "echo; sleep 0.1; done; echo done'"
)


def manage(env: dict, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"manage.py {args[0]} failed:\n{result.stderr}"
    return result.stdout


def set_up(env: dict, daemon, key_file: Path, name: str = "box") -> tuple[str, int]:
    """Migrate, an API key, a pinned server and the test rules; (raw key, server id)."""
    manage(env, "migrate", "--noinput")
    key = manage(env, "createapikey", f"live-{name}").strip().splitlines()[-1]
    out = manage(env, "addserver", name, daemon.host, "--port", str(daemon.port),
                 "--user", daemon.username, "--key-file", str(key_file))  # fmt: skip
    manage(env, "trusthost", name, "--yes")
    manage(env, "allowcommand", "t_count", COUNT)
    manage(env, "allowcommand", "t_nap", "sleep {s}", "--param",
           r"s=^[0-9]{1,3}\.[0-9]{1,12}$", "--timeout", "120")  # fmt: skip
    manage(env, "allowcommand", "t_echo", "echo {word}", "--param", "word=^[a-z]{1,10}$")
    manage(env, "allowcommand", "t_noisy", NOISY)
    manage(env, "allowcommand", "t_trickle", TRICKLE)
    server_id = server_id_from(out, name, env)
    return key, server_id


def server_id_from(addserver_output: str, name: str, env: dict) -> int:
    code = (
        "import django; django.setup(); from commands.models import Server; "
        f"print(Server.objects.get(name={name!r}).pk)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "homelab.settings"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(result.stdout.strip().splitlines()[-1])


@dataclass
class Daphne:
    """One daphne process serving the app on a free loopback port; stopped by its PID."""

    env: dict
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> Daphne:
        out = self.log.open("ab")
        self.process = subprocess.Popen(
            [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(self.port), ASGI_APP],
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=out,
        )
        out.close()
        wait_for_http(f"{self.base}/api/schema/")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            terminate(self.process)


def make_run(env: dict, log: Path) -> tuple[subprocess.Popen, int]:
    """`make run` on a free port, once it serves. In a session of its own, as a terminal
    would run it, so the whole tree (make, daphne) is signalled and stopped by the
    leader's PID (os.killpg / terminate(group=True))."""
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["make", "run", f"PORT={port}"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/api/schema/", timeout=120)
    except BaseException:
        terminate(proc, group=True)
        raise
    return proc, port


def wait_for_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def call(method: str, url: str, key: str | None = None, body: dict | None = None):
    """(status, headers, JSON body) of one HTTP request."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Api-Key {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=90) as response:
            return response.status, response.headers, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read() or b"null")


def start(server: Daphne, key: str, server_id: int, command: str, action: str) -> int:
    """Start a command with wait=false through server; its execution id."""
    status, headers, body = call(
        "POST",
        f"{server.base}/api/v1/servers/{server_id}/commands/execute",
        key,
        {"command": command, "action_type": action, "wait": False},
    )
    assert status == 202, body
    assert headers["Location"] == f"/api/v1/executions/{body['execution_id']}/"
    return body["execution_id"]


@dataclass
class Received:
    frames: list[dict]
    times: list[float]
    close_code: int | None


def follow(url: str, headers: dict | None = None, *, limit: int | None = None, timeout=60):
    """Read frames (with arrival times) until the server closes, or `limit` frames."""
    frames, times, code = [], [], None
    with connect(url, additional_headers=headers or {}, open_timeout=10) as socket:
        try:
            while limit is None or len(frames) < limit:
                frames.append(json.loads(socket.recv(timeout=timeout)))
                times.append(time.monotonic())
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
    return Received(frames, times, code)


def output_of(frames: list[dict], stream: str = "stdout") -> str:
    return "".join(f["data"] for f in frames if f["type"] == "output" and f["stream"] == stream)


def key_headers(key: str) -> dict:
    return {"Authorization": f"Api-Key {key}"}
