"""The README's walk-through, run as written, on a fresh database: a real `make run`, a
real sshd, and the shell blocks copied out of README.md between its `readme-walk` marks.

Only what must differ on a test machine is replaced, and the test checks the README still
says it: the example server 192.168.1.10 becomes the test sshd (its address, port and
login user) and make run's port 8000 a free one. HOME holds the README's key file,
~/.ssh/homelab_ed25519. `--check` asks on a terminal, so the steps run with a pseudo
terminal as stdin and "yes" typed into it. No DJANGO_SECRET_KEY is set anywhere: the
steps run as a new user types them, with the key `make run` generated.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from commands.models import AllowedCommand
from tests.live import ROOT, make_run
from tests.sshd import SSHDaemon, public_key, terminate

README = ROOT / "README.md"
BEGIN, END = "<!-- readme-walk: begin -->", "<!-- readme-walk: end -->"
MARK = "@@@ step done @@@"


def readme_commands() -> list[str]:
    """The shell commands of the README's walk-through, in order: each fenced `sh` block
    between the marks, comment lines dropped, continued lines joined."""
    text = README.read_text()
    assert BEGIN in text and END in text, "README.md lost its readme-walk marks"
    section = text.split(BEGIN, 1)[1].split(END, 1)[0]
    commands, current = [], ""
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.splitlines():
            if not current and (not line.strip() or line.lstrip().startswith("#")):
                continue
            current += line
            if current.endswith("\\"):
                current += "\n"
                continue
            commands.append(current)
            current = ""
    return commands


def for_this_machine(command: str, sshd: SSHDaemon, port: int) -> str:
    for example, here in {
        "192.168.1.10": f"{sshd.host} --port {sshd.port}",
        "--user admin": f"--user {sshd.username}",
        "127.0.0.1:8000": f"127.0.0.1:{port}",
    }.items():
        command = command.replace(example, here)
    return command


@pytest.fixture(scope="module")
def walk(tmp_path_factory, client_key) -> Iterator[dict]:
    """make run on a fresh database and a sshd that accepts the README's key."""
    tmp = tmp_path_factory.mktemp("readme")
    home = tmp / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(client_key, home / ".ssh" / "homelab_ed25519")
    sshd = SSHDaemon(workdir=tmp / "sshd", authorized_keys=[public_key(client_key)]).start()
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp / 'fresh.sqlite3'}", "HOME": str(home)}
    for name in ("DJANGO_SECRET_KEY", "DJANGO_DEBUG", "REDIS_URL"):
        env.pop(name, None)
    server = None
    try:
        server, port = make_run(env, tmp / "make-run.log")
        yield {"env": env, "sshd": sshd, "port": port, "tmp": tmp}
    finally:
        if server is not None:
            terminate(server, group=True, grace=15)
        sshd.stop()


def run_steps(commands: list[str], env: dict, answer: str) -> list[str]:
    """Run the commands in one bash, stdin a pseudo terminal with `answer` typed into it;
    the stdout of each command."""
    script = "".join(f"{command}\nprintf '\\n{MARK}\\n'\n" for command in commands)
    controller, terminal = pty.openpty()
    try:
        os.write(controller, answer.encode())  # the terminal holds it until read
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            env=env,
            stdin=terminal,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert result.returncode == 0, f"a README step failed:\n{result.stdout}\n{result.stderr}"
    return [out.strip() for out in result.stdout.split(f"\n{MARK}\n")[:-1]]


