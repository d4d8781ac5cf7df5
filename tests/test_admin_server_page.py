"""The server and execution pages of the admin, through Django's test client: who may
preview, run, check and pin (enforced on the server, not only hidden), what the preview
says will run, the host-key fingerprint, pinning, and clearing a pin when the address
changes. The same pages in a real browser: tests/test_admin_console.py."""

from __future__ import annotations

import subprocess

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from commands.models import AllowedCommand, Execution, Server
from commands.ssh.hostkeys import keygen_fingerprint
from tests.sshd import SSHDaemon, public_key

pytestmark = pytest.mark.django_db

WORDS = r"^[a-z' ]{1,20}$"


def staff(username: str, *codenames: str):
    """A staff user with exactly these commands permissions."""
    user = get_user_model().objects.create_user(username, password="pw-0123456789", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page(response) -> str:
    return response.content.decode()


def change_url(server: Server) -> str:
    return reverse("admin:commands_server_change", args=[server.pk])


def form_data(server: Server, **changes) -> dict:
    data = {
        "name": server.name,
        "hostname": server.hostname,
        "port": server.port,
        "username": server.username,
        "key_file": server.key_file,
        "host_key": server.host_key,
        "enabled": "on",
        "notes": "",
        **changes,
    }
    return {key: value for key, value in data.items() if value is not False}


def preview(client: Client, server: Server, action_type: str, **params: str):
    query = {"action_type": action_type, **{f"param.{k}": v for k, v in params.items()}}
    return client.get(reverse("admin:commands_server_preview", args=[server.pk]), query)


# --- who may --------------------------------------------------------------------------------
def test_a_staff_user_without_the_execute_permission_is_refused_everything_that_reaches_a_server(
    sshd, make_server, make_rule
):
    server = make_server(sshd, host_key="")
    make_rule("t_echo", "echo {word}", word=WORDS)
    client = logged_in(staff("viewer", "view_server", "change_server", "view_execution"))

    shown = client.get(change_url(server))
    assert shown.status_code == 200  # they still see the server
    assert 'id="run-console"' not in page(shown) and 'id="check-server"' not in page(shown)
    assert "Pin host key" not in page(shown)

    refused = preview(client, server, "t_echo", word="hi")
    assert (refused.status_code, refused.json()["code"]) == (403, "permission_denied")
    check = reverse("admin:commands_server_check", args=[server.pk])
    assert client.post(check).status_code == 403
    pin = reverse("admin:commands_server_pin", args=[server.pk])
    assert client.get(pin).status_code == 403
    assert client.post(pin, {"host_key": sshd.host_key}).status_code == 403
    action = {"action": "check_servers", "_selected_action": [server.pk]}
    listing = client.post(reverse("admin:commands_server_changelist"), action, follow=True)
    assert "check-step" not in page(listing)  # no such action for them: nothing checked
    run = client.post(
        reverse("server-execute", args=[server.pk]),
        {"command": "echo hi", "action_type": "t_echo", "wait": False},
        content_type="application/json",
    )
    assert (run.status_code, run.json()["code"]) == (403, "permission_denied")

    server.refresh_from_db()
    assert server.host_key == ""
    assert sshd.accepted_connections() == 0
    assert not Execution.objects.exclude(status="rejected").exists()


def test_pinning_also_needs_the_permission_to_change_servers(sshd, make_server):
    server = make_server(sshd, host_key="")
    client = logged_in(staff("runner", "view_server", "execute_command"))
    shown = client.get(change_url(server))
    assert 'id="run-console"' in page(shown) and "Pin host key" not in page(shown)
    pin = reverse("admin:commands_server_pin", args=[server.pk])
    assert client.get(pin).status_code == 403
    assert client.post(pin, {"host_key": sshd.host_key}).status_code == 403
    server.refresh_from_db()
    assert server.host_key == ""


def test_a_user_with_the_permission_gets_the_run_panel_with_the_usable_rules_only(
    sshd, sshd_factory, make_server, make_rule
):
    server = make_server(sshd)
    other = make_server(sshd_factory())
    make_rule("t_echo", "echo {word}", word=WORDS)
    make_rule("t_elsewhere", "hostname", servers=[other])
    make_rule("t_off", "date")
    AllowedCommand.objects.filter(action_type="t_off").update(enabled=False)
    client = logged_in(staff("runner", "view_server", "execute_command"))
    html = page(client.get(change_url(server)))
    assert 'id="run-console"' in html and 'id="check-server"' in html
    assert 'value="t_echo"' in html and 'value="uptime"' in html
    assert 'value="t_elsewhere"' not in html and 'value="t_off"' not in html
    assert "commands/console.js" in html


# --- preview ------------------------------------------------------------------------------
def test_the_preview_gives_the_command_to_send_and_the_exact_argv(
    admin_client, sshd, make_server, make_rule
):
    server = make_server(sshd)
    make_rule("t_echo", "echo {word}", word=WORDS)
    response = preview(admin_client, server, "t_echo", word="it's me")
    assert response.status_code == 200
    body = response.json()
    assert body["argv"] == ["echo", "it's me"]
    assert body["command"] == "echo 'it'\"'\"'s me'"  # one shell word, quoted by shlex
    assert body["problems"] == {}


def test_the_preview_of_a_sudo_server_shows_sudo_in_front(
    admin_client, sshd, make_server, make_rule
):
    server = make_server(sshd, use_sudo=True)
    make_rule("t_echo", "echo {word}", word=WORDS)
    body = preview(admin_client, server, "t_echo", word="hi").json()
    assert body["argv"] == ["sudo", "-n", "--", "echo", "hi"]
    assert body["command"] == "echo hi"  # what Run posts; the API adds sudo itself


@pytest.mark.parametrize(
    ("word", "problem"),
    [("", "Give a value"), ("-rf", "start with '-'"), ("HI", "Does not match")],
)
def test_the_preview_names_the_parameter_a_value_does_not_fit(
    admin_client, sshd, make_server, make_rule, word, problem
):
    server = make_server(sshd)
    make_rule("t_echo", "echo {word}", word=WORDS)
    response = preview(admin_client, server, "t_echo", word=word)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_parameter" and "word" in body["detail"]
    assert problem in body["problems"]["word"]


def test_the_preview_refuses_a_rule_that_is_disabled_or_not_usable_there(
    admin_client, sshd, sshd_factory, make_server, make_rule
):
    server = make_server(sshd)
    make_rule("t_elsewhere", "hostname", servers=[make_server(sshd_factory())])
    for action_type in ("t_elsewhere", "no_such_rule"):
        response = preview(admin_client, server, action_type)
        assert (response.status_code, response.json()["code"]) == (400, "not_whitelisted")


# --- the pinned key -----------------------------------------------------------------------
def test_the_fingerprint_is_what_ssh_keygen_prints_for_the_daemons_host_key(
    admin_client, sshd, make_server
):
    pub = sshd.host_key_path.with_name(sshd.host_key_path.name + ".pub")
    keygen = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True)
    assert keygen.returncode == 0
    assert keygen_fingerprint(pub.read_text()) == keygen.stdout.strip()
    # A pin is "TYPE BASE64": ssh-keygen says "no comment" where there is none.
    shown = keygen_fingerprint(sshd.host_key)
    assert shown == keygen.stdout.strip().replace(" host (", " (")
    assert shown.startswith("256 SHA256:") and shown.endswith(" (ED25519)")
    server = make_server(sshd)
    assert shown in page(admin_client.get(change_url(server)))


