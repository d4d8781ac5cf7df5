"""Running and cancelling need commands.execute_command for a session user; reading does not.

In-process API calls against a real sshd, then a real daphne with sessions from a real
admin login for the WebSocket side. API keys are limited by their scopes, not by this.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import sqlite3
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from rest_framework.test import APIClient
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from commands.models import Execution
from commands.requests import Caller
from tests.live import Daphne, follow, manage, output_of, set_up, start
from tests.sshd import SSHDaemon, processes_matching, public_key, wait_for

PASSWORD = "pw-0123456789-perm"
NAP = r"^[0-9]{1,4}\.[0-9]{1,12}$"


def execute(client, server, command="uptime", action_type="t_uptime", **extra):
    return client.post(
        f"/api/v1/servers/{server.pk}/commands/execute",
        {"command": command, "action_type": action_type, **extra},
        format="json",
    )


def logged_in(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def execute_permission() -> Permission:
    return Permission.objects.get(content_type__app_label="commands", codename="execute_command")


@pytest.fixture
def server(sshd, make_server, make_rule):
    # Our own rules: a transactional test empties the tables, default rules included.
    make_rule("t_uptime", "uptime")
    make_rule("t_nap", "sleep {s}", timeout=60, s=NAP)
    return make_server(sshd)


@pytest.fixture
def viewer(db):
    """Staff, without commands.execute_command."""
    return get_user_model().objects.create_user("viewer", password=PASSWORD, is_staff=True)


@pytest.fixture
def operators(db) -> Group:
    group = Group.objects.create(name="operators")
    group.permissions.add(execute_permission())
    return group


# --- HTTP ----------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_staff_without_the_permission_gets_403_on_execute_and_is_audited(sshd, server, viewer):
    response = execute(logged_in(viewer), server)

    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "permission_denied"
    assert "commands.execute_command" in body["detail"]
    row = Execution.objects.get()
    assert (row.status, row.error_code, row.username, row.user) == (
        "rejected",
        "permission_denied",
        "viewer",
        viewer,
    )
    assert sshd.accepted_connections() == 0  # refused before anything reached the server


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("grant", ["group", "user_permissions"])
def test_staff_with_the_permission_runs_uptime(server, viewer, operators, grant):
    if grant == "group":
        viewer.groups.add(operators)
    else:
        viewer.user_permissions.add(execute_permission())

    response = execute(logged_in(viewer), server)

    assert response.status_code == 200, response.json()
    assert response.json()["exit_code"] == 0
    assert "load average" in response.json()["stdout"]
    row = Execution.objects.get(pk=response.json()["execution_id"])
    assert (row.status, row.username) == ("succeeded", "viewer")


@pytest.mark.django_db(transaction=True)
def test_a_superuser_may_execute(server, admin_user):
    response = execute(logged_in(admin_user), server)

    assert response.status_code == 200
    assert "load average" in response.json()["stdout"]


@pytest.mark.django_db(transaction=True)
def test_staff_without_the_permission_can_still_read_everything(server, viewer, api_client):
    done = execute(api_client, server).json()
    client = logged_in(viewer)

    for path in (
        "/api/v1/servers/",
        f"/api/v1/servers/{server.pk}/",
        f"/api/v1/servers/{server.name}/commands/",
        "/api/v1/executions/",
        f"/api/v1/executions/{done['execution_id']}/",
    ):
        assert client.get(path).status_code == 200, path
    listed = client.get("/api/v1/executions/").json()["results"]
    assert [row["id"] for row in listed] == [done["execution_id"]]


@pytest.mark.django_db(transaction=True)
def test_staff_without_the_permission_cannot_cancel_what_a_key_started(
    server, viewer, api_client, marker
):
    started = execute(api_client, server, f"sleep {marker}", "t_nap", wait=False).json()
    url = f"/api/v1/executions/{started['execution_id']}/cancel"
    assert wait_for(lambda: processes_matching(marker), timeout=10)

    refused = logged_in(viewer).post(url)

    assert (refused.status_code, refused.json()["code"]) == (403, "permission_denied")
    assert Execution.objects.get(pk=started["execution_id"]).status == "running"
    assert processes_matching(marker)
    assert api_client.post(url).json()["status"] == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_a_user_who_started_a_command_but_lost_the_permission_cannot_cancel_it(
    server, viewer, operators, marker
):
    viewer.groups.add(operators)
    client = logged_in(viewer)
    started = execute(client, server, f"sleep {marker}", "t_nap", wait=False)
    assert started.status_code == 202
    url = f"/api/v1/executions/{started.json()['execution_id']}/cancel"
    assert wait_for(lambda: processes_matching(marker), timeout=10)

    viewer.groups.remove(operators)
    refused = client.post(url)
    viewer.groups.add(operators)
    accepted = client.post(url)

    assert (refused.status_code, refused.json()["code"]) == (403, "permission_denied")
    assert accepted.status_code == 200 and accepted.json()["status"] == "cancelled"
    assert wait_for(lambda: not processes_matching(marker), timeout=10)


@pytest.mark.django_db(transaction=True)
def test_the_socket_execute_refuses_a_user_without_the_permission_and_audits_it(server, viewer):
    from commands.live import sockets

    who = Caller(None, viewer, "127.0.0.1")

    refused = sockets.start_execution(
        who, str(server.pk), '{"command":"uptime","action_type":"t_uptime"}'
    )

    assert isinstance(refused, sockets.Refusal)
    assert (refused.close_code, refused.frame["code"]) == (4403, "permission_denied")
    row = Execution.objects.get()
    assert (row.status, row.error_code, row.username) == ("rejected", "permission_denied", "viewer")


# --- WebSockets on a real daphne, with sessions from a real admin login ------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory, client_key):
    """sshd, SQLite, daphne; users `viewer` (staff) and `operator` (staff + permission)."""
    tmp = tmp_path_factory.mktemp("perm")
    daemon = SSHDaemon(workdir=tmp / "sshd", authorized_keys=[public_key(client_key)]).start()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp / 'perm.sqlite3'}",
        "DJANGO_SECRET_KEY": "permission-tests-only",
        "HOMELAB_SSH_KEY_FILE": str(client_key),
    }
    env.pop("REDIS_URL", None)
    server = Daphne(env=env, log=tmp / "daphne.log")
    try:
        key, server_id = set_up(env, daemon, client_key)
        manage(env, "shell", "-c", CREATE_USERS)
        server.start()
        yield server, key, server_id, tmp / "perm.sqlite3"
    finally:
        server.stop()
        daemon.stop()


CREATE_USERS = f"""
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
users = get_user_model().objects
users.create_user("viewer", password={PASSWORD!r}, is_staff=True)
operator = users.create_user("operator", password={PASSWORD!r}, is_staff=True)
group = Group.objects.create(name="operators")
group.permissions.add(Permission.objects.get(codename="execute_command"))
operator.groups.add(group)
"""


def login(server: Daphne, username: str) -> str:
    """The session cookie of a real login through the admin's form (CSRF and all)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", "/admin/login/")
        page = conn.getresponse()
        html = page.read().decode()
        csrf = SimpleCookie(page.headers["Set-Cookie"])["csrftoken"].value
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
        form = {"csrfmiddlewaretoken": token, "username": username, "password": PASSWORD}
        conn.request(
            "POST",
            "/admin/login/",
            body=urlencode({**form, "next": "/admin/"}),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": f"csrftoken={csrf}",
                "Origin": server.base,
            },
        )
        posted = conn.getresponse()
        posted.read()
    finally:
        conn.close()
    assert posted.status == 302, f"login of {username} failed ({posted.status})"
    cookies = SimpleCookie()
    for header in posted.headers.get_all("Set-Cookie"):
        cookies.load(header)
    return f"sessionid={cookies['sessionid'].value}"


