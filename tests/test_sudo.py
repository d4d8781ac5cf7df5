"""A server's "use sudo" flag, against a real non-root login user, sudoers and sshd.

The fixtures create a throwaway system user, a sudoers drop-in that lets it run exactly
`sleep` and `id` as root (checked with `visudo -cf` before it is installed), and an sshd
that logs in as that user; all of it is removed at the end. They need root and sudo
(`scripts/ensure-sudo` installs it) and fail, never skip, without them.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from commands.models import Execution
from tests.sshd import SLACK, SSHDaemon, processes_matching, public_key, wait_for

pytestmark = pytest.mark.django_db(transaction=True)  # runner threads write the rows

ROOT = Path(__file__).resolve().parent.parent
NAP = r"^[0-9]{1,4}\.[0-9]{1,12}$"


@dataclass(frozen=True)
class SudoUser:
    name: str
    uid: int
    base: Path  # a scratch folder the user can traverse (its home, the daemon's files)


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True)


def install_sudoers(text: str, path: Path, scratch: Path) -> None:
    """Install a sudoers drop-in, only once `visudo -cf` has parsed it."""
    draft = scratch / f"{path.name}.draft"
    draft.write_text(text)
    checked = run("visudo", "-cf", str(draft))
    assert checked.returncode == 0, f"invalid sudoers:\n{text}\n{checked.stdout}{checked.stderr}"
    shutil.copyfile(draft, path)
    path.chmod(0o440)


@pytest.fixture(scope="module")
def sudo_user() -> Iterator[SudoUser]:
    if os.geteuid() != 0:
        pytest.fail("tests/test_sudo.py creates a user and a sudoers file: run it as root.")
    if not (shutil.which("sudo") and shutil.which("visudo")):
        pytest.fail("sudo is not installed: run scripts/ensure-sudo (as root), or `make test`.")
    name = f"hlsudo{os.getpid()}"
    base = Path(tempfile.mkdtemp(prefix="homelab-sudo-", dir="/tmp"))
    base.chmod(0o755)  # the user reads its authorized_keys below it
    dropin = Path(f"/etc/sudoers.d/homelab-test-{os.getpid()}")
    # --password '*': no password, but not locked (sshd refuses a locked account).
    created = run(
        "useradd", "--system", "--create-home", "--home-dir", str(base / "home"),
        "--shell", "/bin/sh", "--password", "*", name,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    try:
        allowed = ", ".join(shutil.which(program) for program in ("sleep", "id"))
        install_sudoers(f"{name} ALL=(root) NOPASSWD: {allowed}\n", dropin, base)
        yield SudoUser(name=name, uid=pwd.getpwnam(name).pw_uid, base=base)
    finally:
        dropin.unlink(missing_ok=True)
        leftovers = run("ps", "-o", "pid=", "-u", name).stdout.split()
        for pid in map(int, leftovers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not run("ps", "-o", "pid=", "-u", name).stdout.split(), timeout=SLACK)
        removed = run("userdel", "--remove", name)
        shutil.rmtree(base, ignore_errors=True)
        assert removed.returncode == 0, removed.stderr


@pytest.fixture(scope="module")
def user_sshd(sudo_user: SudoUser, client_key: Path) -> Iterator[SSHDaemon]:
    """An sshd whose logins are the throwaway user, not root."""
    daemon = SSHDaemon(
        workdir=sudo_user.base / "sshd",
        authorized_keys=[public_key(client_key)],
        username=sudo_user.name,
    )
    # sshd reads the keys file as the user logging in.
    os.chown(daemon.workdir / "authorized_keys", sudo_user.uid, -1)
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def servers(user_sshd, make_server, make_rule):
    """The same login user twice: as itself, and through sudo."""
    make_rule("t_id", "id -u")
    make_rule("t_whoami", "whoami")
    make_rule("t_nap", "sleep {s}", timeout=60, s=NAP)
    make_rule("t_short_nap", "sleep {s}", timeout=1, s=NAP)
    return (
        make_server(user_sshd, name="as-user"),
        make_server(user_sshd, name="as-root", use_sudo=True),
    )


def execute(client, server, command, action_type, **extra):
    return client.post(
        f"/api/v1/servers/{server.pk}/commands/execute",
        {"command": command, "action_type": action_type, **extra},
        format="json",
    )


def owners(text: str) -> dict[str, str]:
    """Command line -> user, for this machine's processes whose command line holds text."""
    out = run("ps", "-eo", "user:32=,args=").stdout
    rows = (line.split(None, 1) for line in out.splitlines())
    return {args: user for user, args in rows if text in args}


def test_a_sudo_server_runs_the_command_as_root_and_the_row_records_sudo(api_client, servers):
    _, as_root = servers

    response = execute(api_client, as_root, "id -u", "t_id")

    assert response.status_code == 200
    body = response.json()
    assert (body["exit_code"], body["stdout"], body["stderr"]) == (0, "0\n", "")
    row = Execution.objects.get(pk=body["execution_id"])
    assert row.argv == ["sudo", "-n", "--", "id", "-u"]
    assert row.command == "id -u"


def test_without_the_flag_the_command_runs_as_the_login_user(api_client, servers, sudo_user):
    as_user, _ = servers

    response = execute(api_client, as_user, "id -u", "t_id")

    assert sudo_user.uid != 0
    assert response.status_code == 200
    assert (response.json()["exit_code"], response.json()["stdout"]) == (0, f"{sudo_user.uid}\n")
    assert Execution.objects.get(pk=response.json()["execution_id"]).argv == ["id", "-u"]


