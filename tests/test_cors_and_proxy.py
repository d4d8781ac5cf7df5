"""A browser app on another origin (CORS), and the service behind a TLS reverse proxy.

Settings are read once, at import, from the environment: the behaviour is tested on a real
daphne started with the production environment docs/deployment.md documents, and the
settings themselves by running manage.py (or importing them) in a child process.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.sync.client import connect

from commands.api.clientip import client_ip
from homelab.settings import dev_secret_key
from tests.live import Daphne, manage, set_up
from tests.proxy import (
    ADMIN_PASSWORD,
    FRONTEND,
    ROOT,
    Answer,
    admin_login,
    audit_row,
    clean_env,
    documented_env,
    follow_socket,
    send,
)
from tests.sshd import SSHDaemon, public_key


# --- a daphne with the documented production environment -----------------------------------
@dataclass
class Stack:
    server: Daphne
    key: str
    server_id: int
    db_path: Path

    def send(self, method, path, headers=None, body=None, **options) -> Answer:
        return send(self.server.port, method, path, headers, body, **options)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, client_key):
    tmp = tmp_path_factory.mktemp("cors-proxy")
    daemon = SSHDaemon(workdir=tmp / "sshd", authorized_keys=[public_key(client_key)]).start()
    documented = documented_env()
    env = {
        **clean_env(),
        **documented,
        # 127.0.0.1 too: the readiness probe and these tests call daphne directly.
        "DJANGO_ALLOWED_HOSTS": documented["DJANGO_ALLOWED_HOSTS"] + ",127.0.0.1",
        "HOMELAB_CORS_ALLOWED_ORIGINS": FRONTEND,
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "HOMELAB_SSH_KEY_FILE": str(client_key),
        "HOMELAB_EXECUTE_RATE": "1000/min",
    }
    server = Daphne(env=env, log=tmp / "daphne.log")
    try:
        key, server_id = set_up(env, daemon, client_key)
        manage(
            {**env, "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD},
            "createsuperuser",
            "--noinput",
            "--username",
            "admin",
            "--email",
            "a@x.example",
        )
        server.start()
        yield Stack(server, key, server_id, tmp / "db.sqlite3")
    finally:
        server.stop()
        daemon.stop()


def execute_path(stack: Stack) -> str:
    return f"/api/v1/servers/{stack.server_id}/commands/execute"


def preflight(stack: Stack, path: str, origin: str) -> Answer:
    return stack.send(
        "OPTIONS",
        path,
        {
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key",
        },
    )


def words(header: str | None) -> set[str]:
    return {item.strip().lower() for item in (header or "").split(",") if item.strip()}


# --- CORS -------------------------------------------------------------------------------------
def test_a_preflight_for_execute_from_an_allowed_origin_succeeds_without_a_key(stack):
    answer = preflight(stack, execute_path(stack), FRONTEND)

    assert answer.status == 200  # answered before authentication: no 401
    assert answer.headers["Access-Control-Allow-Origin"] == FRONTEND
    assert "post" in words(answer.headers["Access-Control-Allow-Methods"])
    assert {"x-api-key", "content-type", "authorization"} <= words(
        answer.headers["Access-Control-Allow-Headers"]
    )
    assert "Access-Control-Allow-Credentials" not in answer.headers


def test_a_preflight_from_another_origin_gets_no_cors_headers(stack):
    answer = preflight(stack, execute_path(stack), "http://evil.example")

    assert answer.cors_headers() == []


def test_a_call_from_another_origin_gets_no_cors_headers(stack):
    answer = stack.send(
        "GET", "/api/v1/servers/", {"Origin": "http://localhost:5174", "X-API-Key": stack.key}
    )

    assert answer.status == 200  # the key decides; the browser keeps the answer from the page
    assert answer.cors_headers() == []


def test_responses_to_the_allowed_origin_expose_location_retry_after_and_the_quota(stack):
    body = {"command": "echo hi", "action_type": "t_echo", "wait": False}
    headers = {"Origin": FRONTEND, "X-API-Key": stack.key, "Content-Type": "application/json"}

    answer = stack.send("POST", execute_path(stack), headers, body)

    assert answer.status == 202, answer.body
    assert answer.headers["Access-Control-Allow-Origin"] == FRONTEND
    assert words(answer.headers["Access-Control-Expose-Headers"]) == {
        "retry-after",
        "location",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    }
    assert answer.headers["X-RateLimit-Remaining"].isdigit()
    assert answer.headers["Location"] == f"/api/v1/executions/{answer.json()['execution_id']}/"
    assert "Access-Control-Allow-Credentials" not in answer.headers


def test_an_error_reaches_the_allowed_origin_so_the_page_can_read_it(stack):
    answer = stack.send("GET", "/api/v1/servers/", {"Origin": FRONTEND, "X-API-Key": "nope"})

    assert answer.status == 401
    assert answer.headers["Access-Control-Allow-Origin"] == FRONTEND
    assert answer.json()["code"] == "authentication_failed"


def test_the_websocket_ticket_flow_works_from_the_allowed_origin(stack):
    headers = {"Origin": FRONTEND, "X-API-Key": stack.key, "Content-Type": "application/json"}
    started = stack.send(
        "POST",
        execute_path(stack),
        headers,
        {"command": "echo hello", "action_type": "t_echo", "wait": False},
    )
    ticket_path = f"/api/v1/executions/{started.json()['execution_id']}/stream-ticket"

    asked = preflight(stack, ticket_path, FRONTEND)
    ticket = stack.send("POST", ticket_path, {"Origin": FRONTEND, "X-API-Key": stack.key})
    frames, code = follow_socket(f"{stack.server.ws}{ticket.json()['url']}", origin=FRONTEND)

    assert asked.status == 200 and asked.headers["Access-Control-Allow-Origin"] == FRONTEND
    assert ticket.status == 201 and ticket.headers["Access-Control-Allow-Origin"] == FRONTEND
    output = "".join(f["data"] for f in frames if f["type"] == "output")
    assert (output, frames[-1]["type"], frames[-1]["status"]) == ("hello\n", "result", "succeeded")
    assert code == 1000


# --- behind a TLS proxy -------------------------------------------------------------------
# What nginx (the documented snippet) sends on for a browser at SITE.
PROXY_HEADERS = {
    "Host": "homelab.example",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-For": "203.0.113.9",
}


def test_the_admin_login_through_a_stand_in_proxy_request_gets_in(stack):
    def to_daphne(method, path, headers, body):
        return stack.send(method, path, headers, body)

    page, posted, admin = admin_login(to_daphne, PROXY_HEADERS)

    assert posted.status == 302, posted.body[:500]
    assert posted.headers["Location"] == "/admin/"
    assert admin.status == 200 and b"Site administration" in admin.body
    for cookie in (page.cookies()["csrftoken"], posted.cookies()["sessionid"]):
        assert cookie["secure"] and cookie["httponly"], cookie.OutputString()


@pytest.mark.django_db
def test_without_the_proxy_settings_the_same_login_fails_origin_checking(client, settings):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("admin", "a@x.example", ADMIN_PASSWORD)
    settings.ALLOWED_HOSTS = ["homelab.example"]
    # The defaults: neither HOMELAB_BEHIND_TLS_PROXY nor DJANGO_CSRF_TRUSTED_ORIGINS.
    settings.SECURE_PROXY_SSL_HEADER = None
    settings.CSRF_TRUSTED_ORIGINS = []
    client.handler.enforce_csrf_checks = True

    def to_test_client(method, path, headers, body):
        response = client.generic(
            method, path, body or "", headers=headers, content_type=headers.get("Content-Type", "")
        )
        message = http.client.HTTPMessage()
        for name, value in response.items():
            message[name] = value
        for morsel in response.cookies.values():
            message["Set-Cookie"] = morsel.OutputString()
        return Answer(response.status_code, message, response.content)

    _, posted, admin = admin_login(to_test_client, PROXY_HEADERS)

    assert posted.status == 403  # "Origin checking failed": the bug this setting fixes
    assert "sessionid" not in posted.cookies() and admin.status == 302  # back to the login


def test_the_audit_row_believes_x_forwarded_for_only_from_a_trusted_proxy(stack):
    body = {"command": "echo hi", "action_type": "t_echo"}
    headers = {
        "X-API-Key": stack.key,
        "Content-Type": "application/json",
        "X-Forwarded-For": "198.51.100.7, 203.0.113.9",
    }

    via_proxy = stack.send("POST", execute_path(stack), headers, body)  # from 127.0.0.1: trusted
    direct = stack.send("POST", execute_path(stack), headers, body, source="127.0.0.2")

    assert via_proxy.status == direct.status == 200
    # Right-most untrusted entry: what the client itself wrote (198.51.100.7) never counts.
    assert audit_row(stack.db_path, via_proxy.json()["execution_id"])["client_ip"] == "203.0.113.9"
    assert audit_row(stack.db_path, direct.json()["execution_id"])["client_ip"] == "127.0.0.2"


@pytest.mark.parametrize(
    ("source", "recorded"), [("127.0.0.1", "203.0.113.9"), ("127.0.0.2", "127.0.0.2")]
)
def test_a_socket_records_the_forwarded_client_only_from_a_trusted_proxy(stack, source, recorded):
    url = f"{stack.server.ws}/ws/v1/servers/{stack.server_id}/commands/execute"
    headers = {"X-API-Key": stack.key, "X-Forwarded-For": "203.0.113.9"}
    with connect(url, additional_headers=headers, source_address=(source, 0)) as socket_:
        socket_.send(json.dumps({"command": "echo hi", "action_type": "t_echo"}))
        started = json.loads(socket_.recv(timeout=30))

    assert started["type"] == "started", started
    assert audit_row(stack.db_path, started["execution_id"])["client_ip"] == recorded


@pytest.mark.parametrize(
    ("remote", "forwarded", "expected"),
    [
        ("198.51.100.1", "203.0.113.9", "198.51.100.1"),  # peer not a proxy: header ignored
        ("10.0.0.2", "203.0.113.9", "203.0.113.9"),
        ("10.0.0.2", "6.6.6.6, 203.0.113.9, 10.0.0.3", "203.0.113.9"),  # skips trusted hops
        ("10.0.0.2", "10.0.0.4, 10.0.0.3", "10.0.0.4"),  # all trusted: the farthest
        ("10.0.0.2", "203.0.113.9, not-an-ip", "10.0.0.2"),  # garbage: stop at its writer
        ("10.0.0.2", "[2001:db8::1]:4711", "2001:db8::1"),
        ("10.0.0.2", "203.0.113.9:4711", "203.0.113.9"),
        ("::ffff:10.0.0.2", "203.0.113.9", "203.0.113.9"),  # dual-stack socket
        ("10.0.0.2", "", "10.0.0.2"),
        (None, "203.0.113.9", None),
    ],
)
def test_client_ip_believes_x_forwarded_for_only_past_trusted_proxies(remote, forwarded, expected):
    trusted = [ipaddress.ip_network("10.0.0.0/8")]

    assert client_ip(remote, forwarded, trusted) == expected


# --- the settings ------------------------------------------------------------------------
def manage_py(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_reports_no_issues_with_the_documented_production_env():
    result = manage_py(
        {**clean_env(), **documented_env()}, "check", "--deploy", "--fail-level", "WARNING"
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stderr


def test_without_the_proxy_setting_check_deploy_warns_about_the_cookies():
    env = {**clean_env(), **documented_env(), "HOMELAB_BEHIND_TLS_PROXY": "0"}

    result = manage_py(env, "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode != 0
    assert "SESSION_COOKIE_SECURE" in result.stderr and "CSRF_COOKIE_SECURE" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HOMELAB_CORS_ALLOWED_ORIGINS", "*"),
        ("HOMELAB_CORS_ALLOWED_ORIGINS", "http://localhost:5173,*"),
        ("HOMELAB_CORS_ALLOWED_ORIGINS", "https://*.example.com"),
        ("HOMELAB_CORS_ALLOWED_ORIGINS", "localhost:5173"),
        ("HOMELAB_CORS_ALLOWED_ORIGINS", "http://localhost:5173/"),
        ("DJANGO_CSRF_TRUSTED_ORIGINS", "homelab.example"),
        ("HOMELAB_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("HOMELAB_TRUSTED_PROXIES", "127.0.0.1,proxy.lan"),
        ("HOMELAB_BEHIND_TLS_PROXY", "yes please"),
        ("HOMELAB_HSTS_SECONDS", "a year"),
    ],
)
def test_a_bad_cors_or_proxy_setting_stops_start_up_naming_the_variable(variable, value):
    result = manage_py({**clean_env(), "DJANGO_SECRET_KEY": "x" * 50, variable: value}, "check")

    assert result.returncode != 0
    assert variable in result.stderr


def test_no_origin_is_allowed_by_default_and_listed_ones_are_kept():
    code = "from homelab import settings as s; print(s.CORS_ALLOWED_ORIGINS)"
    env = {**clean_env(), "DJANGO_SECRET_KEY": "x" * 50}

    unset = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    listed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**env, "HOMELAB_CORS_ALLOWED_ORIGINS": f" {FRONTEND} , https://app.example"},
    )

    assert unset.stdout.strip() == "[]"
    assert listed.stdout.strip() == f"['{FRONTEND}', 'https://app.example']"


# --- .dev-secret-key ------------------------------------------------------------------------
def settings_in(folder: Path, env: dict) -> subprocess.CompletedProcess:
    """Import a copy of homelab/settings.py (and the env readers it imports) whose BASE_DIR
    is folder; print SECRET_KEY."""
    (folder / "homelab").mkdir(exist_ok=True)
    (folder / "homelab" / "__init__.py").touch()
    for module in ("settings.py", "env.py"):
        shutil.copy(ROOT / "homelab" / module, folder / "homelab" / module)
    code = "import homelab.settings as s; print(s.SECRET_KEY)"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_settings_read_dev_secret_key_when_the_variable_is_unset(tmp_path):
    (tmp_path / ".dev-secret-key").write_text("  generated-by-make-run\n")

    result = settings_in(tmp_path, clean_env())

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "generated-by-make-run"


def test_the_variable_wins_over_dev_secret_key(tmp_path):
    (tmp_path / ".dev-secret-key").write_text("generated-by-make-run\n")

    result = settings_in(tmp_path, {**clean_env(), "DJANGO_SECRET_KEY": "from-the-env"})

    assert result.stdout.strip() == "from-the-env"


@pytest.mark.parametrize("value", [None, ""])
def test_without_a_key_start_up_is_refused_naming_the_variable(tmp_path, value):
    if value == "":  # set but empty: an unfilled env file, refused even with the file there
        (tmp_path / ".dev-secret-key").write_text("generated-by-make-run\n")
    env = clean_env() if value is None else {**clean_env(), "DJANGO_SECRET_KEY": value}

    result = settings_in(tmp_path, env)

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr


def test_dev_secret_key_is_the_stripped_file_or_nothing(tmp_path):
    (tmp_path / "key").write_text("\n abc \n")

    assert dev_secret_key(tmp_path / "key") == "abc"
    assert dev_secret_key(tmp_path / "missing") == ""
