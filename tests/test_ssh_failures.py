"""How the SSH executor fails, against real sshd daemons: pinned host keys, auth, deadlines,
dead and restarted peers. Every failure is one of the SSHError family with a detail that
says what to fix."""

from __future__ import annotations

import ast
import logging
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from commands import ssh
from commands.exceptions import (
    AuthFailed,
    ConnectFailed,
    ConnectionLost,
    HostKeyMismatch,
    HostKeyUnknown,
)
from tests.sshd import (
    SLACK,
    SSHDaemon,
    processes_matching,
    public_key,
    sh,
    signal_pids,
    target_for,
    wait_for,
)


@pytest.fixture
def quick_executor() -> Iterator[ssh.SSHPooledExecutor]:
    """For the tests about the connect deadline itself, which expect it to pass."""
    pool = ssh.SSHPooledExecutor(connect_timeout=1)
    yield pool
    pool.close()


@pytest.fixture
def encrypted_key(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    path = tmp_path / f"id_{request.param}_encrypted"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", request.param, "-N", "secret", "-f", str(path)], check=True
    )
    return path


@pytest.fixture
def rsa_host_key(tmp_path: Path) -> Path:
    path = tmp_path / "ssh_host_rsa_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(path)], check=True
    )
    return path


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections but never speaks SSH."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops our SYN, so connect() hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fillers = [socket.socket() for _ in range(4)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
        time.sleep(0.1)
        yield listener.getsockname()[1]
        for filler in fillers:
            filler.close()


def connections_seen(daemon: SSHDaemon) -> int:
    return daemon.log().count("Connection from")


# --- host keys ------------------------------------------------------------------------------
def test_an_unpinned_server_is_refused_before_any_connection(executor, sshd, client_key):
    before = connections_seen(sshd)
    target = target_for(sshd, client_key, host_key="")

    with pytest.raises(HostKeyUnknown) as caught:
        executor.execute(target, ["true"], timeout=5)

    assert caught.value.detail == (
        f"host key for srv ({sshd.host}:{sshd.port}) is not pinned; run "
        "`./manage.py trusthost srv` after checking the fingerprint"
    )
    assert connections_seen(sshd) == before


def test_a_changed_host_key_is_refused_before_auth_and_nothing_runs(
    executor, sshd, client_key, other_client_key, tmp_path
):
    wrong_pin = public_key(other_client_key)  # an ed25519 key, not the server's
    target = target_for(sshd, client_key, host_key=wrong_pin)
    touched = tmp_path / "ran"

    with pytest.raises(HostKeyMismatch) as caught:
        executor.execute(target, ["touch", str(touched)], timeout=5)

    detail = caught.value.detail
    assert ssh.fingerprint(sshd.host_key) in detail and ssh.fingerprint(wrong_pin) in detail
    assert "`./manage.py trusthost srv`" in detail
    assert not touched.exists()
    assert sshd.accepted_connections() == 0


def test_a_server_without_a_key_of_the_pinned_type_is_refused(
    executor, sshd, client_key, rsa_host_key
):
    target = target_for(sshd, client_key, host_key=public_key(rsa_host_key))

    with pytest.raises(HostKeyMismatch, match="offers no ssh-rsa host key"):
        executor.execute(target, ["true"], timeout=5)
    assert sshd.accepted_connections() == 0


def test_a_server_with_several_host_keys_presents_the_pinned_one(
    executor, sshd_factory, client_key, rsa_host_key
):
    daemon = sshd_factory(extra_config=[f"HostKey {rsa_host_key}"])
    by_rsa = target_for(daemon, client_key, name="by-rsa", host_key=public_key(rsa_host_key))
    by_ed25519 = target_for(daemon, client_key)

    assert executor.execute(by_rsa, ["echo", "rsa"], timeout=5).stdout == "rsa\n"
    assert executor.execute(by_ed25519, ["echo", "ed"], timeout=5).stdout == "ed\n"


