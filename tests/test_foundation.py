"""The base every feature stands on: settings, the test bed, auth, servers, docs."""

import json
import os
import subprocess
import sys
from io import StringIO

import paramiko
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.test import APIClient

from commands import ssh
from commands.models import ApiKey, Server
from tests.sshd import keygen, public_key

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_check(**env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "DJANGO_SECRET_KEY": "x" * 40, **env}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_sshd_fixture_runs_a_real_command(sshd, client_key):
    client = paramiko.SSHClient()
    pinned = ssh.parse_host_key(sshd.host_key)
    client.get_host_keys().add(f"[{sshd.host}]:{sshd.port}", pinned.get_name(), pinned)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        sshd.host,
        port=sshd.port,
        username=sshd.username,
        key_filename=str(client_key),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    try:
        _, stdout, _ = client.exec_command("echo hello-from-sshd; id -un", timeout=10)
        out = stdout.read().decode()
    finally:
        client.close()
    assert out.splitlines() == ["hello-from-sshd", sshd.username]
    assert sshd.accepted_connections() == 1


def test_a_stopped_daemon_refuses_connections(sshd):
    sshd.stop()
    with pytest.raises(ssh.ConnectFailed):
        ssh.fetch_host_key(sshd.host, sshd.port, timeout=2)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HOMELAB_EXECUTE_RATE", "banana"),
        ("HOMELAB_COMMAND_TIMEOUT", "soon"),
        ("HOMELAB_OUTPUT_LIMIT", "-1"),
        ("HOMELAB_RECORD_RETRY_SECONDS", "a while"),
        ("DJANGO_DEBUG", "perhaps"),
        ("DJANGO_LOG_LEVEL", "LOUD"),  # was a ValueError from logging, naming nothing
    ],
)
def test_a_bad_setting_stops_start_up_naming_the_variable(variable, value):
    result = run_check(**{variable: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert variable in result.stderr


def test_start_up_without_a_secret_key_outside_debug_is_refused():
    result = run_check(DJANGO_SECRET_KEY="", DJANGO_DEBUG="0")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


# What a management command's start (`./manage.py --help` included) must not load: the SSH
# layer, DRF's serializers (and the PostgreSQL driver they pull in), Redis and the schema
# generator are most of a start-up; the admin's modules import them where they are used.
STARTUP_SCRIPT = """
import sys, django
django.setup()
from django.core.management import get_commands
assert "runbatch" in get_commands()
heavy = ("paramiko", "rest_framework.serializers", "psycopg", "redis", "drf_spectacular.plumbing")
print(sorted(name for name in heavy if name in sys.modules))
"""


def test_starting_django_loads_no_ssh_drf_redis_or_schema_code():
    # The embedded default (a PostgreSQL DATABASE_URL loads its driver at start, rightly).
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DJANGO_SECRET_KEY="x" * 40, DJANGO_SETTINGS_MODULE="homelab.settings")
    result = subprocess.run(
        [sys.executable, "-c", STARTUP_SCRIPT],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_good_settings_pass_the_checks():
    result = run_check(HOMELAB_EXECUTE_RATE="5/min")
    assert result.returncode == 0, result.stderr


@pytest.mark.django_db
class TestApiKeys:
    def test_createapikey_prints_the_key_alone_on_the_last_line(self):
        out = StringIO()
        call_command("createapikey", "frontend", stdout=out, stderr=StringIO())
        key = out.getvalue().strip().splitlines()[-1]
        stored = ApiKey.objects.get(name="frontend")
        assert key.startswith(stored.prefix + ".")
        assert key not in stored.hashed_key and key != stored.id
        assert ApiKey.objects.get_from_key(key) == stored

    def test_it_accepts_both_header_forms(self):
        _, key = ApiKey.objects.create_key(name="k")
        for headers in ({"HTTP_AUTHORIZATION": f"Api-Key {key}"}, {"HTTP_X_API_KEY": key}):
            response = APIClient().get("/api/v1/servers/", **headers)
            assert response.status_code == 200, response.content
        assert ApiKey.objects.get(name="k").last_used_at is not None

    def test_it_asks_for_a_key_when_none_is_sent(self):
        response = APIClient().get("/api/v1/servers/")
        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"
        assert response["WWW-Authenticate"] == "Api-Key"

    def test_it_rejects_a_revoked_key(self):
        api_key, key = ApiKey.objects.create_key(name="old")
        api_key.revoked = True
        api_key.save()
        response = APIClient().get("/api/v1/servers/", HTTP_X_API_KEY=key)
        assert response.status_code == 401
        assert response.json() == {
            "detail": "Invalid or revoked API key.",
            "code": "authentication_failed",
        }

    def test_it_rejects_a_made_up_key(self):
        _, key = ApiKey.objects.create_key(name="real")
        wrong = key[:-1] + ("y" if key.endswith("x") else "x")
        response = APIClient().get("/api/v1/servers/", HTTP_X_API_KEY=wrong)
        assert response.status_code == 401

    def test_a_logged_in_non_staff_user_is_forbidden(self):
        user = get_user_model().objects.create_user("bob", password="pw-123456789")
        client = APIClient()
        client.force_login(user)
        response = client.get("/api/v1/servers/")
        assert response.status_code == 403
        assert response.json()["code"] == "permission_denied"


@pytest.mark.django_db
def test_servers_are_listed_without_any_secret(api_client):
    server = Server.objects.create(
        name="nas",
        hostname="10.0.0.5",
        key_file="/secret/id_ed25519",
        host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake",
    )
    listing = api_client.get("/api/v1/servers/").json()
    detail = api_client.get(f"/api/v1/servers/{server.pk}/").json()
    assert listing["results"] == [detail]
    assert detail == {
        "id": server.pk,
        "name": "nas",
        "hostname": "10.0.0.5",
        "port": 22,
        "username": "root",
        "enabled": True,
        "host_key_pinned": True,
        "tags": [],  # the fleet's labels: never a secret either
    }
    assert api_client.get("/api/v1/servers/999/").status_code == 404


@pytest.mark.django_db
def test_addserver_and_trusthost_pin_the_real_daemon_key(sshd):
    call_command("addserver", "box", sshd.host, "--port", str(sshd.port), stdout=StringIO())
    out = StringIO()
    call_command("trusthost", "box", "--yes", stdout=out)
    server = Server.objects.get(name="box")
    assert server.host_key == sshd.host_key
    fp = subprocess.run(
        ["ssh-keygen", "-lf", str(sshd.host_key_path) + ".pub"], capture_output=True, text=True
    ).stdout.split()[1]
    assert fp in out.getvalue()
    assert ssh.fingerprint(sshd.host_key) == fp


@pytest.mark.django_db
def test_trusthost_pins_a_given_key_without_connecting(tmp_path):
    Server.objects.create(name="far", hostname="192.0.2.1")
    key = public_key(keygen(tmp_path / "k"))
    call_command("trusthost", "far", "--host-key", key, "--yes", stdout=StringIO())
    assert Server.objects.get(name="far").host_key == key


@pytest.mark.django_db
def test_trusthost_refuses_a_malformed_key():
    Server.objects.create(name="far", hostname="192.0.2.1")
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--host-key"):
        call_command("trusthost", "far", "--host-key", "ssh-ed25519 bm90LWEta2V5", "--yes")
    assert Server.objects.get(name="far").host_key == ""


@pytest.mark.django_db
def test_the_docs_are_served_without_any_external_url(api_client):
    client = APIClient()
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    page = client.get("/api/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger-ui" in html
    assert "http://" not in html.replace("http://testserver", "")
    assert "https://" not in html
    redoc = client.get("/api/redoc/")
    assert redoc.status_code == 200
    assert "https://" not in redoc.content.decode()


@pytest.mark.django_db
def test_an_unknown_api_url_is_a_json_404(api_client):
    response = api_client.get("/api/v1/nothing-here/")
    assert response.status_code == 404
    assert response.json() == {"detail": "No such API endpoint.", "code": "not_found"}


def test_a_bad_host_header_on_the_api_is_a_json_400():
    response = APIClient().get("/api/v1/servers/", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"


def test_a_crash_on_the_api_is_a_json_500_without_a_traceback(rf):
    from commands.api.handlers import server_error

    response = server_error(rf.get("/api/v1/servers/"))
    assert response.status_code == 500
    assert json.loads(response.content) == {
        "detail": "Internal server error.",
        "code": "server_error",
    }
    assert b"<html" in server_error(rf.get("/admin/")).content.lower()