def test_changing_the_hostname_or_port_clears_the_pin_with_a_warning(
    admin_client, sshd, make_server
):
    server = make_server(sshd)
    for changes in ({"hostname": "localhost"}, {"port": sshd.port + 1}):
        Server.objects.filter(pk=server.pk).update(host_key=sshd.host_key)
        server.refresh_from_db()
        response = admin_client.post(change_url(server), form_data(server, **changes), follow=True)
        assert response.status_code == 200
        server.refresh_from_db()
        assert server.host_key == ""
        assert "its pinned host key was cleared" in page(response)
        assert "Pin host key" in page(response)


def test_other_changes_keep_the_pin(admin_client, sshd, make_server):
    server = make_server(sshd)
    response = admin_client.post(
        change_url(server), form_data(server, notes="the nas"), follow=True
    )
    assert response.status_code == 200
    server.refresh_from_db()
    assert (server.notes, server.host_key) == ("the nas", sshd.host_key)
    assert "cleared" not in page(response)


def test_a_key_pasted_with_the_new_address_is_kept(admin_client, sshd, sshd_factory, make_server):
    server = make_server(sshd)
    moved = sshd_factory()
    data = form_data(server, port=moved.port, host_key=moved.host_key)
    admin_client.post(change_url(server), data, follow=True)
    server.refresh_from_db()
    assert (server.port, server.host_key) == (moved.port, moved.host_key)


