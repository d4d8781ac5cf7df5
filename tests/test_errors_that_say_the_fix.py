"""Errors that say the fix: requests, logs, rules, status lines, and the test services.

Everything goes through the public interface (HTTP on a real sshd, manage.py, daphne,
the Makefile's scripts); nothing here mocks what it checks.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from commands.models import AllowedCommand, ApiKey, Execution
from tests.live import Daphne, call, set_up
from tests.sshd import SSHDaemon, keygen, public_key, wait_for

ROOT = Path(__file__).resolve().parent.parent
WORD = "^[a-z]{1,10}$"


def url(server) -> str:
    return f"/api/v1/servers/{server.pk}/commands/execute"


def post(client, server, command, action_type):
    return client.post(url(server), {"command": command, "action_type": action_type}, "json")


def allow(*args: str) -> str:
    out = StringIO()
    call_command("allowcommand", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def server(sshd, make_server, make_rule):
    make_rule("t_echo", "echo {word}", word=WORD)
    return make_server(sshd)


# --- 8. requests ----------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain"])
def test_a_body_that_is_not_declared_json_is_a_415_naming_the_header(
    api_client, server, sshd, content_type
):
    # What `curl -d '{...}'` without -H 'Content-Type: application/json' sends.
    body = '{"command": "echo hi", "action_type": "t_echo"}'
    response = api_client.post(url(server), data=body, content_type=content_type)
    assert response.status_code == 415
    answer = response.json()
    assert answer["code"] == "unsupported_media_type"
    assert "`Content-Type: application/json`" in answer["detail"]
    assert "required" not in answer["detail"]
    assert Execution.objects.get().error_code == "unsupported_media_type"
    assert sshd.accepted_connections() == 0


@pytest.mark.django_db
def test_an_empty_post_says_to_send_json_and_where_the_action_types_are(api_client, server):
    response = api_client.post(url(server))
    assert response.status_code == 400
    answer = response.json()
    assert "`Content-Type: application/json`" in answer["detail"]
    assert "GET /api/v1/servers/{id}/commands/" in answer["errors"]["action_type"][0]


@pytest.mark.django_db
def test_an_unknown_action_type_lists_the_ones_usable_on_that_server(
    api_client, server, make_rule, make_server, sshd_factory
):
    elsewhere = make_server(sshd_factory(), name="elsewhere")
    make_rule("t_only_elsewhere", "uptime", servers=[elsewhere])
    response = post(api_client, server, "reboot", "reboot_now")
    assert response.status_code == 400
    answer = response.json()
    assert answer["code"] == "not_whitelisted"
    listed = api_client.get(f"/api/v1/servers/{server.pk}/commands/").json()
    usable = [rule["action_type"] for rule in listed]
    assert "t_echo" in usable
    assert f"Action types usable there: {', '.join(usable)} " in answer["detail"]
    assert "t_only_elsewhere" not in answer["detail"]
    assert f"GET /api/v1/servers/{server.pk}/commands/" in answer["detail"]


@pytest.mark.django_db
def test_a_bearer_token_is_told_which_headers_carry_the_key(server):
    _, raw = ApiKey.objects.create_key(name="frontend")
    response = APIClient().get("/api/v1/servers/", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 401
    answer = response.json()
    assert answer["code"] == "authentication_failed"
    assert "`Authorization: Api-Key <key>`" in answer["detail"]
    assert "`X-API-Key: <key>`" in answer["detail"]
    assert raw not in answer["detail"]
    assert response["WWW-Authenticate"] == "Api-Key"


@pytest.mark.django_db(transaction=True)  # the runner thread closes the row
def test_an_x_api_key_counts_beside_another_authorization_header(server):
    _, raw = ApiKey.objects.create_key(name="behind-basic-auth")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Basic cHJveHk6cGFzcw==", HTTP_X_API_KEY=raw)
    assert client.get("/api/v1/servers/").status_code == 200
    response = post(client, server, "echo hi", "t_echo")
    assert (response.status_code, response.json()["stdout"]) == (200, "hi\n")


@pytest.mark.django_db
def test_a_logged_in_admin_behind_a_basic_auth_proxy_still_gets_in():
    admin = get_user_model().objects.create_user("ada", password="pw-0123456789", is_staff=True)
    client = APIClient()
    client.force_login(admin)
    response = client.get("/api/v1/servers/", HTTP_AUTHORIZATION="Basic cHJveHk6cGFzcw==")
    assert response.status_code == 200


# --- 9. logs -----------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)  # the runner thread closes the row
@pytest.mark.parametrize("failure", ["host_key_unknown", "ssh_auth_failed", "ssh_connect_failed"])
def test_an_ssh_configuration_failure_logs_one_warning_and_no_django_error(
    api_client, sshd, make_server, make_rule, other_client_key, caplog, failure
):
    make_rule("t_echo", "echo {word}", word=WORD)
    changes = {
        "host_key_unknown": {"host_key": ""},
        "ssh_auth_failed": {"key_file": str(other_client_key)},
        "ssh_connect_failed": {},
    }[failure]
    nas = make_server(sshd, name="nas", **changes)
    if failure == "ssh_connect_failed":
        sshd.stop()
    caplog.set_level(logging.DEBUG)
    response = post(api_client, nas, "echo hi", "t_echo")
    # A set-up problem is a 424 "fix the server record"; a server that is down stays 5xx.
    status = 500 if failure == "ssh_connect_failed" else 424
    assert (response.status_code, response.json()["code"]) == (status, failure)
    assert not [r for r in caplog.records if r.name == "django.request"]
    ours = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.levelname) for r in ours] == [("commands.api.handlers", "WARNING")]
    line = ours[0].getMessage()
    assert line.startswith(f"{failure} on server nas (execution {response.json()['execution_id']})")
    assert str(other_client_key) not in line and "id_" not in line


@pytest.mark.django_db(transaction=True)  # the runner thread closes the row
def test_a_changed_host_key_is_a_424_logged_as_one_error_line(
    api_client, sshd, make_server, make_rule, caplog, tmp_path
):
    make_rule("t_echo", "echo {word}", word=WORD)
    other_host_key = public_key(keygen(tmp_path / "other_host_key", "host"))
    nas = make_server(sshd, name="nas", host_key=other_host_key)
    caplog.set_level(logging.INFO)
    response = post(api_client, nas, "echo hi", "t_echo")
    assert (response.status_code, response.json()["code"]) == (424, "host_key_mismatch")
    assert not [r for r in caplog.records if r.name == "django.request"]
    ours = [r for r in caplog.records if r.levelno >= logging.WARNING]
    # A possible machine in the middle: worth an ERROR, even as a 4xx.
    assert [(r.name, r.levelname) for r in ours] == [("commands.api.handlers", "ERROR")]
    assert ours[0].getMessage().startswith("host_key_mismatch on server nas (execution ")


# --- 10. rules ---------------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("template", "syntax"),
    [
        ("ps aux | grep x", "'|'"),
        ("apt-get update && apt-get -y upgrade", "'&&'"),
        ("true || reboot", "'||'"),
        ("uptime; reboot", "';'"),
        ("sleep 100 &", "'&'"),
        ("df -h > /tmp/df", "'>'"),
        ("wc -l < /etc/passwd", "'<'"),
        ("echo $(hostname)", "'$('"),
        ('echo "$(hostname)"', "'$('"),
        ("echo `hostname`", "'`'"),
        ("echo $HOME", "'$HOME'"),
    ],
)
def test_a_template_with_shell_syntax_is_refused_with_the_sh_c_form(template, syntax):
    with pytest.raises(CommandError) as refused:
        allow("t_shell", template)
    message = str(refused.value)
    assert f"shell operator {syntax}" in message or f"shell expansion {syntax}" in message
    assert "sh -c '" in message
    assert not AllowedCommand.objects.filter(action_type="t_shell").exists()


@pytest.mark.django_db(transaction=True)  # the runner thread closes the row
def test_the_suggested_sh_c_form_saves_and_runs_with_its_parameter(api_client, server):
    with pytest.raises(CommandError) as refused:
        allow("t_shout", "echo {word} | tr a-z A-Z", "--param", f"word={WORD}")
    fix = re.search(r"one `sh -c` script: (.*) \(or quote it", str(refused.value)).group(1)
    assert fix == "sh -c 'echo \"$1\" | tr a-z A-Z' sh {word}"
    allow("t_shout", fix, "--param", f"word={WORD}")
    response = post(api_client, server, "sh -c 'echo \"$1\" | tr a-z A-Z' sh hello", "t_shout")
    assert (response.status_code, response.json()["stdout"]) == (200, "HELLO\n")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "template",
    [
        "grep 'a|b' /etc/hostname",  # quoted: the program gets it, as in a shell
        "echo '$(hostname)' \\; \\&\\&",
        "sh -c 'uptime; df -h > /dev/null && echo \"$(hostname)\"'",
        "bash -o pipefail -c 'ps aux | grep -c sshd'",
        "journalctl --vacuum-time=7d",
    ],
)
def test_quoted_shell_syntax_and_sh_c_scripts_are_accepted(template):
    assert "Created rule t_ok (enabled)" in allow("t_ok", template)


@pytest.mark.django_db
def test_every_default_rule_still_passes_the_checks():
    defaults = AllowedCommand.objects.all()
    assert defaults.filter(action_type="apply_updates").exists()
    for rule in defaults:
        rule.full_clean()


@pytest.mark.django_db
def test_a_one_token_rule_says_1_token(api_client, server):
    allow("t_uptime", "uptime")
    response = post(api_client, server, "uptime -p", "t_uptime")
    assert response.json()["code"] == "not_whitelisted"
    assert "expects 1 token but the command has 2" in response.json()["detail"]


@pytest.mark.django_db
def test_a_missing_pattern_is_explained_in_the_form_of_where_it_came_from():
    with pytest.raises(CommandError) as refused:
        allow("ping_host", "ping -c 1 {host}")
    assert "add --param 'host=<regex>'" in str(refused.value)
    assert '"host": "<regex>"' not in str(refused.value)
    rule = AllowedCommand(action_type="ping_host", template="ping -c 1 {host}", parameters={})
    with pytest.raises(ValidationError) as in_the_admin:
        rule.full_clean()
    assert 'add "host": "<regex>"' in " ".join(in_the_admin.value.messages)


# --- 11. small things ----------------------------------------------------------------------
def test_readme_step_5_explains_every_status():
    readme = (ROOT / "README.md").read_text()
    step = readme[readme.index("# 5. The audit trail") :].split("```", 1)[0]
    assert {status for status in Execution.Status.values if status not in step} == set()
    assert "status=error" in step  # e.g. ?server=nas&status=error


def raw_post(port: int, path: str, key: str, body: bytes) -> bytes:
    """The status line of one HTTP/1.1 request, as sent on the wire."""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(request)
        received = b""
        while b"\r\n" not in received:
            chunk = conn.recv(4096)
            if not chunk:
                break
            received += chunk
    return received.split(b"\r\n", 1)[0]


def test_daphne_sends_reason_phrases_and_logs_a_down_server_as_one_warning(tmp_path, client_key):
    daemon = SSHDaemon(workdir=tmp_path / "sshd", authorized_keys=[public_key(client_key)])
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_SECRET_KEY": "tests-only",
        "HOMELAB_EXECUTE_RATE": "1/min",
    }
    env.pop("REDIS_URL", None)
    served = None
    try:
        key, server_id = set_up(env, daemon.start(), client_key)
        daemon.stop()  # sshd down: a configuration failure, then the quota is used up
        served = Daphne(env=env, log=tmp_path / "daphne.log").start()
        path = f"/api/v1/servers/{server_id}/commands/execute"
        status, _, body = call(
            "POST", served.base + path, key, {"command": "echo hi", "action_type": "t_echo"}
        )
        assert (status, body["code"]) == (500, "ssh_connect_failed")
        line = raw_post(served.port, path, key, b'{"command": "uptime", "action_type": "uptime"}')
        assert line == b"HTTP/1.1 429 Too Many Requests"
    finally:
        if served is not None:
            served.stop()
        daemon.stop()
    log = (tmp_path / "daphne.log").read_text()
    assert "WARNING commands.api.handlers ssh_connect_failed on server box" in log
    assert "Internal Server Error" not in log


# --- 7. make test's services ---------------------------------------------------------------
ENSURE = str(ROOT / "scripts" / "ensure-services")


def test_ensure_services_is_a_quiet_no_op_when_both_answer():
    result = subprocess.run([ENSURE], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_ensure_services_leaves_services_elsewhere_alone():
    env = {
        **os.environ,
        "HOMELAB_TEST_POSTGRES_URL": "postgres://postgres@192.0.2.1:5432/postgres",
        "HOMELAB_TEST_REDIS_URL": "redis://127.0.0.1:6390/15",
    }
    result = subprocess.run([ENSURE], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "not the local default; leaving PostgreSQL alone" in result.stdout
    assert "not the local default; leaving Redis alone" in result.stdout


def test_ensure_services_starts_redis_where_none_answers():
    # A network namespace of its own has a loopback with nothing on 6379, so the start
    # path runs for real without touching the machine's Redis; that one is stopped by PID.
    script = (
        'ip link set lo up && "$0" && '
        "redis-cli -h 127.0.0.1 -p 6379 info server | grep '^process_id:'"
    )
    env = {**os.environ, "HOMELAB_TEST_POSTGRES_URL": "postgres://postgres@192.0.2.1/postgres"}
    result = subprocess.run(
        ["unshare", "--net", "bash", "-c", script, ENSURE],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    found = re.search(r"^process_id:(\d+)", result.stdout, re.MULTILINE)
    pid = int(found.group(1)) if found else None
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "starting redis-server on 127.0.0.1:6379" in result.stdout
        assert pid is not None
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            assert wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=10)
