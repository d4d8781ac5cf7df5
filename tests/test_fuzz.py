"""Fuzz: schemathesis against the live app's own /api/schema/, on SQLite and on PostgreSQL.

A real daphne serves the app; schemathesis (pinned in requirements.txt) generates requests
from the schema, NUL bytes and any UTF-8 included, mostly with an API key and some without
(tests/fuzz_hooks.py). Every response must be documented for its operation, match its
schema, and not be a 5xx, except the execute endpoint's documented SSH failures. The
fuzzed server's host key is never pinned, so a command the whitelist lets through ends as
a 424 `host_key_unknown` before anything is contacted (and its port has no listener).

`make test` runs HOMELAB_FUZZ_EXAMPLES=40 per operation (> 500 requests per database);
`make fuzz` runs a deeper pass.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.fuzz_hooks import no_server_error_but_documented_ssh
from tests.live import BIN, ROOT, Daphne, manage
from tests.sshd import free_port
from tests.test_production_profile import database, profile_env  # noqa: F401

EXAMPLES = int(os.environ.get("HOMELAB_FUZZ_EXAMPLES", "40"))
# At least 1,000 generated requests in all: half of that on each database.
MIN_REQUESTS_PER_DATABASE = int(os.environ.get("HOMELAB_FUZZ_MIN_REQUESTS", "500"))
CHECKS = "no_server_error_but_documented_ssh,response_schema_conformance,status_code_conformance"
ACCESS_LINE = re.compile(
    r'^127\.0\.0\.1:\d+ - - \[[^]]*\] "(?P<method>\S+) (?P<path>\S+)" (?P<status>\d{3}) '
)

# Real ids and names for the path's {id} half the time, and whitelisted commands for the
# body, so generated requests get past 404 and 400 to the code behind them.
CONFIG = """
[dictionaries.ids]
values = [1, "box", 2, 3]
[dictionaries.commands]
values = ["uptime", "df -h", "free -m", "uptime; id", "df -h\\u0000",
          "systemctl status --no-pager x"]
[dictionaries.actions]
values = ["uptime", "disk_usage", "memory", "service_status"]
[parameters]
"path.id" = { dictionary = "ids", probability = 0.5 }
"body.command" = { dictionary = "commands", probability = 0.5 }
"body.action_type" = { dictionary = "actions", probability = 0.5 }
"""


@dataclass
class FuzzRun:
    returncode: int
    output: str
    report: dict
    served: Counter  # (path without query, status) -> requests daphne answered

    @property
    def requests(self) -> int:
        return sum(self.served.values())

    def statuses(self) -> Counter:
        counts: Counter = Counter()
        for (_, status), n in self.served.items():
            counts[status] += n
        return counts


def fuzz(env: dict, tmp_path: Path) -> FuzzRun:
    """Set the service up, serve it with daphne and run schemathesis against it."""
    env = {**env, "HOMELAB_EXECUTE_RATE": "100000/min", "HOMELAB_CONNECT_TIMEOUT": "2"}
    manage(env, "migrate", "--noinput")
    key = manage(env, "createapikey", "fuzz").strip().splitlines()[-1]
    # Not pinned, and nothing listens on its port: execute can never reach a shell.
    manage(env, "addserver", "box", "127.0.0.1", "--port", str(free_port()), "--user", "nobody")
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    log = tmp_path / "daphne.log"
    server = Daphne(env=env, log=log).start()
    try:
        result = subprocess.run(
            [str(BIN / "schemathesis"), "--config-file", "schemathesis.toml", "run",
             f"{server.base}/api/schema/", "--checks", CHECKS,
             "--max-examples", str(EXAMPLES), "--generation-deterministic",
             "--generation-allow-x00", "true", "--generation-codec", "utf-8",
             "--workers", "1",
             "--report", "json", "--report-json-path", "report.json", "--no-color"],
            cwd=tmp_path,  # its reports and caches stay out of the checkout
            env={**env, "PYTHONPATH": str(ROOT), "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks",
                 "HOMELAB_FUZZ_API_KEY": key},
            capture_output=True,
            text=True,
            timeout=3600,
        )  # fmt: skip
    finally:
        server.stop()
    report_file = tmp_path / "report.json"
    assert report_file.exists(), f"schemathesis did not run:\n{result.stdout}{result.stderr}"
    report = json.loads(report_file.read_text())
    return FuzzRun(result.returncode, result.stdout + result.stderr, report, served(log))


def served(log: Path) -> Counter:
    """What daphne's access log says it answered, the readiness probes on the schema aside."""
    counts: Counter = Counter()
    for line in log.read_text(errors="replace").splitlines():
        match = ACCESS_LINE.match(line)
        if match and not match["path"].startswith("/api/schema/"):
            counts[(match["path"].split("?", 1)[0], int(match["status"]))] += 1
    return counts