def test_pin_shows_the_fetched_fingerprint_and_pins_only_when_confirmed(
    admin_client, sshd, make_server
):
    server = make_server(sshd, host_key="")
    pin = reverse("admin:commands_server_pin", args=[server.pk])
    shown = admin_client.get(pin)
    assert shown.status_code == 200
    assert keygen_fingerprint(sshd.host_key) in page(shown)
    assert 'id="pin-confirm"' in page(shown)
    server.refresh_from_db()
    assert server.host_key == ""  # looking is not pinning

    confirmed = {"host_key": sshd.host_key, "fetched_from": server.address}
    done = admin_client.post(pin, confirmed, follow=True)
    server.refresh_from_db()
    assert server.host_key == sshd.host_key
    assert f"Pinned host key for {server.name}" in page(done)
    # The key is now pinned: the page says so and offers nothing to confirm.
    again = page(admin_client.get(pin))
    assert 'id="pin-already"' in again and 'id="pin-confirm"' not in again


def test_pin_refuses_a_weak_host_key(admin_client, make_server, tmp_path, client_key):
    daemon = SSHDaemon(workdir=tmp_path / "weak", authorized_keys=[public_key(client_key)])
    daemon.host_key_path.unlink()
    daemon.host_key_path.with_name(daemon.host_key_path.name + ".pub").unlink()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "1024", "-N", "", "-C", "weak", "-f",
         str(daemon.host_key_path)],
        check=True,
    )  # fmt: skip
    daemon.start()
    try:
        server = make_server(daemon, host_key="")
        pin = reverse("admin:commands_server_pin", args=[server.pk])
        shown = page(admin_client.get(pin))
        assert "1024-bit RSA key" in shown and 'id="pin-confirm"' not in shown
        confirmed = {"host_key": daemon.host_key, "fetched_from": server.address}
        refused = admin_client.post(pin, confirmed, follow=True)
        assert "Not pinned" in page(refused)
        server.refresh_from_db()
        assert server.host_key == ""
    finally:
        daemon.stop()


def test_a_key_confirmed_for_an_address_that_changed_meanwhile_is_not_pinned(
    admin_client, sshd, make_server
):
    server = make_server(sshd, host_key="")
    pin = reverse("admin:commands_server_pin", args=[server.pk])
    assert 'id="pin-confirm"' in page(admin_client.get(pin))
    fetched_from = server.address
    Server.objects.filter(pk=server.pk).update(port=server.port + 1)  # another admin's edit

    refused = admin_client.post(
        pin, {"host_key": sshd.host_key, "fetched_from": fetched_from}, follow=True
    )

    server.refresh_from_db()
    assert server.host_key == ""
    assert "address changed" in page(refused)


def test_the_pin_page_replaces_a_pin_paramiko_no_longer_reads(admin_client, sshd, make_server):
    server = make_server(sshd)
    Server.objects.filter(pk=server.pk).update(host_key="ssh-dss AAAAB3NzaC1kc3MAAACBAP8=")
    pin = reverse("admin:commands_server_pin", args=[server.pk])

    shown = admin_client.get(pin)

    assert shown.status_code == 200
    assert "an unusable pin" in page(shown) and 'id="pin-confirm"' in page(shown)


