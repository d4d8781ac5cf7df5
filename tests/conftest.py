"""Test bed: real OpenSSH sshd daemons on loopback, with throwaway keys.

Tests that need sshd never skip: when sshd is missing the fixtures fail with the fix
(`make test` installs Debian's openssh-server when run as root).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from tests.sshd import SSHD, SSHDaemon, keygen, public_key

# CI runs the property tests on a fixed seed: a failure there is reproducible, never a
# one-off. Locally they explore new examples on every run.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


@pytest.fixture(scope="session")
def django_db_modify_db_settings(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Test on a SQLite *file*, like the embedded deployment, not shared-cache memory.

    Shared-cache in-memory SQLite fails concurrent writers at once ("table is locked")
    instead of queuing them, which is not how the app runs; concurrency tests need the
    real behaviour.
    """
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database.setdefault("TEST", {})["NAME"] = str(
            tmp_path_factory.mktemp("db") / "test.sqlite3"
        )


@pytest.fixture(autouse=True)
def fresh_process_state():
    """No test sees another's throttle counts, runs, live logs or pooled SSH connections."""
    from django.core.cache import cache

    from commands.engine import process

    cache.clear()
    yield
    # The runner first (it stops what a test left running, before its sshd goes), then
    # the live log, then the SSH connections.
    process.reset_all()
    cache.clear()


@pytest.fixture(scope="session")
def ssh_keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None:
        pytest.fail(
            "OpenSSH server not found: install it (Debian: apt-get install openssh-server) "
            "or run `make test`, which does so as root."
        )
    return tmp_path_factory.mktemp("ssh-keys")


@pytest.fixture(scope="session")
def client_key(ssh_keydir: Path) -> Path:
    """A throwaway client private key that every test daemon accepts."""
    return keygen(ssh_keydir / "id_ed25519", "homelab-client")


@pytest.fixture(scope="session")
def other_client_key(ssh_keydir: Path) -> Path:
    """A second client key that no test daemon accepts (for auth-failure tests)."""
    return keygen(ssh_keydir / "id_other", "stranger")


@pytest.fixture
def sshd_factory(
    tmp_path_factory: pytest.TempPathFactory, client_key: Path
) -> Iterator[Callable[..., SSHDaemon]]:
    """Start as many daemons as a test wants; every one is stopped at the end."""
    started: list[SSHDaemon] = []

    def start(**kwargs) -> SSHDaemon:
        daemon = SSHDaemon(
            workdir=tmp_path_factory.mktemp("sshd"),
            authorized_keys=[public_key(client_key)],
            **kwargs,
        )
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture
def sshd(sshd_factory: Callable[..., SSHDaemon]) -> SSHDaemon:
    """One running sshd on a free loopback port."""
    return sshd_factory()


@pytest.fixture
def api_key(db):
    """A fresh API key row and its raw key: (ApiKey, str)."""
    from commands.models import ApiKey

    return ApiKey.objects.create_key(name="tests")


@pytest.fixture
def api_client(api_key):
    """An APIClient that sends a valid API key on every request."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key[1]}")
    return client


@pytest.fixture
def make_server(db, client_key):
    """Create a Server row pointing at a test daemon, host key pinned, key file set."""
    from commands.models import Server

    def make(daemon: SSHDaemon, **overrides) -> Server:
        fields = {
            "name": f"srv-{daemon.port}",
            "hostname": daemon.host,
            "port": daemon.port,
            "username": daemon.username,
            "key_file": str(client_key),
            "host_key": daemon.host_key,
            **overrides,
        }
        return Server.objects.create(**fields)

    return make


@pytest.fixture
def make_rule(db):
    """Create a whitelist rule: make_rule("t_echo", "echo {word}", word="^[a-z]+$")."""
    from commands.models import AllowedCommand

    def make(action_type: str, template: str, *, timeout: int = 10, servers=(), **params):
        rule = AllowedCommand.objects.create(
            action_type=action_type,
            template=template,
            parameters=params,
            timeout_seconds=timeout,
            all_servers=not servers,
        )
        rule.servers.set(servers)
        return rule

    return make


@pytest.fixture
def executor():
    """A private SSH executor (3 s connect deadline: a loaded 2-CPU machine needs it)."""
    from commands import ssh

    pool = ssh.SSHPooledExecutor(connect_timeout=3)
    yield pool
    pool.close()


@pytest.fixture
def target(sshd: SSHDaemon, client_key: Path):
    """The executor's target for the `sshd` daemon."""
    from tests.sshd import target_for

    return target_for(sshd, client_key)


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique `sleep` argument to find our remote process with ps; killed by PID at the end."""
    import contextlib
    import random
    import signal

    from tests.sshd import processes_matching

    value = f"1234.{random.randint(10**8, 10**9)}"
    yield value
    for pid in processes_matching(value):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def pytest_terminal_summary(terminalreporter) -> None:
    """Where the browser tests saved their screenshots (tests/browser.py): pytest keeps a
    passing test's output to itself, and CI's log should show them."""
    import sys

    browser = sys.modules.get("tests.browser")
    if browser is not None and browser.SCREENSHOTS:
        terminalreporter.section("screenshots")
        for path in browser.SCREENSHOTS:
            terminalreporter.write_line(str(path))
