"""Scoped API keys: limited to servers, to action types, or read-only.

Keys are made with `createapikey` or the admin pages and used over HTTP against a real
sshd; the socket tests run a real daphne set up through manage.py.
"""

from __future__ import annotations

import io
import json
import os
import re

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from commands.models import ApiKey, Execution, Server
from tests.live import COUNT, Daphne, key_headers, manage, set_up
from tests.sshd import SSHDaemon, public_key

ECHO = {"command": "echo hi", "action_type": "t_echo"}


def create_key(*args: str) -> tuple[str, str]:
    """(raw key, what createapikey said on stderr) for `createapikey scoped ARGS`."""
    out, err = io.StringIO(), io.StringIO()
    call_command("createapikey", "scoped", *args, stdout=out, stderr=err)
    return out.getvalue().strip().splitlines()[-1], err.getvalue()


def client_for(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


def execute(client: APIClient, server_ref, body: dict = ECHO):
    return client.post(f"/api/v1/servers/{server_ref}/commands/execute", body, format="json")


def names(response) -> list[str]:
    return [server["name"] for server in response.data["results"]]


def offline_server(name: str) -> Server:
    """A server nothing connects to in these tests (listing and refusals only)."""
    return Server.objects.create(name=name, hostname="127.0.0.1", port=9)


@pytest.fixture
def nas(sshd, make_server, make_rule) -> Server:
    """A real server named nas with t_echo and t_date usable on every server."""
    make_rule("t_echo", "echo {word}", word="^[a-z]{1,10}$")
    make_rule("t_date", "date")
    return make_server(sshd, name="nas")


# --- servers ------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)  # the runner thread closes the row
def test_a_key_limited_to_a_server_sees_and_runs_only_that_server(nas):
    offline_server("web")
    raw, said = create_key("--server", "nas")
    client = client_for(raw)

    assert names(client.get("/api/v1/servers/")) == ["nas"]
    assert client.get("/api/v1/servers/web/").status_code == 404
    assert client.get("/api/v1/servers/web/commands/").status_code == 404
    ran = execute(client, "nas")
    refused = execute(client, "web")

    assert "every action on nas" in said
    assert (ran.status_code, ran.data["stdout"]) == (200, "hi\n")
    assert (refused.status_code, refused.data["code"]) == (403, "key_scope")
    assert "limited to servers nas" in refused.data["detail"]


def test_a_hidden_server_and_a_missing_one_get_the_same_answer(nas):
    web = offline_server("web")
    client = client_for(create_key("--server", "nas")[0])

    answers = [execute(client, ref) for ref in ("web", web.pk, "nowhere", 987654)]

    assert {(a.status_code, a.data["code"]) for a in answers} == {(403, "key_scope")}
    rows = Execution.objects.filter(error_code="key_scope").order_by("id")
    # One row counting all four, and it names no server: the audit trail, which the key
    # can read, must not tell an existing server from a missing one either.
    assert [(r.server_id, r.server_name, r.count) for r in rows] == [(None, "unknown:web", 4)]


def test_a_key_whose_servers_are_all_deleted_reaches_no_server(nas):
    offline_server("web")
    raw, _ = create_key("--server", "nas")
    Server.objects.filter(name="nas").delete()
    client = client_for(raw)

    listed = client.get("/api/v1/servers/")
    refused = execute(client, "web")

    assert names(listed) == []
    assert (refused.status_code, refused.data["code"]) == (403, "key_scope")
    assert "limited to no server" in refused.data["detail"]


def test_an_unknown_server_or_action_is_refused_by_createapikey_with_the_fix(nas):
    with pytest.raises(CommandError, match=r"No server named 'typo'.*addserver"):
        create_key("--server", "typo")
    with pytest.raises(CommandError, match=r"No whitelist rule named 'typo'.*allowcommand"):
        create_key("--action", "typo")
    assert not ApiKey.objects.exists()


# --- action types -------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)  # the runner thread closes the row
def test_a_key_limited_to_an_action_lists_and_runs_only_that_action(nas):
    client = client_for(create_key("--action", "t_echo")[0])

    listed = client.get("/api/v1/servers/nas/commands/")
    ran = execute(client, "nas")
    refused = execute(client, "nas", {"command": "date", "action_type": "t_date"})

    assert [rule["action_type"] for rule in listed.data] == ["t_echo"]
    assert ran.status_code == 200
    assert (refused.status_code, refused.data["code"]) == (403, "key_scope")
    assert "limited to t_echo" in refused.data["detail"]
    row = Execution.objects.get(error_code="key_scope")
    assert (row.status, row.server_name, row.action_type) == ("rejected", "nas", "t_date")


@pytest.mark.django_db(transaction=True)  # the runner thread closes the row
def test_out_of_scope_requests_use_no_quota(nas):
    client = client_for(create_key("--action", "t_echo")[0])
    date = {"command": "date", "action_type": "t_date"}

    refused = [execute(client, "nas", date).status_code for _ in range(12)]  # rate: 10/min
    ran = execute(client, "nas")

    assert refused == [403] * 12
    assert ran.status_code == 200
    assert Execution.objects.get(error_code="key_scope").count == 12


# --- read-only ----------------------------------------------------------------------------
def test_a_read_only_key_lists_but_never_executes_or_cancels(nas, api_client):
    client = client_for(create_key("--read-only")[0])
    started = api_client.post(
        "/api/v1/servers/nas/commands/execute",
        {"command": "echo hi", "action_type": "t_echo", "wait": False},
        format="json",
    )
    execution_id = started.data["execution_id"]

    listed = client.get("/api/v1/servers/")
    rules = client.get("/api/v1/servers/nas/commands/")
    ticket = client.post(f"/api/v1/executions/{execution_id}/stream-ticket")
    refused = execute(client, "nas")
    cancel = client.post(f"/api/v1/executions/{execution_id}/cancel")

    assert names(listed) == ["nas"] and {"t_echo", "t_date"} <= {
        rule["action_type"] for rule in rules.data
    }
    assert ticket.status_code == 201
    assert (refused.status_code, refused.data["code"]) == (403, "key_scope")
    assert "read-only" in refused.data["detail"]
    assert (cancel.status_code, cancel.data["code"]) == (403, "key_scope")


def test_createapikey_refuses_read_only_with_actions(nas):
    with pytest.raises(CommandError, match="--read-only"):
        create_key("--read-only", "--action", "t_echo")


# --- the admin ----------------------------------------------------------------------------
ADD_URL = "/admin/commands/apikey/add/"


def key_form(**fields) -> dict:
    form = {"name": "from-admin", "all_servers": "", "all_actions": "on", "action_types": "[]"}
    return {**form, **fields}


def test_an_admin_limits_a_key_to_a_server(admin_client, nas):
    web = offline_server("web")

    response = admin_client.post(ADD_URL, key_form(servers=[nas.pk]), follow=True)

    key = ApiKey.objects.get(name="from-admin")
    assert response.status_code == 200
    assert (key.all_servers, list(key.servers.all())) == (False, [nas])
    shown = " ".join(str(message) for message in response.context["messages"])
    raw = re.search(r"is: (\S+)\. Please", shown).group(1)
    assert names(client_for(raw).get("/api/v1/servers/")) == ["nas"]
    assert execute(client_for(raw), web.pk).data["code"] == "key_scope"
    listed = admin_client.get("/admin/commands/apikey/")
    assert "every action on nas" in listed.content.decode()


def test_the_admin_makes_you_choose_every_server_or_selected_ones(admin_client, nas):
    response = admin_client.post(ADD_URL, key_form(all_servers="on", servers=[nas.pk]))

    assert response.status_code == 200  # the form again, with the error
    assert "Choose one: every server" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_the_admin_refuses_action_types_that_are_not_a_list_of_slugs(admin_client, nas):
    form = key_form(all_actions="", action_types='["t_echo", "rm -rf"]')

    response = admin_client.post(ADD_URL, form)

    assert "Give a list of action types" in response.content.decode()
    assert not ApiKey.objects.exists()


# --- over a WebSocket, against a real daphne -------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory, client_key):
    tmp = tmp_path_factory.mktemp("scoped")
    daemon = SSHDaemon(workdir=tmp / "sshd", authorized_keys=[public_key(client_key)]).start()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp / 'live.sqlite3'}",
        "DJANGO_SECRET_KEY": "live-tests-only",
        "HOMELAB_SSH_KEY_FILE": str(client_key),
    }
    env.pop("REDIS_URL", None)
    _, server_id = set_up(env, daemon, client_key)
    echo_only = manage(env, "createapikey", "echo-only", "--action", "t_echo").split()[-1]
    read_only = manage(env, "createapikey", "reader", "--read-only").split()[-1]
    manage(env, "addserver", "elsewhere", "192.0.2.10")  # never contacted
    server = Daphne(env=env, log=tmp / "daphne.log")
    try:
        server.start()
        yield server, server_id, echo_only, read_only
    finally:
        server.stop()
        daemon.stop()