# --- authentication -------------------------------------------------------------------------
def test_a_key_the_server_does_not_accept_fails_with_auth_failed(executor, sshd, other_client_key):
    with pytest.raises(AuthFailed) as caught:
        executor.execute(target_for(sshd, other_client_key), ["true"], timeout=5)

    assert "refused our SSH key for user" in caught.value.detail
    assert str(other_client_key) not in caught.value.detail


def test_no_configured_key_fails_with_auth_failed_naming_the_setting(executor, sshd, client_key):
    with pytest.raises(AuthFailed, match="set HOMELAB_SSH_KEY_FILE or the server's key file"):
        executor.execute(target_for(sshd, client_key, key_filename=None), ["true"], timeout=5)


@pytest.mark.parametrize("content", [None, "SECRET-LOOKING-CONTENT\n"])
def test_an_unusable_key_file_fails_without_revealing_its_path_or_content(
    executor, sshd, client_key, tmp_path, content, caplog
):
    key = tmp_path / "id_broken"
    if content is not None:
        key.write_text(content)

    with caplog.at_level(logging.DEBUG), pytest.raises(AuthFailed) as caught:
        executor.execute(target_for(sshd, client_key, key_filename=str(key)), ["true"], timeout=5)

    assert caught.value.detail.startswith("could not read the private key for srv;")
    for text in (caught.value.detail, caplog.text):
        assert str(key) not in text and "id_broken" not in text
        assert "SECRET" not in text


@pytest.mark.parametrize("encrypted_key", ["ed25519", "ecdsa", "rsa"], indirect=True)
def test_a_passphrase_protected_key_fails_with_auth_failed_saying_so(
    executor, sshd, encrypted_key, caplog
):
    # paramiko 5.1 raises TypeError for these, which used to escape as a 500.
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthFailed) as caught:
        executor.execute(target_for(sshd, encrypted_key), ["true"], timeout=5)

    assert "is encrypted with a passphrase" in caught.value.detail
    assert "unencrypted deploy key" in caught.value.detail
    assert encrypted_key.name not in caught.value.detail + caplog.text
    assert sshd.accepted_connections() == 0


# --- deadlines ------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_a_listener_that_never_speaks_ssh_fails_within_the_connect_deadline(
    quick_executor, sshd, client_key, silent_port
):
    target = target_for(sshd, client_key, port=silent_port)

    with pytest.raises(ConnectFailed, match=r"SSH handshake with srv .* failed within 1 s"):
        quick_executor.execute(target, ["true"], timeout=5)


@pytest.mark.timeout(30)
def test_a_tcp_connect_that_gets_no_answer_fails_within_the_connect_deadline(
    quick_executor, sshd, client_key, unanswered_port
):
    target = target_for(sshd, client_key, port=unanswered_port)

    with pytest.raises(ConnectFailed, match="did not accept a TCP connection within 1 s"):
        quick_executor.execute(target, ["true"], timeout=5)


def test_a_stopped_server_fails_with_connect_failed_even_with_a_pooled_connection(
    executor, sshd, client_key
):
    target = target_for(sshd, client_key)
    executor.execute(target, ["true"], timeout=5)
    sshd.stop()  # its sessions too, so the pooled connection is closed

    with pytest.raises(ConnectFailed, match="could not connect to srv"):
        executor.execute(target, ["true"], timeout=5)


# --- dead, frozen and restarted peers --------------------------------------------------------
@pytest.mark.timeout(30)
def test_a_frozen_connection_is_replaced_before_exec(executor, sshd, client_key):
    # The peer stops answering but the TCP connection stays up: is_active() stays true,
    # so only the channel-open deadline notices; nothing ran, so it reconnects.
    target = target_for(sshd, client_key)
    executor.execute(target, ["true"], timeout=5)
    frozen = sshd.session_pids()
    signal_pids(frozen, signal.SIGSTOP)
    try:
        assert executor.execute(target, ["echo", "again"], timeout=5).stdout == "again\n"
        assert sshd.accepted_connections() == 2
    finally:
        signal_pids(frozen, signal.SIGKILL)


