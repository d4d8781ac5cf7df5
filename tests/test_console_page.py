"""A server's admin page (issue 22) and the admin's words (issue 23, item 8), through
Django's test client: the Run panel starts on "Choose a command…" with Run off, the console
sits above the edit form with the server's last executions (status chips, links), the
admin says homelab and /favicon.ico is served. The same pages in a real browser:
tests/test_admin_console.py."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from commands.models import Execution, Server


@pytest.fixture
def server(make_rule) -> Server:
    """A server row and two rules, one flagged: the page is rendered, nothing is run."""
    make_rule("t_plain", "echo plain")
    flagged = make_rule("t_flag", "echo flagged")
    flagged.confirm = True
    flagged.save()
    return Server.objects.create(name="box", hostname="127.0.0.1")


def console_of(page: str) -> dict:
    found = re.search(
        r'<script id="homelab-console" type="application/json">(.*?)</script>', page, re.S
    )
    return json.loads(found.group(1))


@pytest.mark.django_db
def test_the_server_page_starts_on_choose_a_command_with_the_console_above_the_form(
    server, admin_client
):
    page = admin_client.get(reverse("admin:commands_server_change", args=[server.pk])).text

    options = re.findall(r"<option[^>]*>[^<]*</option>", page[page.index('id="run-rule"') :])
    assert options[0] == '<option value="" selected>Choose a command…</option>'
    assert all("selected" not in option for option in options[1:])
    assert re.search(r'<button[^>]*id="run-button"[^>]*disabled', page)
    assert (
        page.index('id="run-console"')
        < page.index('id="server-check"')
        < page.index('id="server_form"')
    )
    assert page.index('id="recent-executions"') < page.index('id="server_form"')
    config = console_of(page)
    assert config["server"] == "box"
    assert config["pin_url"] == reverse("admin:commands_server_pin", args=[server.pk])
    flags = {rule["action_type"]: rule["confirm"] for rule in config["rules"]}
    assert (flags["t_flag"], flags["t_plain"]) == (True, False)


@pytest.mark.django_db
def test_the_server_page_lists_its_last_ten_executions_newest_first_with_chips_and_links(
    server, admin_client
):
    other = Server.objects.create(name="other", hostname="127.0.0.1")
    statuses = ["succeeded", "failed", "error", "rejected", "running", "cancelled"] * 2
    rows = Execution.objects.bulk_create(
        Execution(server=server, server_name="box", action_type=f"a{i}", status=status)
        for i, status in enumerate(statuses)
    )
    Execution.objects.create(server=other, server_name="other", action_type="elsewhere")

    page = admin_client.get(reverse("admin:commands_server_change", args=[server.pk])).text
    recent = page[page.index('id="recent-rows"') : page.index("</tbody>")]

    shown = re.findall(r'data-execution="(\d+)"', recent)
    assert shown == [str(row.pk) for row in reversed(rows)][:10]
    assert "elsewhere" not in recent
    for row in rows[2:]:
        link = reverse("admin:commands_execution_change", args=[row.pk])
        assert f'<a href="{link}">#{row.pk}</a>' in recent
    chips = re.findall(r'<span class="chip chip-(\w+)">(\w+)</span>', recent)
    assert chips[:6] == [
        ("quiet", "cancelled"),
        ("running", "running"),
        ("quiet", "rejected"),
        ("bad", "error"),
        ("bad", "failed"),
        ("ok", "succeeded"),
    ]


@pytest.mark.django_db
def test_a_user_without_the_execute_permission_sees_the_last_executions_but_no_console(server):
    viewer = get_user_model().objects.create_user("viewer", password="pw-0123456789", is_staff=True)
    Execution.objects.create(
        server=server, server_name="box", action_type="uptime", status="succeeded"
    )
    client = Client()
    client.force_login(viewer)

    page = client.get(reverse("admin:commands_server_change", args=[server.pk])).text

    assert 'id="recent-executions"' in page and "uptime" in page
    assert 'id="run-console"' not in page and 'id="homelab-console"' not in page


@pytest.mark.django_db
def test_the_admin_says_homelab_not_django_administration(admin_client):
    page = admin_client.get("/admin/").text

    assert '<div id="site-name"><a href="/admin/">homelab</a></div>' in page
    assert "<title>Site administration | homelab admin</title>" in page
    assert "Django administration" not in page


@pytest.mark.django_db
def test_the_favicon_is_served_here_and_linked_by_our_pages(client):
    icon = client.get("/favicon.ico")

    assert icon.status_code == 200 and icon["Content-Type"] == "image/x-icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO file
    assert client.head("/favicon.ico").status_code == 200
    assert '<link rel="icon" href="/static/commands/favicon.ico">' in client.get("/").text
    assert '<link rel="icon" href="/static/commands/favicon.ico">' in client.get("/api/redoc/").text
