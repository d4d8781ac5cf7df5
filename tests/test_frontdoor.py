"""The front door at `/`: links for everyone; counts and the last executions for staff.

Executions shown are real: run on a real OpenSSH sshd or refused by the whitelist,
through the API, as a client would.
"""

import html

import pytest
import yaml
from django.contrib.auth.models import Permission, User
from django.test import Client

from commands.models import AllowedCommand, Execution, Server

pytestmark = pytest.mark.django_db

LINKS = ('href="/api/docs"', 'href="/api/redoc/"', 'href="/admin/"')
HOSTILE = "<script>alert('x')</script> & \"<b>bold</b>\""


def execute(api_client, server_id: int, command: str, action_type: str):
    return api_client.post(
        f"/api/v1/servers/{server_id}/commands/execute",
        {"command": command, "action_type": action_type},
        format="json",
    )


def staff_user(*permissions: str) -> User:
    user = User.objects.create_user("operator", password="pw-for-tests-only", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=permissions))
    return user


def test_anonymous_visitors_see_the_links_only(client):
    Server.objects.create(name="nas", hostname="10.0.0.5")
    Execution.objects.create(server_name="nas", action_type="uptime", command="uptime-secret")

    response = client.get("/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    for link in LINKS:
        assert link in response.text
    assert 'id="counts"' not in response.text
    assert 'id="executions"' not in response.text
    assert "uptime-secret" not in response.text
    assert "nas" not in response.text
    assert "Log in" in response.text


def test_a_logged_in_user_who_is_not_staff_sees_the_links_only(client):
    user = User.objects.create_user("someone", password="pw-for-tests-only")
    client.force_login(user)
    Execution.objects.create(server_name="nas", action_type="uptime", command="uptime-secret")

    response = client.get("/")

    assert all(link in response.text for link in LINKS)
    assert 'id="counts"' not in response.text
    assert "uptime-secret" not in response.text


@pytest.mark.django_db(transaction=True)  # the runner thread closes the row
def test_staff_see_counts_and_the_last_ten_executions_newest_first(
    admin_client, api_client, sshd, make_server, make_rule
):
    server = make_server(sshd)
    Server.objects.create(name="spare", hostname="10.0.0.9")
    make_rule("t_echo", "echo {word}", word="^[a-z0-9]{1,16}$")
    for number in range(8):  # older rows (the API's rate limit is 10 a minute)
        Execution.objects.create(server_name="old", action_type="t_echo", command=f"old{number}")
    for number in range(3):
        assert execute(api_client, server.pk, f"echo run{number}", "t_echo").status_code == 200
    assert execute(api_client, server.pk, "echo NOPE", "t_echo").status_code == 400

    response = admin_client.get("/")

    assert response.status_code == 200
    assert all(link in response.text for link in LINKS)
    rules = AllowedCommand.objects.count()
    assert '<strong id="server-count">2</strong> servers' in response.text
    plural = "" if rules == 1 else "s"  # the default rules are gone after a flush
    assert f'<strong id="rule-count">{rules}</strong> rule{plural}' in response.text
    table = response.text.split('id="executions"', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == 1 + 10  # the header and ten executions
    # Newest first: the refused attempt, the three runs, then old7 ... old2.
    order = ["echo NOPE", "echo run2", "echo run1", "echo run0", "old7", "old2"]
    assert [table.index(f"<code>{command}</code>") for command in order] == sorted(
        table.index(f"<code>{command}</code>") for command in order
    )
    assert "<code>old1</code>" not in table and "<code>old0</code>" not in table
    assert "<td>rejected</td>" in table and "<td>succeeded (0)</td>" in table
    assert f"<td>{server.name}</td>" in table
    assert "<td>t_echo</td>" in table
    assert "<td>tests</td>" in table  # who: the API key's name
    newest = Execution.objects.order_by("-created_at", "-id").first()
    assert newest.command == "echo NOPE"
    assert f'href="/admin/commands/execution/{newest.pk}/change/"' in table


def test_a_hostile_command_in_the_list_is_escaped(admin_client, api_client, sshd, make_server):
    server = make_server(sshd)
    refused = execute(api_client, server.pk, HOSTILE, "uptime")
    assert refused.status_code == 400
    assert Execution.objects.filter(command=HOSTILE).exists()

    response = admin_client.get("/")

    assert "<script>alert" not in response.text
    assert "<b>bold</b>" not in response.text
    assert html.escape(HOSTILE) in response.text
    cell = response.text.split("<code>", 1)[1].split("</code>", 1)[0]
    assert html.unescape(cell) == HOSTILE


def test_any_staff_login_sees_the_executions_as_the_api_shows_them(client):
    # Staff without any permission read GET executions/ too; the page shows no more.
    client.force_login(staff_user())
    Execution.objects.create(server_name="nas", action_type="uptime", command="uptime-mine")

    response = client.get("/")

    assert 'id="server-count"' in response.text
    assert "uptime-mine" in response.text


def test_only_get_and_head_are_allowed(admin_client):
    strict = Client(enforce_csrf_checks=True)  # as a browser or curl: no CSRF exemption
    for method in ("post", "put", "patch", "delete"):
        response = getattr(strict, method)("/")
        assert response.status_code == 405, method
        assert response["Allow"] == "GET, HEAD"
    assert admin_client.post("/").status_code == 405
    assert strict.head("/").status_code == 200


def test_other_unknown_paths_still_get_the_json_404(client):
    assert client.get("/api/nope").json() == {
        "detail": "No such API endpoint.",
        "code": "not_found",
    }
    assert client.get("/api/v1/nope/").status_code == 404
    assert client.get("/nope").status_code == 404


def test_the_front_door_is_not_in_the_openapi_schema(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    paths = yaml.safe_load(response.content)["paths"]

    assert "/" not in paths
    assert all(path.startswith("/api/v1/") for path in paths)