def test_the_readmes_walk_through_runs_as_written_on_a_fresh_database(walk):
    sshd, port = walk["sshd"], walk["port"]
    commands = readme_commands()
    for example in ("192.168.1.10", "--user admin", "127.0.0.1:8000"):
        assert any(example in command for command in commands), f"README no longer has {example}"
    assert not any("DJANGO_SECRET_KEY" in command for command in commands)
    here = [for_this_machine(command, sshd, port) for command in commands]

    out = dict(zip(commands, run_steps(here, walk["env"], "yes\n"), strict=True))

    def of(ending: str, having: str = "") -> str:
        """The output of the one step whose command (as the README writes it) ends so."""
        (found,) = [text for command, text in out.items()
                    if command.endswith(ending) and having in command]  # fmt: skip
        return found

    assert out[commands[0]] == ""  # KEY=...: the key went into the variable
    added = of("--key-file ~/.ssh/homelab_ed25519 --check")
    assert "Pinned host key for nas." in added and "Check passed" in added
    assert "Changed: tags (none) -> storage." in of("addserver nas --tag storage")
    servers = json.loads(of("/api/v1/servers/"))["results"]
    assert [(s["name"], s["host_key_pinned"]) for s in servers] == [("nas", True)]
    rules = {rule["action_type"] for rule in json.loads(of("/servers/nas/commands/"))}
    assert {"disk_usage", "zfs_status", "list_upgradable"} <= rules
    ran = json.loads(of("/servers/nas/commands/execute", having='"df -h"'))
    assert (ran["execution_id"], ran["exit_code"]) == (1, 0) and "Filesystem" in ran["stdout"]
    assert json.loads(of("?status=failed'"))["results"] == []
    assert json.loads(of("?server=nas&status=error'"))["results"] == []
    # The async steps name execution 2, as a fresh database numbers it.
    started = json.loads(of("/servers/nas/commands/execute", having='"wait": false'))
    assert (started["execution_id"], started["status"]) == (2, "running")
    assert json.loads(of("/api/v1/executions/2/"))["id"] == 2
    stopped = json.loads(of("/api/v1/executions/2/cancel"))
    # Cancelled (or, on a slow machine, still stopping: 202), or it had ended: 409.
    assert stopped.get("status") in ("cancelled", "running") or stopped["code"] == "not_running"


def test_check_with_no_terminal_to_type_yes_into_says_to_add_yes(walk):
    sshd = walk["sshd"]

    result = subprocess.run(
        [sys.executable, "manage.py", "addserver", "piped", sshd.host, "--port", str(sshd.port),
         "--user", sshd.username, "--check"],
        cwd=ROOT, env=walk["env"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr.startswith(
        "CommandError: Check stopped at step 2, pin: Not pinned: stdin is not a terminal: "
        "add --yes after checking the fingerprint"
    )


# --- the top of the README: command and action_type ----------------------------------------
@pytest.mark.django_db(transaction=True)  # the runner thread writes the rows
def test_the_top_explains_command_and_action_type_and_the_service_agrees(
    api_client, sshd, make_server
):
    top = README.read_text().split("## Two commands", 1)[0]
    example = re.search(r'`(\{"command": "df -h", "action_type": "disk_usage"\})`', top)
    make_server(sshd, name="nas")
    # The default rule (a data migration), as a transactional test before this one may
    # have flushed it.
    AllowedCommand.objects.get_or_create(
        action_type="disk_usage", defaults={"template": "df -h", "all_servers": True}
    )

    def post(body: dict):
        return api_client.post("/api/v1/servers/nas/commands/execute", body, format="json")

    whole = post(json.loads(example[1]))
    cut = post({"command": "df", "action_type": "disk_usage"})
    no_command = post({"action_type": "disk_usage"})
    no_action = post({"command": "df -h"})

    assert "Both fields are required" in top and "token by token" in top
    assert "the client states what it means to run" in top
    assert (whole.status_code, whole.json()["exit_code"]) == (200, 0)
    assert (cut.status_code, cut.json()["code"]) == (400, "not_whitelisted")
    assert set(no_command.json()["errors"]) == {"command"}
    assert set(no_action.json()["errors"]) == {"action_type"}


# --- make manage ---------------------------------------------------------------------------
SHIM = """#!/bin/sh
echo "$*" >> "$SHIM_LOG"
exec {python} "$@"
"""


def test_make_manage_migrates_only_when_a_migration_is_pending_and_quietly(tmp_path):
    # BIN is the venv's bin/ in the Makefile: a python there that logs what it is asked.
    shim = tmp_path / "bin" / "python"
    shim.parent.mkdir()
    shim.write_text(SHIM.format(python=sys.executable))
    shim.chmod(0o755)
    log = tmp_path / "calls.log"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.sqlite3'}",
           "SHIM_LOG": str(log)}  # fmt: skip
    env.pop("DJANGO_SECRET_KEY", None)

    def make_manage() -> tuple[str, list[str]]:
        log.write_text("")
        result = subprocess.run(
            ["make", "--no-print-directory", "-o", ".venv/.requirements-installed", "manage",
             f"BIN={shim.parent}", "ARGS=check"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout, log.read_text().splitlines()

    fresh_out, fresh_calls = make_manage()
    again_out, again_calls = make_manage()

    assert fresh_calls == ["manage.py migrate --check", "manage.py migrate --noinput -v 0"]
    assert again_calls == ["manage.py migrate --check"]  # nothing pending: no migrate
    # Quiet: what the command printed, and nothing of migrate's.
    assert fresh_out == again_out == "System check identified no issues (0 silenced).\n"
