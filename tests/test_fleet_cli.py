"""The fleet from the shell: tagserver, createapikey --rate, runbatch (streamed lines, the
summary, the exit status, Ctrl-C), and markinterrupted / pruneexecutions for batches. Each
command runs as a real process on a SQLite file, against real sshd daemons."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from commands.engine.runner import identity_of
from tests.live import ROOT, manage
from tests.sshd import processes_matching, wait_for


def env_for(database: Path, client_key: Path) -> dict:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "DJANGO_SECRET_KEY": "cli-test",
        "HOMELAB_SSH_KEY_FILE": str(client_key),
    }
    env.pop("REDIS_URL", None)
    return env


@pytest.fixture(scope="module")
def migrated(tmp_path_factory, client_key: Path) -> Path:
    """A database migrated once, with the test rules: each test gets a copy."""
    database = tmp_path_factory.mktemp("cli") / "template.sqlite3"
    env = env_for(database, client_key)
    manage(env, "migrate", "--noinput")
    manage(env, "allowcommand", "t_echo", "echo {word}", "--param", "word=^[a-z]{1,10}$")
    manage(env, "allowcommand", "t_nap", "sleep {s}", "--param",
           r"s=^[0-9]{1,4}\.[0-9]{1,12}$", "--timeout", "120")  # fmt: skip
    manage(env, "allowcommand", "t_lines", "sh -c 'echo one; echo two >&2; echo three'")
    return database


@pytest.fixture
def env(migrated: Path, tmp_path: Path, client_key: Path) -> dict:
    database = tmp_path / "cli.sqlite3"
    shutil.copy(migrated, database)
    return env_for(database, client_key)


def add(env: dict, name: str, daemon, *tags: str) -> None:
    manage(env, "addserver", name, daemon.host, "--port", str(daemon.port),
           "--user", daemon.username)  # fmt: skip
    manage(env, "trusthost", name, "--yes")
    if tags:
        manage(env, "tagserver", name, *[arg for tag in tags for arg in ("--add", tag)])


def rows(env: dict, query: str) -> list[tuple]:
    path = env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        return conn.execute(query).fetchall()


def runbatch(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "runbatch", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_tagserver_adds_removes_and_sets_tags(env, sshd):
    add(env, "nas", sshd)
    out = manage(env, "tagserver", "nas", "--add", "pi", "--add", "web")
    assert "Tags of nas: (none) -> pi, web" in out
    assert "pi, web -> web" in manage(env, "tagserver", "nas", "--remove", "pi")
    assert "web -> (none)" in manage(env, "tagserver", "nas", "--set")
    bad = subprocess.run([sys.executable, "manage.py", "tagserver", "nas", "--add", "My Tag"],
                         cwd=ROOT, env=env, capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1 and "A tag is 1 to 32 lowercase letters" in bad.stderr


def test_createapikey_sets_the_keys_own_rate(env):
    made = subprocess.run([sys.executable, "manage.py", "createapikey", "ci", "--rate", "100/min"],
                          cwd=ROOT, env=env, capture_output=True, text=True)  # fmt: skip
    assert made.returncode == 0 and "rate 100/min" in made.stderr
    assert rows(env, "SELECT rate FROM commands_apikey") == [("100/min",)]
    bad = subprocess.run([sys.executable, "manage.py", "createapikey", "x", "--rate", "lots"],
                         cwd=ROOT, env=env, capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1 and "Give a rate such as 100/min" in bad.stderr


def test_runbatch_prefixes_every_line_with_its_server_and_counts_by_status(env, sshd_factory):
    add(env, "alpha", sshd_factory(), "pi")
    add(env, "beta", sshd_factory(), "pi")

    done = runbatch(env, "--tag", "pi", "--", "sh", "-c", "echo one; echo two >&2; echo three")

    assert done.returncode == 0, done.stderr
    for server in ("alpha", "beta"):
        lines = [line for line in done.stdout.splitlines() if line.startswith(f"{server} | ")]
        assert lines[:2] == [f"{server} | one", f"{server} | three"]
        assert lines[2].startswith(f"{server} | == succeeded (exit 0")
        assert f"{server} | two" in done.stderr
    assert "  succeeded: 2" in done.stdout
    # Audited as the CLI: no key, no user, the shell's user named.
    assert {row[0] for row in rows(env, "SELECT username FROM commands_execution")} == {
        f"cli:{getpass.getuser()}"
    }


def test_runbatch_exits_1_when_a_target_fails_and_names_the_code(env, sshd_factory):
    add(env, "alpha", sshd_factory())
    gone = sshd_factory()
    add(env, "beta", gone)
    gone.stop()

    done = runbatch(env, "--server", "alpha", "--server", "beta", "--max-concurrency", "1",
                    "--max-errors", "0", "--", "echo", "hi")  # fmt: skip

    assert done.returncode == 1
    assert "alpha | hi" in done.stdout and "alpha | == succeeded" in done.stdout
    assert "beta | == error ssh_connect_failed" in done.stdout
    assert "  error: 1" in done.stdout and "batch 1 failed" in done.stdout


def test_runbatch_refuses_a_command_no_rule_fits(env, sshd):
    add(env, "alpha", sshd)
    done = runbatch(env, "--server", "alpha", "--", "rm", "-rf", "/")
    assert done.returncode == 1 and "no enabled rule fits it" in done.stderr
    assert rows(env, "SELECT count(*) FROM commands_batch") == [(0,)]


def test_runbatch_asks_before_a_rule_that_changes_machines(env, sshd):
    add(env, "alpha", sshd)
    manage(env, "allowcommand", "t_touchy", "printf touchy")
    path = env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE commands_allowedcommand SET confirm = 1 WHERE action_type = 't_touchy'"
        )

    asked = runbatch(env, "--server", "alpha", "--", "printf", "touchy")
    assert asked.returncode == 1 and "stdin is not a terminal: add --yes" in asked.stderr
    assert rows(env, "SELECT count(*) FROM commands_batch") == [(0,)]  # nothing ran

    yes = runbatch(env, "--server", "alpha", "--yes", "--", "printf", "touchy")
    assert yes.returncode == 0 and "alpha | touchy" in yes.stdout


def test_ctrl_c_cancels_the_batch_and_leaves_no_remote_process(env, sshd_factory, marker):
    add(env, "alpha", sshd_factory(), "pi")
    add(env, "beta", sshd_factory(), "pi")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runbatch", "--tag", "pi", "--", "sleep", marker],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert wait_for(lambda: len(processes_matching(f"sleep {marker}")) >= 2, timeout=30)
        process.send_signal(signal.SIGINT)
        asked = time.monotonic()
        out, err = process.communicate(timeout=5)  # within 5 s
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert time.monotonic() - asked < 5
    assert wait_for(lambda: not processes_matching(f"sleep {marker}"), timeout=3)
    assert rows(env, "SELECT status FROM commands_batch") == [("cancelled",)]
    statuses = rows(env, "SELECT status FROM commands_execution ORDER BY id")
    assert statuses == [("cancelled",), ("cancelled",)]
    assert "cancelled: 2" in out


def test_markinterrupted_closes_a_batch_whose_process_is_gone_and_prune_deletes_old_ones(env):
    dead = subprocess.Popen(["true"])
    dead.wait()
    path = env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO commands_batch (api_key_name, username, action_type, command, tag, "
            "requested, max_concurrency, options, status, runner, created_at) VALUES "
            "('', '', 't_echo', 'echo hi', 'pi', '[]', 1, '{}', 'running', ?, "
            "'2020-01-01 00:00:00')",
            (identity_of(dead.pid),),  # a process of this host that has exited
        )
    out = manage(env, "markinterrupted")
    assert "Marked 1 batch(es) as interrupted." in out
    assert rows(env, "SELECT status FROM commands_batch") == [("interrupted",)]
    pruned = manage(env, "pruneexecutions", "--older-than", "30")
    assert "0 execution(s) and 1 batch(es)" in pruned