def browser(server: Daphne, cookie: str) -> dict:
    """What a page of ours sends with a WebSocket handshake: its cookie and its origin."""
    return {"Cookie": cookie, "Origin": server.base}


def rows(db_path) -> int:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT COUNT(*) FROM commands_execution").fetchone()[0]


def execute_socket(server: Daphne, server_id: int, headers: dict, message: dict):
    """Open the one-connection execute socket, send message if it stays open; the frames
    received and the close code."""
    url = f"{server.ws}/ws/v1/servers/{server_id}/commands/execute"
    frames, code = [], None
    with connect(url, additional_headers=headers, open_timeout=10) as socket:
        try:
            socket.send(json.dumps(message))
            while True:
                frames.append(json.loads(socket.recv(timeout=60)))
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
    return frames, code


def test_the_execute_socket_closes_4403_for_staff_without_the_permission(stack):
    server, _, server_id, db_path = stack
    before = rows(db_path)

    frames, code = execute_socket(
        server,
        server_id,
        browser(server, login(server, "viewer")),
        {"command": "uptime", "action_type": "uptime"},
    )

    assert (frames, code) == ([], 4403)
    assert rows(db_path) == before  # nothing ran, nothing was started


def test_the_execute_socket_runs_for_staff_with_the_permission(stack):
    server, _, server_id, _ = stack

    frames, code = execute_socket(
        server,
        server_id,
        browser(server, login(server, "operator")),
        {"command": "uptime", "action_type": "uptime"},
    )

    assert code == 1000
    assert frames[0]["type"] == "started"
    assert (frames[-1]["type"], frames[-1]["status"]) == ("result", "succeeded")
    assert "load average" in output_of(frames)


def test_staff_without_the_permission_still_follows_a_stream_and_reads_over_http(stack):
    server, key, server_id, _ = stack
    execution_id = start(server, key, server_id, "echo hi", "t_echo")
    cookie = login(server, "viewer")

    got = follow(f"{server.ws}/ws/v1/executions/{execution_id}/", browser(server, cookie))

    assert got.close_code == 1000
    assert output_of(got.frames) == "hi\n"
    assert got.frames[-1]["status"] == "succeeded"
    for path in ("/api/v1/servers/", f"/api/v1/executions/{execution_id}/"):
        assert get_with_cookie(server, path, cookie) == 200, path


def get_with_cookie(server: Daphne, path: str, cookie: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Cookie": cookie})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()