def assert_clean(run: FuzzRun) -> None:
    # The figures docs/security.md quotes (pytest -rP shows them).
    print(f"{run.requests} requests, statuses {dict(run.statuses())}, {run.report['test_cases']}")
    failures = json.dumps(run.report["failures"] + run.report["errors"], indent=1)[:6000]
    assert run.returncode == 0 and run.report["stop_reason"] == "completed", (
        f"schemathesis found problems:\n{failures}\n{run.output[-6000:]}"
    )
    assert run.report["test_cases"]["with_failures"] == 0, failures
    assert run.requests >= MIN_REQUESTS_PER_DATABASE, run.served
    assert run.report["test_cases"]["generated"] >= MIN_REQUESTS_PER_DATABASE / 2
    # Keyed and keyless requests both got through, and execute got as far as SSH.
    statuses = run.statuses()
    assert statuses[200] and statuses[401] and statuses[400], statuses
    server_errors = {where: n for where, n in run.served.items() if where[1] >= 500}
    assert all(path.endswith("/execute") for path, _ in server_errors), server_errors
    # The fuzzed server is not pinned: a command the whitelist lets through ends as 424
    # `host_key_unknown` (fix the server record), before anything is contacted.
    reached_ssh = [where for where in run.served if where[1] == 424]
    assert all(path.endswith("/execute") for path, _ in reached_ssh), reached_ssh
    assert reached_ssh, "no fuzzed command reached the SSH layer"


def test_fuzzing_the_schema_on_sqlite_finds_nothing(client_key, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env |= {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'fuzz.sqlite3'}",
        "DJANGO_SECRET_KEY": "fuzz-sqlite",
        "DJANGO_DEBUG": "0",
        "HOMELAB_SSH_KEY_FILE": str(client_key),
    }
    assert_clean(fuzz(env, tmp_path))


def test_fuzzing_the_schema_on_postgresql_finds_nothing(profile_env, tmp_path):  # noqa: F811
    assert_clean(fuzz(profile_env, tmp_path))


def fake(status: int, body: object, description: str = "SSH failure: `ssh_connect_failed`."):
    response = SimpleNamespace(status_code=status, json=lambda: body)
    responses = {"500": {"description": description}}
    case = SimpleNamespace(
        operation=SimpleNamespace(definition=SimpleNamespace(raw={"responses": responses}))
    )
    return response, case


@pytest.mark.parametrize(
    "status, body",
    [
        (500, {"detail": "Internal server error.", "code": "server_error"}),
        (500, {"detail": "x", "code": "ssh_auth_failed"}),  # an SSH code, not documented here
        (502, "<html>Bad gateway</html>"),
        (503, {"detail": "x", "code": "ssh_connect_failed"}),
    ],
)
def test_the_server_error_check_fails_on_anything_but_a_documented_ssh_500(status, body):
    with pytest.raises(AssertionError):
        no_server_error_but_documented_ssh(None, *fake(status, body))


def test_the_server_error_check_passes_a_documented_ssh_500_and_any_4xx():
    assert (
        no_server_error_but_documented_ssh(None, *fake(500, {"code": "ssh_connect_failed"})) is None
    )
    assert no_server_error_but_documented_ssh(None, *fake(404, {"code": "not_found"})) is None