def test_pin_says_why_when_the_server_cannot_be_reached(admin_client, sshd, make_server):
    server = make_server(sshd, host_key="")
    sshd.stop()
    pin = reverse("admin:commands_server_pin", args=[server.pk])
    response = admin_client.get(pin, follow=True)
    assert "Not pinned" in page(response) and server.address in page(response)


# --- check ----------------------------------------------------------------------------------
def test_check_server_shows_each_step_of_a_good_server(admin_client, sshd, make_server):
    server = make_server(sshd)
    response = admin_client.post(reverse("admin:commands_server_check", args=[server.pk]))
    assert response.status_code == 200
    html = page(response)
    for name in ("tcp", "host_key", "key_file", "auth", "timeout", "round_trip"):
        assert f'data-step="{name}" data-ok="ok"' in html
    assert "passed" in html


def test_the_check_action_reports_every_selected_server(
    admin_client, sshd, sshd_factory, make_server
):
    good = make_server(sshd)
    stopped = sshd_factory()
    bad = make_server(stopped)
    stopped.stop()
    action = {"action": "check_servers", "_selected_action": [good.pk, bad.pk]}
    response = admin_client.post(reverse("admin:commands_server_changelist"), action)
    html = page(response)
    assert f'id="check-{good.pk}" data-ok="true"' in html
    assert f'id="check-{bad.pk}" data-ok="false"' in html
    assert 'data-step="tcp" data-ok="failed"' in html
    assert "Is sshd running on" in html  # the failed step's fix


def test_check_is_a_post(admin_client, sshd, make_server):
    server = make_server(sshd)
    response = admin_client.get(reverse("admin:commands_server_check", args=[server.pk]))
    assert response.status_code == 405
    assert sshd.accepted_connections() == 0


# --- the audit trail ------------------------------------------------------------------------
def add_execution(status: str, server_name: str = "nas") -> Execution:
    return Execution.objects.create(
        server_name=server_name, action_type="uptime", command="uptime", status=status
    )


def test_the_trail_lists_running_executions_first_then_newest(admin_client):
    old_running = add_execution("running")
    done = add_execution("succeeded")
    newest = add_execution("failed", server_name="pi")
    running = add_execution("running")
    response = admin_client.get(reverse("admin:commands_execution_changelist"))
    shown = [row.pk for row in response.context["cl"].result_list]
    assert shown == [running.pk, old_running.pk, newest.pk, done.pk]
    # Filters per status and per server.
    filtered = admin_client.get(
        reverse("admin:commands_execution_changelist"), {"server_name": "pi"}
    )
    assert [row.pk for row in filtered.context["cl"].result_list] == [newest.pk]
    running_only = admin_client.get(
        reverse("admin:commands_execution_changelist"), {"status__exact": "running"}
    )
    assert {row.pk for row in running_only.context["cl"].result_list} == {
        running.pk,
        old_running.pk,
    }


def test_a_running_execution_page_follows_it_and_offers_cancel_only_to_who_may(admin_client):
    running = add_execution("running")
    done = add_execution("succeeded")
    url = reverse("admin:commands_execution_change", args=[running.pk])
    html = page(admin_client.get(url))
    assert 'id="live-execution"' in html and 'id="cancel-button"' in html
    assert f"/ws/v1/executions/{running.pk}/" in html
    done_url = reverse("admin:commands_execution_change", args=[done.pk])
    assert 'id="live-execution"' not in page(admin_client.get(done_url))
    reader = logged_in(staff("reader", "view_execution"))
    html = page(reader.get(url))
    assert 'id="live-execution"' in html and 'id="cancel-button"' not in html
    cancel = reader.post(reverse("execution-cancel", args=[running.pk]))
    assert cancel.status_code == 403