def run_over_socket(server: Daphne, server_id: int, message: dict, key: str):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    frames, code = [], None
    url = f"{server.ws}/ws/v1/servers/{server_id}/commands/execute"
    with connect(url, additional_headers=key_headers(key), open_timeout=10) as socket_:
        try:
            socket_.send(json.dumps(message))
            while True:
                frames.append(json.loads(socket_.recv(timeout=30)))
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
    return frames, code


def test_a_socket_refuses_an_action_outside_the_key_with_key_scope_and_4403(stack):
    server, server_id, echo_only, _ = stack

    refused, code = run_over_socket(
        server, server_id, {"command": COUNT, "action_type": "t_count"}, echo_only
    )
    ran, ran_code = run_over_socket(server, server_id, ECHO, echo_only)

    assert (code, refused[0]["type"], refused[0]["code"]) == (4403, "error", "key_scope")
    assert "limited to t_echo" in refused[0]["detail"]
    assert (ran[0]["type"], ran[-1]["status"], ran_code) == ("started", "succeeded", 1000)


def test_a_socket_refuses_a_read_only_key_with_key_scope_and_4403(stack):
    server, server_id, _, read_only = stack

    refused, code = run_over_socket(server, server_id, ECHO, read_only)

    assert (code, refused[0]["code"]) == (4403, "key_scope")
    assert "read-only" in refused[0]["detail"]