@pytest.mark.timeout(30)  # channel open, then the handshake: each bounded by 1 s
def test_a_frozen_server_fails_within_the_deadlines_instead_of_hanging(
    quick_executor, sshd, client_key
):
    target = target_for(sshd, client_key)
    quick_executor.execute(target, ["true"], timeout=5)
    frozen = [sshd.process.pid, *sshd.session_pids()]
    signal_pids(frozen, signal.SIGSTOP)
    try:
        with pytest.raises(ConnectFailed, match=r"SSH handshake with srv .* failed within 1 s"):
            quick_executor.execute(target, ["true"], timeout=5)
    finally:
        signal_pids(frozen[1:], signal.SIGKILL)
        signal_pids(frozen[:1], signal.SIGCONT)


def test_sshd_restarted_between_two_commands_costs_one_new_connection(executor, sshd, client_key):
    target = target_for(sshd, client_key)
    assert executor.execute(target, ["echo", "one"], timeout=5).stdout == "one\n"
    sshd.restart()  # its sessions too, as a reboot would

    assert executor.execute(target, ["echo", "two"], timeout=5).stdout == "two\n"
    assert sshd.accepted_connections() == 2


@pytest.mark.timeout(60)
def test_every_stale_pooled_connection_is_replaced_after_sshd_restarts(executor, sshd, client_key):
    # Used to fail: the one retry landed on the second dead pooled connection.
    target = target_for(sshd, client_key)
    with ThreadPoolExecutor(max_workers=12) as threads:
        warm = list(
            threads.map(lambda i: executor.execute(target, sh("sleep 0.5"), timeout=10), range(12))
        )
    assert [r.exit_code for r in warm] == [0] * 12
    assert sshd.accepted_connections() >= 2  # 8 sessions per connection: two or more pooled
    sshd.restart()  # its sessions too, so both pooled connections are dead

    outputs = [executor.execute(target, ["echo", str(i)], timeout=5).stdout for i in range(3)]
    with ThreadPoolExecutor(max_workers=12) as threads:
        outputs += list(
            threads.map(
                lambda i: executor.execute(target, ["echo", str(i)], timeout=10).stdout, range(12)
            )
        )

    assert outputs == [f"{i}\n" for i in range(3)] + [f"{i}\n" for i in range(12)]


def test_a_connection_lost_mid_command_is_reported_and_never_retried(
    executor,
    sshd,
    client_key,
    tmp_path,
    marker,
):
    runs = tmp_path / "runs"
    command = ["sh", "-c", f"echo run >> {runs}; sleep {marker}"]
    target = target_for(sshd, client_key)
    executor.execute(target, ["true"], timeout=5)
    with ThreadPoolExecutor(max_workers=1) as thread:
        pending = thread.submit(executor.execute, target, command, timeout=2)
        assert wait_for(runs.exists, timeout=5)
        signal_pids(sshd.session_pids(), signal.SIGKILL)

        with pytest.raises(ConnectionLost, match="not retried"):
            pending.result(timeout=SLACK)

    assert runs.read_text() == "run\n"
    # The server-side deadline still stops the orphaned command.
    assert wait_for(lambda: not processes_matching(marker), timeout=2 + SLACK)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    modules = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    modules |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    return {name.split(".")[0] for name in modules}


def test_the_ssh_package_imports_no_django():
    package = Path(ssh.__file__).parent

    for path in sorted(package.glob("*.py")):
        assert "django" not in imported_modules(path), path.name


def test_only_the_ssh_package_imports_paramiko_or_fabric():
    # The application's code; tests and benches drive sshd with paramiko themselves.
    root = Path(ssh.__file__).parent.parent.parent
    package = Path(ssh.__file__).parent
    app_code = [*root.glob("commands/**/*.py"), *root.glob("homelab/**/*.py")]

    importers = {
        path.relative_to(root).as_posix()
        for path in app_code
        if {"paramiko", "fabric"} & imported_modules(path)
    }

    assert importers  # the scan found the package
    assert all(Path(root, name).parent == package for name in importers), importers