def test_a_command_sudoers_does_not_allow_is_a_200_with_sudos_own_message(
    api_client, servers, sudo_user
):
    as_user, as_root = servers

    refused = execute(api_client, as_root, "whoami", "t_whoami")
    plain = execute(api_client, as_user, "whoami", "t_whoami")

    assert refused.status_code == 200
    body = refused.json()
    assert body["exit_code"] != 0 and body["stdout"] == ""
    assert "a password is required" in body["stderr"]  # -n: no prompt, no wait
    assert Execution.objects.get(pk=body["execution_id"]).status == "failed"
    # The same command runs without sudo: it was sudoers that said no.
    assert (plain.status_code, plain.json()["stdout"]) == (200, f"{sudo_user.name}\n")


def test_cancelling_a_command_run_through_sudo_stops_it(api_client, servers, marker):
    _, as_root = servers
    started = execute(api_client, as_root, f"sleep {marker}", "t_nap", wait=False)
    assert started.status_code == 202
    assert wait_for(lambda: f"sleep {marker}" in owners(marker), timeout=10)
    assert owners(marker)[f"sleep {marker}"] == "root"  # out of the login user's reach

    cancelled = api_client.post(f"/api/v1/executions/{started.json()['execution_id']}/cancel")

    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert wait_for(lambda: not processes_matching(marker), timeout=SLACK), owners(marker)


def test_a_command_run_through_sudo_is_stopped_at_its_timeout(api_client, servers, marker):
    _, as_root = servers

    response = execute(api_client, as_root, f"sleep {marker}", "t_short_nap")

    assert (response.status_code, response.json()["code"]) == (408, "timeout")
    assert wait_for(lambda: not processes_matching(marker), timeout=SLACK), owners(marker)


def test_the_admin_lists_the_flag_and_offers_it_on_the_form(admin_client, user_sshd, make_server):
    server = make_server(user_sshd, name="nas")
    listing = admin_client.get("/admin/commands/server/").content.decode()
    form = admin_client.get(f"/admin/commands/server/{server.pk}/change/").content.decode()

    assert "column-use_sudo" in listing
    assert 'name="use_sudo"' in form
    assert "sudo -n -- COMMAND" in form  # the help text says what it does


# --- the sudoers snippets in the README and docs/security.md ------------------------------
def documented_snippets() -> list[tuple[str, str]]:
    found = []
    for doc in ("README.md", "docs/security.md"):
        text = (ROOT / doc).read_text()
        found += [(doc, block) for block in re.findall(r"```sudoers\n(.*?)```", text, re.S)]
    return found


def default_rule_commands() -> list[list[str]]:
    """The argv of every default rule, with a typical value in each parameter."""
    defaults = importlib.import_module("commands.migrations.0002_default_whitelist")
    samples = {"{service}": "wg-quick@wg0", "{container}": "web-1"}
    return [
        [samples.get(token, token) for token in shlex.split(rule["template"])]
        for rule in defaults.DEFAULT_RULES
    ]


# Near misses every snippet must refuse.
NEAR_MISSES = [
    ["uptime", "-p"],
    ["df", "-h", "/"],
    ["systemctl", "stop", "nginx"],
    ["systemctl", "restart"],
    ["journalctl", "--vacuum-time=1s"],
    ["journalctl", "--no-pager", "-n", "100000", "-u", "nginx"],
    ["docker", "rm", "web-1"],
    ["apt", "install", "nginx"],
    ["sh", "-c", "id"],
    ["sh", "-c", "apt-get update && id"],
]
# What only the regex snippet refuses: a sudoers `*` matches spaces and options too.
WIDER = [["systemctl", "restart", "nginx", "sshd"], ["docker", "restart", "web-1", "--time=0"]]


def test_both_docs_hold_a_sudoers_snippet():
    assert {doc for doc, _ in documented_snippets()} == {"README.md", "docs/security.md"}


@pytest.mark.parametrize(
    ("doc", "snippet"), documented_snippets(), ids=[doc for doc, _ in documented_snippets()]
)
def test_a_documented_sudoers_snippet_allows_exactly_the_default_rules(doc, snippet, sudo_user):
    original = sudo_user.base / "documented"
    original.write_text(snippet)
    assert run("visudo", "-cf", str(original)).returncode == 0, f"{doc} does not parse"
    # sudo -l needs the programs to exist: point the snippet at stand-ins of our own, so
    # what is checked is its arguments, whatever this machine has installed.
    stand_ins = sudo_user.base / "bin"
    stand_ins.mkdir(exist_ok=True)
    for program in set(re.findall(r"/usr/bin/([a-z-]+)", snippet)):
        (stand_ins / program).write_text("#!/bin/sh\nexit 0\n")
        (stand_ins / program).chmod(0o755)
    ours = snippet.replace("/usr/bin/", f"{stand_ins}/")
    ours = re.sub(r"^homelab ", f"{sudo_user.name} ", ours, flags=re.M)
    dropin = Path(f"/etc/sudoers.d/homelab-test-{os.getpid()}-documented")

    def allowed(argv: list[str]) -> bool:
        listed = run("sudo", "-l", "-U", sudo_user.name, f"{stand_ins}/{argv[0]}", *argv[1:])
        return listed.returncode == 0

    try:
        install_sudoers(ours, dropin, sudo_user.base)
        assert [argv for argv in default_rule_commands() if not allowed(argv)] == []
        assert [argv for argv in NEAR_MISSES if allowed(argv)] == []
        loose = "*" in snippet
        assert [allowed(argv) for argv in WIDER] == [loose] * len(WIDER)
    finally:
        dropin.unlink(missing_ok=True)
