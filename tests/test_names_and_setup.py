"""Servers by name, addserver that checks what it is given, and ./manage.py as the hints say.

The acceptance paths run real processes: manage.py set-up (addserver --check against a
real sshd), daphne serving HTTP and WebSockets, and ./manage.py started outside the venv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from commands.models import Execution, Server
from tests.live import ROOT, Daphne, call, key_headers, manage, output_of
from tests.sshd import SSHDaemon, public_key

# What a shell outside the venv has: the system python3 first, no VIRTUAL_ENV.
OUTSIDE_THE_VENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, client_key):
    """sshd, a SQLite database set up through manage.py (addserver --check --yes), daphne."""
    tmp = tmp_path_factory.mktemp("names")
    daemon = SSHDaemon(workdir=tmp / "sshd", authorized_keys=[public_key(client_key)]).start()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp / 'names.sqlite3'}",
        "DJANGO_SECRET_KEY": "names-tests-only",
        "HOMELAB_EXECUTE_RATE": "1000/min",
    }
    env.pop("REDIS_URL", None)
    server = Daphne(env=env, log=tmp / "daphne.log")
    try:
        manage(env, "migrate", "--noinput")
        key = manage(env, "createapikey", "names").strip().splitlines()[-1]
        added = manage(env, "addserver", "box", daemon.host, "--port", str(daemon.port),
                       "--user", daemon.username, "--key-file", str(client_key),
                       "--check", "--yes")  # fmt: skip
        manage(env, "allowcommand", "t_echo", "echo {word}", "--param", "word=^[a-z]{1,10}$")
        server.start()
        yield {"daphne": server, "key": key, "added": added, "env": env, "sshd": daemon}
    finally:
        server.stop()
        daemon.stop()


def over_socket(stack, server_ref: str, message: dict) -> tuple[list[dict], int | None]:
    """Run one command over ws/v1/servers/{ref}/commands/execute: (frames, close code)."""
    url = f"{stack['daphne'].ws}/ws/v1/servers/{server_ref}/commands/execute"
    frames, code = [], None
    with connect(url, additional_headers=key_headers(stack["key"]), open_timeout=10) as sock:
        try:
            sock.send(json.dumps(message))
            while True:
                frames.append(json.loads(sock.recv(timeout=30)))
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
    return frames, code


# --- servers by name, over real HTTP and WebSockets ------------------------------------------
def test_addserver_check_connects_pins_and_logs_in_to_a_real_sshd(stack):
    from commands import ssh

    added = stack["added"]
    assert ssh.fingerprint(stack["sshd"].host_key) in added
    assert "Pinned host key for box." in added
    assert "Check passed: connected, host key pinned, logged in as" in added


def test_addserver_prints_the_id_and_name_the_api_knows_it_by(stack):
    daphne, key = stack["daphne"], stack["key"]
    printed = re.search(r"Added server (\S+) with id (\d+) ", stack["added"])

    status, _, body = call("GET", f"{daphne.base}/api/v1/servers/?name=box", key)

    assert status == 200 and printed is not None
    assert [(s["name"], s["id"]) for s in body["results"]] == [(printed[1], int(printed[2]))]


def test_the_name_filter_returns_only_that_server(stack):
    daphne, key = stack["daphne"], stack["key"]

    _, _, everything = call("GET", f"{daphne.base}/api/v1/servers/", key)
    _, _, nothing = call("GET", f"{daphne.base}/api/v1/servers/?name=nope", key)

    assert [s["name"] for s in everything["results"]] == ["box"]
    assert nothing["results"] == []


def test_a_command_runs_on_a_server_named_by_its_name_over_http(stack):
    daphne, key = stack["daphne"], stack["key"]
    base = f"{daphne.base}/api/v1/servers/box"

    detail = call("GET", f"{base}/", key)
    rules = call("GET", f"{base}/commands/", key)
    ran = call("POST", f"{base}/commands/execute", key,
               {"command": "echo hello", "action_type": "t_echo"})  # fmt: skip
    by_id = call("GET", f"{daphne.base}/api/v1/servers/{detail[2]['id']}/", key)

    assert (detail[0], detail[2]["name"]) == (200, "box")
    assert rules[0] == 200 and "t_echo" in [r["action_type"] for r in rules[2]]
    assert (ran[0], ran[2]["exit_code"], ran[2]["stdout"]) == (200, 0, "hello\n")
    assert by_id[2] == detail[2]


def test_an_unknown_name_is_404_server_not_found(stack):
    daphne, key = stack["daphne"], stack["key"]

    status, _, body = call("POST", f"{daphne.base}/api/v1/servers/nope/commands/execute", key,
                           {"command": "echo hello", "action_type": "t_echo"})  # fmt: skip

    assert (status, body["code"]) == (404, "server_not_found")
    assert "nope" in body["detail"]


def test_a_command_runs_over_a_websocket_on_a_server_named_by_its_name(stack):
    frames, code = over_socket(stack, "box", {"command": "echo hi", "action_type": "t_echo"})
    nowhere = over_socket(stack, "nope", {"command": "echo hi", "action_type": "t_echo"})

    assert frames[0]["type"] == "started"
    assert output_of(frames) == "hi\n"
    assert (frames[-1]["status"], code) == ("succeeded", 1000)
    assert nowhere == ([], 4404)


# --- names in the database ------------------------------------------------------------------
@pytest.mark.django_db
def test_an_all_digit_name_is_refused_when_saved_so_it_never_reads_as_an_id():
    with pytest.raises(ValidationError, match="cannot be all digits"):
        Server.objects.create(name="42", hostname="10.0.0.5")
    with pytest.raises(ValidationError):
        Server.objects.create(name="my nas", hostname="10.0.0.5")  # not a slug
    Server.objects.create(name="srv-42", hostname="10.0.0.5")

    assert list(Server.objects.values_list("name", flat=True)) == ["srv-42"]


@pytest.mark.django_db
def test_addserver_refuses_an_all_digit_name():
    with pytest.raises(CommandError, match="name: A server name cannot be all digits"):
        call_command("addserver", "42", "10.0.0.5", stdout=StringIO())
    assert not Server.objects.exists()


@pytest.mark.django_db
def test_a_refused_request_for_an_unknown_name_is_audited_with_that_name(api_client):
    response = api_client.post(
        "/api/v1/servers/nope/commands/execute",
        {"command": "echo hi", "action_type": "t_echo"},
        format="json",
    )
    huge_id = api_client.get(f"/api/v1/servers/{'9' * 30}/")

    assert response.json()["code"] == "server_not_found"
    assert Execution.objects.get().server_name == "unknown:nope"
    assert (huge_id.status_code, huge_id.json()["code"]) == (404, "server_not_found")


# --- addserver checks the key file ----------------------------------------------------------
def add(*args: str) -> str:
    out = StringIO()
    call_command("addserver", "nas", "10.0.0.5", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_addserver_refuses_a_missing_key_file_naming_the_path_and_the_reason(tmp_path):
    missing = tmp_path / "no-such-key"

    with pytest.raises(CommandError) as refused:
        add("--key-file", str(missing))

    assert str(refused.value) == f"--key-file {missing}: no such file"
    assert not Server.objects.exists()


@pytest.mark.django_db
def test_addserver_refuses_a_passphrase_protected_key(tmp_path):
    locked = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(locked)],
                   check=True)  # fmt: skip

    with pytest.raises(CommandError) as refused:
        add("--key-file", str(locked))

    assert str(refused.value).startswith(f"--key-file {locked}: it is protected by a passphrase")
    assert "-N ''" in str(refused.value)  # says how to make one without
    assert not Server.objects.exists()


@pytest.mark.django_db
def test_addserver_refuses_a_public_key_given_for_the_private_one(client_key):
    pub = f"{client_key}.pub"

    with pytest.raises(CommandError, match=re.escape(f"--key-file {pub}: it is not an SSH")):
        add("--key-file", pub)
    assert not Server.objects.exists()


def test_addserver_refuses_a_key_file_this_user_cannot_read(stack, tmp_path):
    unreadable = tmp_path / "id_ed25519"
    shutil.copy(stack["sshd"].host_key_path, unreadable)  # a real private key
    unreadable.chmod(0)
    command = [str(ROOT / "manage.py"), "addserver", "nas", "10.0.0.5",
               "--key-file", str(unreadable)]  # fmt: skip
    if os.geteuid() == 0:  # root reads any file: drop the capabilities that let it
        caps = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", *command]

    result = subprocess.run(command, env=stack["env"], capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    assert result.stderr.strip() == (
        f"CommandError: --key-file {unreadable}: this user may not read it (permission denied)"
    )


@pytest.mark.django_db
def test_addserver_expands_a_tilde_and_makes_the_key_path_absolute(
    client_key, tmp_path, monkeypatch
):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(client_key, home / ".ssh" / "homelab_ed25519")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home / ".ssh")

    add("--key-file", "~/.ssh/homelab_ed25519")
    from_home = Server.objects.get(name="nas").key_file
    add("--key-file", "homelab_ed25519")  # relative to where addserver runs
    relative = Server.objects.get(name="nas").key_file

    assert from_home == relative == str(home / ".ssh" / "homelab_ed25519")


# --- addserver --check, each step named -----------------------------------------------------
def add_checked(daemon: SSHDaemon, key: Path, *extra: str) -> str:
    out = StringIO()
    call_command(
        "addserver", "box", daemon.host, "--port", str(daemon.port), "--user", daemon.username,
        "--key-file", str(key), "--check", "--timeout", "5", *extra, stdout=out,
    )  # fmt: skip
    return out.getvalue()


@pytest.mark.django_db
def test_check_against_a_stopped_sshd_fails_at_the_connect_step(sshd, client_key):
    sshd.stop()

    with pytest.raises(CommandError, match=r"^Check failed at step 1, connect: could not"):
        add_checked(sshd, client_key, "--yes")
    assert Server.objects.get(name="box").host_key == ""  # added, not pinned


@pytest.mark.django_db
def test_check_without_yes_and_no_terminal_refuses_to_pin_and_says_how(sshd, client_key):
    with pytest.raises(CommandError) as refused:
        add_checked(sshd, client_key)

    assert str(refused.value).startswith(
        "Check stopped at step 2, pin: Not pinned: stdin is not a terminal: add --yes after "
        "checking the fingerprint"
    )
    assert Server.objects.get(name="box").host_key == ""


@pytest.mark.django_db
def test_check_with_a_key_the_server_refuses_fails_at_the_login_step(sshd, other_client_key):
    with pytest.raises(CommandError) as refused:
        add_checked(sshd, other_client_key, "--yes")

    assert str(refused.value).startswith("Check failed at step 3, log in and run `true`")
    assert "refused our SSH key" in str(refused.value)
    assert Server.objects.get(name="box").host_key == sshd.host_key  # step 2 did pin it


@pytest.mark.django_db
def test_yes_without_check_is_refused_rather_than_ignored():
    with pytest.raises(CommandError, match="needs --check"):
        add("--yes")
    assert not Server.objects.exists()


# --- ./manage.py as the hints print it ------------------------------------------------------
def test_manage_py_runs_from_outside_the_venv_with_the_projects_venv():
    assert subprocess.run(["python3", "-c", "import django"], env=OUTSIDE_THE_VENV,
                          capture_output=True).returncode != 0  # fmt: skip
    code = "import django, sys; print(sys.prefix, django.__version__)"

    result = subprocess.run(
        ["./manage.py", "shell", "-c", code],
        cwd=ROOT,
        env={**OUTSIDE_THE_VENV, "DJANGO_SECRET_KEY": "x"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    prefix, version = result.stdout.splitlines()[-1].split()
    assert Path(prefix).resolve() == (ROOT / ".venv").resolve()
    assert version.startswith("5.2")


def test_without_a_secret_key_a_command_prints_one_line_not_a_traceback(tmp_path):
    # A fresh clone: no .dev-secret-key beside manage.py, the venv already made.
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy2(ROOT / "manage.py", clone / "manage.py")
    for package in ("homelab", "commands"):
        shutil.copytree(ROOT / package, clone / package,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    (clone / ".venv").symlink_to(ROOT / ".venv")

    result = subprocess.run(
        ["./manage.py", "trusthost", "nas"],
        cwd=clone,
        env=OUTSIDE_THE_VENV,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("ImproperlyConfigured: DJANGO_SECRET_KEY")
