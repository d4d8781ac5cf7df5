"""Checking a server: `./manage.py checkserver NAME` and POST /api/v1/servers/{id}/check.

Both entry points run the same check (commands/checks.py) against real sshd daemons: a
good one, then one thing wrong at a time, each stopping the check at its own step with
the fix for it. Then who may call the endpoint, and the command's exit status.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from rest_framework.test import APIClient

from commands import ssh
from commands.checks import STEPS
from commands.models import ApiKey, Execution
from tests.sshd import free_port, public_key, wait_for

ROOT = Path(__file__).resolve().parent.parent
NAMES = [name for name, _ in STEPS]


@dataclass
class Outcome:
    """One check as an entry point showed it: pass/fail/skip per step, the fix, all text."""

    ok: bool
    states: dict[str, str]
    fix: str
    text: str
    code: str | None = None  # the failed step's code, as the entry point showed it

    def stopped_at(self, name: str, code: str) -> None:
        """Assert every step before name passed, name failed with code, and none after it
        ran."""
        at = NAMES.index(name)
        expected = ["pass"] * at + ["fail"] + ["skip"] * (len(NAMES) - at - 1)
        assert [self.states[n] for n in NAMES] == expected, self.text
        assert not self.ok and self.fix, self.text
        assert self.code == code, self.text


def via_cli(server) -> Outcome:
    out = io.StringIO()
    try:
        call_command("checkserver", server.name, stdout=out, no_color=True)
        ok, said = True, ""
    except CommandError as exc:
        assert exc.returncode == 1 and server.name in str(exc)
        ok, said = False, str(exc)
    text = out.getvalue()
    lines = text.splitlines()
    states, fix = {}, ""
    codes = [line.strip().removeprefix("Code: ") for line in lines if "Code: " in line]
    code = codes[0] if codes else None
    assert len(codes) <= 1 and (code is None or f"({code})" in said), text + said
    for name, label in STEPS:
        line = next(line.strip() for line in lines if f" {label} " in line)
        states[name] = {"✓": "pass", "✗": "fail", "-": "skip"}[line[0]]
        if states[name] == "fail":
            at = lines.index(next(x for x in lines if f" {label} " in x))
            # Under the failed step: its code, then its fix.
            assert lines[at + 1].strip() == f"Code: {code}", text
            fix = lines[at + 2].strip().removeprefix("Fix: ")
    assert ("passed every step" in text) == ok, text
    return Outcome(ok, states, fix, text, code)


def via_api(server, client: APIClient | None = None) -> Outcome:
    if client is None:
        _, raw = ApiKey.objects.create_key(name=f"check-{server.pk}")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    response = client.post(f"/api/v1/servers/{server.pk}/check")
    assert response.status_code == 200, response.content
    report = response.json()
    assert report["server"] == server.name
    assert [step["name"] for step in report["steps"]] == NAMES
    states = {
        s["name"]: {True: "pass", False: "fail", None: "skip"}[s["ok"]] for s in report["steps"]
    }
    for step in report["steps"]:
        assert (step["ms"] is None) == (step["ok"] is None)
        assert step["ms"] is None or step["ms"] >= 0
        assert bool(step["fix"]) == (step["ok"] is False)
        assert (step["code"] is not None) == (step["ok"] is False)
    fix = next((s["fix"] for s in report["steps"] if s["ok"] is False), "")
    failed = [s["code"] for s in report["steps"] if s["ok"] is False]
    assert report["code"] == (failed[0] if failed else None)  # the report's is the step's
    return Outcome(report["ok"], states, fix, json.dumps(report), report["code"])


ENTRY_POINTS = {"cli": via_cli, "api": via_api}


@pytest.fixture(params=sorted(ENTRY_POINTS))
def check(request):
    return ENTRY_POINTS[request.param]


@pytest.fixture
def encrypted_key(tmp_path) -> Path:
    path = tmp_path / "id_locked"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "a-passphrase", "-f", str(path)], check=True
    )
    return path


# --- each step, by both entry points ----------------------------------------------------------
@pytest.mark.django_db
def test_a_good_server_passes_every_step_and_the_connection_is_closed(check, sshd, make_server):
    server = make_server(sshd)

    outcome = check(server)

    assert outcome.ok and set(outcome.states.values()) == {"pass"}, outcome.text
    assert outcome.code is None
    host_key = ssh.parse_host_key(sshd.host_key)
    assert f"256 {ssh.fingerprint(host_key)} (ED25519)" in outcome.text
    assert "/timeout" in outcome.text  # where `command -v timeout` found it
    assert sshd.accepted_connections() == 1  # one fresh login, no pooled one kept
    assert wait_for(lambda: not sshd.session_pids(), timeout=5)  # and it was closed


@pytest.mark.django_db
def test_a_key_the_server_does_not_accept_fails_auth_with_the_key_to_add(
    check, sshd, make_server, other_client_key
):
    server = make_server(sshd, key_file=str(other_client_key))

    outcome = check(server)

    outcome.stopped_at("auth", "ssh_auth_failed")
    assert f"~{sshd.username}/.ssh/authorized_keys" in outcome.fix
    assert public_key(other_client_key) in outcome.fix  # the line to add (public half)


@pytest.mark.django_db
def test_a_port_nobody_listens_on_fails_tcp(check, sshd, make_server):
    port = free_port()
    server = make_server(sshd, port=port)

    outcome = check(server)

    outcome.stopped_at("tcp", "ssh_connect_failed")
    assert f"Is sshd running on 127.0.0.1:{port}?" in outcome.fix
    assert "firewall" in outcome.fix


@pytest.mark.django_db
def test_a_changed_host_key_fails_loudly_and_nothing_logs_in(
    check, sshd, sshd_factory, make_server
):
    impostor = sshd_factory()  # its key is pinned: sshd now presents a different one
    server = make_server(sshd, host_key=impostor.host_key)

    outcome = check(server)

    outcome.stopped_at("host_key", "host_key_mismatch")
    assert "HOST KEY CHANGED" in outcome.text
    assert ssh.fingerprint(sshd.host_key) in outcome.text  # what it offers
    assert ssh.fingerprint(impostor.host_key) in outcome.text  # what is pinned
    assert f"trusthost {server.name}" in outcome.fix and "Do not re-pin blindly" in outcome.fix
    assert sshd.accepted_connections() == 0


@pytest.mark.django_db
def test_an_unpinned_host_key_fails_with_its_fingerprint_and_trusthost(check, sshd, make_server):
    server = make_server(sshd, host_key="")

    outcome = check(server)

    outcome.stopped_at("host_key", "host_key_unknown")
    assert ssh.fingerprint(sshd.host_key) in outcome.text
    assert f"./manage.py trusthost {server.name}" in outcome.fix
    assert "Pin host key" in outcome.fix
    assert sshd.accepted_connections() == 0


@pytest.mark.django_db
def test_a_server_without_timeout_on_its_path_fails_the_timeout_step(
    check, sshd_factory, make_server
):
    # The user's shell finds nothing on this PATH; its builtins (`command`, `true`) work.
    bare = sshd_factory(environment={"PATH": "/nonexistent"})
    server = make_server(bare)

    outcome = check(server)

    outcome.stopped_at("timeout", "timeout_missing")
    assert "coreutils" in outcome.fix
    assert bare.accepted_connections() == 1  # it got as far as logging in


@pytest.mark.django_db
def test_a_passphrase_protected_key_fails_key_file_without_leaking_it(
    check, sshd, make_server, encrypted_key
):
    server = make_server(sshd, key_file=str(encrypted_key))

    outcome = check(server)

    outcome.stopped_at("key_file", "ssh_auth_failed")
    assert 'ssh-keygen -p -N ""' in outcome.fix
    assert "passphrase" in outcome.text
    secret = encrypted_key.read_text().splitlines()[1:-1]
    assert not any(line in outcome.text for line in secret)
    assert sshd.accepted_connections() == 0


@pytest.mark.django_db
def test_the_api_never_shows_the_key_path_the_command_does(sshd, make_server, encrypted_key):
    server = make_server(sshd, key_file=str(encrypted_key))

    api, cli = via_api(server), via_cli(server)

    assert str(encrypted_key) not in api.text and "<key file>" in api.fix
    assert f"-f {encrypted_key}" in cli.fix


# --- the command ---------------------------------------------------------------------------------
@pytest.mark.django_db
def test_an_unknown_name_names_addserver_and_the_known_servers(sshd, make_server):
    make_server(sshd, name="nas")

    with pytest.raises(CommandError) as raised:
        call_command("checkserver", "nope", stdout=io.StringIO())

    assert "./manage.py addserver" in str(raised.value)
    assert "known: nas" in str(raised.value)


@pytest.mark.django_db(transaction=True)
def test_the_command_exits_0_when_every_step_passes_and_1_otherwise(sshd, make_server):
    good = make_server(sshd, name="good")
    make_server(sshd, name="closed", port=free_port())
    database = connection.settings_dict["NAME"]
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}"}
    env.pop("REDIS_URL", None)

    def run(name: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", "checkserver", name],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    passed, failed = run(good.name), run("closed")

    assert passed.returncode == 0, passed.stderr
    assert "passed every step" in passed.stdout
    assert failed.returncode == 1
    assert "failed the check at step tcp (ssh_connect_failed)" in failed.stderr
    assert "Code: ssh_connect_failed" in failed.stdout
    assert "Fix: Is sshd running on" in failed.stdout


@pytest.mark.django_db(transaction=True)
def test_a_failed_step_carries_the_code_execute_answers_for_the_same_server(
    api_client,
    sshd,
    sshd_factory,
    make_server,
    make_rule,
    other_client_key,
    encrypted_key,
    monkeypatch,
):
    from commands.quota import ExecuteRateThrottle

    monkeypatch.setattr(ExecuteRateThrottle, "THROTTLE_RATES", {"command-execute": "100/min"})
    impostor = sshd_factory()
    make_rule("t_true", "true")
    servers = {
        "changed": make_server(sshd, name="changed", host_key=impostor.host_key),
        "unpinned": make_server(sshd, name="unpinned", host_key=""),
        "refused": make_server(sshd, name="refused", key_file=str(other_client_key)),
        "locked": make_server(sshd, name="locked", key_file=str(encrypted_key)),
        "closed": make_server(sshd, name="closed", port=free_port()),
    }
    for server in servers.values():
        executed = api_client.post(
            f"/api/v1/servers/{server.pk}/commands/execute",
            {"command": "true", "action_type": "t_true"},
            format="json",
        )
        checked = api_client.post(url(server.pk)).json()
        assert checked["code"] == executed.json()["code"], (server.name, checked)
    assert {name: via_api(server).code for name, server in servers.items()} == {
        "changed": "host_key_mismatch",
        "unpinned": "host_key_unknown",
        "refused": "ssh_auth_failed",
        "locked": "ssh_auth_failed",
        "closed": "ssh_connect_failed",
    }


# --- who may call the endpoint --------------------------------------------------------------------
def url(ref) -> str:
    return f"/api/v1/servers/{ref}/check"


def key_client(**scope) -> tuple[APIClient, ApiKey]:
    servers = scope.pop("servers", None)
    key, raw = ApiKey.objects.create_key(name="scoped", **scope)
    if servers is not None:
        key.all_servers = False
        key.save()
        key.servers.set(servers)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client, key


@pytest.mark.django_db
def test_staff_need_the_execute_permission_to_check(sshd, make_server):
    from django.contrib.auth.models import Permission

    server = make_server(sshd)
    staff = get_user_model().objects.create_user("viewer", password="pw-0123456789", is_staff=True)
    client = APIClient()
    client.force_login(staff)

    refused = client.post(url(server.pk))
    staff.user_permissions.add(Permission.objects.get(codename="execute_command"))
    allowed = via_api(server, client)

    assert (refused.status_code, refused.json()["code"]) == (403, "permission_denied")
    assert allowed.ok
    assert sshd.accepted_connections() == 1  # the refusal opened nothing


@pytest.mark.django_db
def test_a_read_only_key_may_not_check(sshd, make_server):
    server = make_server(sshd)
    client, _ = key_client(read_only=True)

    response = client.post(url(server.pk))

    assert (response.status_code, response.json()["code"]) == (403, "key_scope")
    assert "read-only" in response.json()["detail"]
    assert sshd.accepted_connections() == 0


@pytest.mark.django_db
def test_a_key_limited_to_other_servers_gets_key_scope_whether_or_not_the_server_exists(
    sshd, make_server
):
    mine, other = make_server(sshd, name="mine"), make_server(sshd, name="other")
    client, _ = key_client(servers=[mine])

    for ref in (other.pk, "other", "no-such-server"):
        response = client.post(url(ref))
        assert (response.status_code, response.json()["code"]) == (403, "key_scope"), ref
    assert via_api(mine, client).ok


@pytest.mark.django_db
def test_the_api_does_not_log_in_to_a_disabled_server_but_the_command_does(
    api_client, sshd, make_server
):
    server = make_server(sshd, enabled=False)

    response = api_client.post(url(server.pk))
    assert (response.status_code, response.json()["code"]) == (400, "server_disabled")
    assert sshd.accepted_connections() == 0
    assert via_cli(server).ok  # an admin may check a server before switching it on


@pytest.mark.django_db
def test_an_unknown_server_is_a_404(api_client):
    response = api_client.post(url("no-such-server"))

    assert (response.status_code, response.json()["code"]) == (404, "server_not_found")


@pytest.mark.django_db
def test_a_check_uses_the_execute_quota_and_writes_no_audit_row(
    api_client, sshd, make_server, monkeypatch
):
    from commands.quota import ExecuteRateThrottle

    monkeypatch.setattr(ExecuteRateThrottle, "THROTTLE_RATES", {"command-execute": "1/min"})
    server = make_server(sshd, port=free_port())  # nothing to connect to: a quick check

    first, second = api_client.post(url(server.pk)), api_client.post(url(server.pk))

    assert first.status_code == 200
    assert (second.status_code, second.json()["code"]) == (429, "throttled")
    assert int(second["Retry-After"]) >= 1
    assert not Execution.objects.exists()
