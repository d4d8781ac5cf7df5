"""addserver on an existing name changes only what it is given, and says what changed.

The pin goes only with a new address (host or port), said so, and then `Next: trusthost`;
--reset is the explicit way back to the defaults; --tag / --no-tags set the server's tags.
The end-to-end cases run commands through the API against a real sshd.
"""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from commands import ssh
from commands.models import TAG_MESSAGE, Execution, Server, Tag

PINNED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBnR7oUe00SzPjYGEwTG/NsRoadz6D6DbxTF/wpcQsh2"


def addserver(*args: str) -> str:
    out = StringIO()
    call_command("addserver", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def nas(db, client_key) -> Server:
    """The issue's server: homelab@localhost:2299, key file set, sudo on, pinned, tagged."""
    addserver("nas", "localhost", "--port", "2299", "--user", "homelab", "--sudo",
              "--key-file", str(client_key), "--tag", "pi", "--tag", "web")  # fmt: skip
    Server.objects.filter(name="nas").update(host_key=PINNED)
    return Server.objects.get(name="nas")


def as_stored(server: Server) -> dict:
    server.refresh_from_db()
    return {
        "hostname": server.hostname,
        "port": server.port,
        "username": server.username,
        "use_sudo": server.use_sudo,
        "key_file": server.key_file,
        "host_key": server.host_key,
        "tags": sorted(server.tags.values_list("name", flat=True)),
    }


def test_the_issues_update_with_only_the_address_keeps_everything_else(nas, client_key):
    before = as_stored(nas)

    out = addserver("nas", "localhost")

    assert as_stored(nas) == before == {
        "hostname": "localhost", "port": 2299, "username": "homelab", "use_sudo": True,
        "key_file": str(client_key), "host_key": PINNED, "tags": ["pi", "web"],
    }  # fmt: skip
    assert "Updated server nas with id" in out and "No change." in out
    assert "trusthost" not in out  # the pin was kept: nothing to do next


def test_an_update_changes_only_the_options_given_and_shows_before_and_after(nas, client_key):
    out = addserver("nas", "--user", "admin")

    assert as_stored(nas)["username"] == "admin"
    assert {**as_stored(nas), "username": "homelab"} == {
        "hostname": "localhost", "port": 2299, "username": "homelab", "use_sudo": True,
        "key_file": str(client_key), "host_key": PINNED, "tags": ["pi", "web"],
    }  # fmt: skip
    assert "Changed: address homelab@localhost:2299 -> admin@localhost:2299." in out
    assert "Next:" not in out


def test_no_sudo_turns_sudo_off_and_the_key_file_can_go_back_to_the_default(nas):
    out = addserver("nas", "--no-sudo", "--key-file", "")

    stored = as_stored(nas)
    assert (stored["use_sudo"], stored["key_file"], stored["host_key"]) == (False, "", PINNED)
    assert "sudo on -> off" in out
    assert re.search(r"key file \S+ -> \(HOMELAB_SSH_KEY_FILE\)", out)


def test_a_new_port_clears_the_pin_says_so_and_points_to_trusthost(nas):
    out = addserver("nas", "--port", "2222")

    assert as_stored(nas)["host_key"] == ""
    assert f"the pinned host key ({ssh.fingerprint(PINNED)}) was cleared" in out
    assert out.strip().endswith("Next: ./manage.py trusthost nas")


def test_a_new_host_clears_the_pin_too(nas):
    out = addserver("nas", "127.0.0.2")

    assert as_stored(nas)["host_key"] == ""
    assert "address homelab@localhost:2299 -> homelab@127.0.0.2:2299" in out
    assert "Next: ./manage.py trusthost nas" in out


def test_reset_puts_every_option_not_given_back_to_its_default_and_keeps_the_pin(nas):
    out = addserver("nas", "localhost", "--port", "2299", "--reset")

    assert as_stored(nas) == {
        "hostname": "localhost", "port": 2299, "username": "root", "use_sudo": False,
        "key_file": "", "host_key": PINNED, "tags": [],
    }  # fmt: skip
    assert "address homelab@localhost:2299 -> root@localhost:2299" in out
    assert "tags pi, web -> (none)" in out


def test_tags_are_replaced_only_when_given_and_no_tags_clears_them(nas):
    addserver("nas", "--user", "homelab")
    kept = as_stored(nas)["tags"]
    replaced_out = addserver("nas", "--tag", "rack-2")
    replaced = as_stored(nas)["tags"]
    addserver("nas", "--no-tags")

    assert (kept, replaced, as_stored(nas)["tags"]) == (["pi", "web"], ["rack-2"], [])
    assert "tags pi, web -> rack-2" in replaced_out
    assert sorted(Tag.objects.values_list("name", flat=True)) == ["pi", "rack-2", "web"]


def test_a_bad_tag_is_refused_and_changes_nothing(nas):
    before = as_stored(nas)

    with pytest.raises(CommandError) as refused:
        addserver("nas", "--user", "admin", "--tag", "Not A Slug")

    assert TAG_MESSAGE in str(refused.value)
    assert as_stored(nas) == before
    assert not Tag.objects.filter(name="Not A Slug").exists()


def test_tag_and_no_tags_cannot_be_given_together(nas):
    with pytest.raises(CommandError, match="not allowed with argument"):
        addserver("nas", "--tag", "pi", "--no-tags")


@pytest.mark.django_db
def test_a_new_server_needs_its_address_and_gets_the_defaults_and_its_tags():
    with pytest.raises(CommandError, match=r"No server named 'box' yet: give its address"):
        addserver("box")
    out = addserver("box", "10.0.0.7", "--tag", "pi")

    box = Server.objects.get(name="box")
    assert (box.port, box.username, box.use_sudo, box.key_file) == (22, "root", False, "")
    assert list(box.tags.values_list("name", flat=True)) == ["pi"]
    assert "Added server box" in out and "Changed" not in out
    assert "Next: ./manage.py trusthost box" in out


@pytest.mark.django_db
def test_a_name_that_is_not_a_slug_is_refused_with_one_suggested():
    with pytest.raises(CommandError) as refused:
        addserver("My NAS", "10.0.0.5")

    assert str(refused.value) == (
        "name: A server name is letters, digits, - and _ only (it stands in URLs in place "
        "of the id), e.g. my-nas."
    )
    assert not Server.objects.exists()


# --- against a real sshd, through the API --------------------------------------------------
def execute(client: APIClient, server: str):
    return client.post(
        f"/api/v1/servers/{server}/commands/execute",
        {"command": "echo hi", "action_type": "t_echo"},
        format="json",
    )


@pytest.mark.django_db(transaction=True)  # the runner thread writes the rows
def test_an_update_keeps_a_real_server_usable_and_a_move_asks_for_a_new_pin(
    sshd, sshd_factory, client_key, api_client, make_rule
):
    make_rule("t_echo", "echo {word}", word="^[a-z]{1,10}$")
    addserver("box", sshd.host, "--port", str(sshd.port), "--user", sshd.username,
              "--key-file", str(client_key))  # fmt: skip
    call_command("trusthost", "box", "--yes", stdout=StringIO())

    tagged = addserver("box", "--tag", "pi")  # an update that leaves the login alone
    kept = execute(api_client, "box")
    moved = addserver("box", "--port", str(sshd_factory().port))
    refused = execute(api_client, "box")

    assert "Next:" not in tagged
    assert (kept.status_code, kept.json()["stdout"]) == (200, "hi\n")
    assert "Next: ./manage.py trusthost box" in moved
    assert (refused.status_code, refused.json()["code"]) == (424, "host_key_unknown")
    assert Execution.objects.get(pk=refused.json()["execution_id"]).status == "error"