def test_a_server_limited_socket_cannot_tell_a_missing_server_from_one_outside_its_scope(stack):
    server, server_id, _, _ = stack
    key = manage(server.env, "createapikey", "box-only", "--server", "box").split()[-1]
    other = manage(server.env, "createapikey", "elsewhere", "--server", "elsewhere").split()[-1]

    missing, missing_code = run_over_socket(server, 987654, ECHO, key)
    outside, outside_code = run_over_socket(server, server_id, ECHO, other)

    assert (missing_code, missing[0]["code"]) == (4403, "key_scope")
    assert (outside_code, outside[0]["code"]) == (4403, "key_scope")
    # Named as the client named it, never by the name of a server it may not see.
    assert f"on '{server_id}'" in outside[0]["detail"] and "'box'" not in outside[0]["detail"]
    assert "on '987654'" in missing[0]["detail"]


# --- the audit trail ------------------------------------------------------------------------
def test_a_key_limited_to_a_server_reads_only_that_servers_history(nas):
    web = offline_server("web")
    elsewhere = Execution.objects.create(server=web, server_name="web", action_type="t_date")
    here = Execution.objects.create(server=nas, server_name="nas", action_type="t_date")
    raw, _ = create_key("--server", "nas")
    client = client_for(raw)

    listed = [row["id"] for row in client.get("/api/v1/executions/").data["results"]]
    assert execute(client, "web").data["code"] == "key_scope"
    own_refusal = Execution.objects.get(error_code="key_scope").pk  # its own row, no server

    assert here.pk in listed and elsewhere.pk not in listed
    assert client.get(f"/api/v1/executions/{elsewhere.pk}/").status_code == 404
    assert client.post(f"/api/v1/executions/{elsewhere.pk}/stream-ticket").status_code == 404
    assert client.get(f"/api/v1/executions/{own_refusal}/").status_code == 200
    assert client_for(create_key()[0]).get(f"/api/v1/executions/{elsewhere.pk}/").status_code == 200


@pytest.mark.django_db(transaction=True)  # authorize() runs in its own thread and connection
def test_a_key_limited_to_a_server_cannot_stream_anothers_execution(nas):
    from asgiref.sync import async_to_sync

    from commands.live.streaming import authorize

    web = offline_server("web")
    elsewhere = Execution.objects.create(server=web, server_name="web", action_type="t_date")
    here = Execution.objects.create(server=nas, server_name="nas", action_type="t_date")
    raw, _ = create_key("--server", "nas")

    def close_code(execution_id: str):
        headers = [(b"authorization", f"Api-Key {raw}".encode())]
        scope = {"headers": headers, "query_string": b"", "client": ("127.0.0.1", 1)}
        return async_to_sync(authorize)(scope, execution_id)

    assert close_code(str(here.pk)) is None
    assert close_code(str(elsewhere.pk)) == 4403
    assert close_code("9" * 30) == 4403  # no such id: refused the same, never a crash
