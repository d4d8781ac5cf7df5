"""The SSH executor against real sshd daemons: results, output, timeouts and the pool.

Failure modes (host keys, auth, dead peers) are in test_ssh_failures.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from commands import ssh
from commands.exceptions import CommandTimeout
from commands.ssh import channel
from tests.sshd import processes_matching, sh, target_for, wait_for


@pytest.fixture
def loaded_machine() -> Iterator[None]:
    """More busy-loop processes than this 2-CPU machine has CPUs; stopped by PID at the end."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
    try:
        yield
    finally:
        for process in busy:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


# --- results ------------------------------------------------------------------------------
def test_it_runs_a_command_and_returns_its_output_and_exit_code(executor, target):
    result = executor.execute(target, ["echo", "hello world"], timeout=5)

    assert result.exit_code == 0
    assert result.stdout == "hello world\n"
    assert result.stderr == ""
    assert not result.stdout_truncated and not result.stderr_truncated
    assert result.duration_ms >= 0


def test_a_non_zero_exit_code_is_returned_not_raised(executor, target):
    assert executor.execute(target, sh("exit 3"), timeout=5).exit_code == 3


def test_stderr_is_kept_separate_from_stdout(executor, target):
    result = executor.execute(target, sh("echo out; echo err >&2"), timeout=5)

    assert (result.stdout, result.stderr) == ("out\n", "err\n")


def test_an_unknown_command_exits_127(executor, target):
    result = executor.execute(target, ["no-such-command-homelab"], timeout=5)

    assert result.exit_code == 127
    assert "no-such-command-homelab" in result.stderr


def test_shell_syntax_in_the_command_string_is_not_interpreted(executor, target, tmp_path):
    # The command is an argv joined by shlex; re-wrapping it must keep it one argv.
    victim = tmp_path / "victim"
    result = executor.execute(target, ["echo", f"x; touch {victim}"], timeout=5)

    assert result.stdout == f"x; touch {victim}\n"
    assert not victim.exists()


# --- output -------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_50_mb_of_output_is_capped_flagged_and_read_in_bounded_memory(executor, target):
    executor.execute(target, ["true"], timeout=5)  # the connection is opened outside the trace
    tracemalloc.start()
    try:
        result = executor.execute(
            target, sh("head -c 50000000 /dev/zero; head -c 3000000 /dev/zero >&2"), timeout=60
        )
        _, peak = tracemalloc.get_traced_memory()  # Python allocations, all threads
    finally:
        tracemalloc.stop()

    assert result.exit_code == 0  # drained to the end, so the real exit code
    assert result.stdout_truncated and result.stderr_truncated
    # Each stream is at most the cap in UTF-8, with no marker in it. NUL shows as U+FFFD,
    # three bytes: the first 1706 and the last 1707 of each stream fit in 10,240.
    for text, printed, cut in [
        (result.stdout, 50_000_000, result.stdout_cut_bytes),
        (result.stderr, 3_000_000, result.stderr_cut_bytes),
    ]:
        assert text == "\ufffd" * 3413
        assert len(text.encode()) <= 10240
        assert cut == printed - 3413
    assert peak < 5_000_000  # nowhere near the 53 MB printed


def test_the_output_limit_applies_to_each_stream_separately(executor, target):
    result = executor.execute(
        target, sh("printf 0123456789; printf ab >&2"), timeout=5, output_limit=4
    )

    # The first and the last two bytes; the six between them are counted, not marked.
    assert (result.stdout, result.stdout_truncated, result.stdout_cut_bytes) == ("0189", True, 6)
    assert (result.stderr, result.stderr_truncated, result.stderr_cut_bytes) == ("ab", False, 0)


def test_a_utf8_character_split_across_reads_is_decoded_whole(executor, target):
    # The euro sign's three bytes arrive in two SSH packets, 0.3 s apart.
    result = executor.execute(
        target, sh(r"printf '\342\202'; sleep 0.3; printf '\254!'"), timeout=5
    )

    assert result.stdout == "€!"


def test_invalid_utf8_becomes_replacement_characters(executor, target):
    result = executor.execute(target, sh(r"printf 'a\377b\342\202'"), timeout=5)

    assert result.stdout == "a\ufffdb\ufffd"


def test_a_cut_through_a_character_drops_it_instead_of_garbling_it(executor, target):
    # 9 bytes, 8 kept: "abc" + the euro sign's first byte, its last byte + "def"; the
    # euro sign, split by the cut, is dropped and counted as cut.
    result = executor.execute(target, sh("printf 'abc€def'"), timeout=5, output_limit=8)

    assert (result.stdout, result.stdout_truncated) == ("abcdef", True)
    assert result.stdout_cut_bytes == 3


# --- timeouts -----------------------------------------------------------------------------
@pytest.mark.timeout(30)  # the worker thread is freed, not held until `sleep` ends
def test_a_timeout_stops_the_remote_process_and_returns_the_partial_output(
    executor, target, marker
):
    command = sh(f"echo started; echo warming >&2; sleep {marker}")

    with pytest.raises(CommandTimeout) as caught:
        executor.execute(target, command, timeout=1)

    partial = caught.value.partial
    assert (partial.exit_code, partial.stdout, partial.stderr) == (-1, "started\n", "warming\n")
    assert "did not finish within 1 s on srv" in caught.value.detail
    assert wait_for(lambda: not processes_matching(marker), timeout=5)


@pytest.mark.timeout(30)
def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(executor, target, marker):
    with pytest.raises(CommandTimeout):
        executor.execute(target, sh(f"trap '' TERM; sleep {marker}"), timeout=1)

    assert wait_for(lambda: not processes_matching(marker), timeout=5)


@pytest.mark.timeout(60)
def test_a_timeout_is_reported_as_a_timeout_even_on_a_loaded_machine(
    executor, target, marker, loaded_machine
):
    # Before the client's deadline started ahead of the server's, the server's `timeout`
    # won this race about one run in five here: exit 124, returned as a normal result.
    def run(_: int) -> object:
        try:
            return executor.execute(target, sh(f"sleep {marker}"), timeout=0.3)
        except CommandTimeout as exc:
            return exc

    with ThreadPoolExecutor(max_workers=4) as threads:
        outcomes = list(threads.map(run, range(20)))

    assert [type(outcome).__name__ for outcome in outcomes] == ["CommandTimeout"] * 20
    assert {outcome.partial.exit_code for outcome in outcomes} == {-1}


@pytest.mark.timeout(30)
def test_a_command_the_server_stopped_first_is_still_a_timeout(
    executor, target, marker, monkeypatch
):
    # Simulates this thread being scheduled too late to notice its deadline: the server's
    # `timeout` stops the command first and it "finishes" with 124.
    pump = channel.pump

    def late_pump(chan, streams, deadline: float, *args, **kwargs) -> bool:
        return pump(chan, streams, deadline + 5, *args, **kwargs)  # the server stops it in 1 s

    monkeypatch.setattr(channel, "pump", late_pump)

    with pytest.raises(CommandTimeout) as caught:
        executor.execute(target, sh(f"echo started; sleep {marker}"), timeout=0.3)

    assert (caught.value.partial.exit_code, caught.value.partial.stdout) == (-1, "started\n")


def test_a_command_exiting_124_on_its_own_within_the_timeout_is_a_result(executor, target):
    assert executor.execute(target, sh("exit 124"), timeout=5).exit_code == 124


@pytest.mark.timeout(30)
def test_the_connection_is_reused_after_a_timeout(executor, target, sshd, marker):
    with pytest.raises(CommandTimeout):
        executor.execute(target, sh(f"sleep {marker}"), timeout=1)

    assert executor.execute(target, ["true"], timeout=5).exit_code == 0
    assert sshd.accepted_connections() == 1


# --- the pool -----------------------------------------------------------------------------
def test_twenty_sequential_commands_use_one_tcp_connection(executor, target, sshd):
    outputs = [executor.execute(target, ["echo", str(i)], timeout=5).stdout for i in range(20)]

    assert outputs == [f"{i}\n" for i in range(20)]
    assert sshd.accepted_connections() == 1
    assert len(sshd.session_pids()) == 1  # one sshd child serves the one connection


def test_twenty_concurrent_commands_all_succeed_against_max_sessions_10(
    executor, sshd_factory, client_key
):
    daemon = sshd_factory(max_sessions=10)
    target = target_for(daemon, client_key)

    with ThreadPoolExecutor(max_workers=20) as threads:
        results = list(
            threads.map(
                lambda i: executor.execute(target, sh(f"sleep 0.3; echo {i}"), timeout=10),
                range(20),
            )
        )

    assert [r.stdout for r in results] == [f"{i}\n" for i in range(20)]
    assert daemon.accepted_connections() <= 3  # 8 sessions per connection, then another one


class OneConnectionExecutor(ssh.SSHPooledExecutor):
    max_connections_per_target = 1


def test_requests_beyond_the_session_cap_wait_for_a_slot_instead_of_failing(
    sshd_factory, client_key
):
    # Cap == MaxSessions: sshd frees a slot a moment after the exit status, so opens are
    # refused under load and must be retried; the cold pool also opens under contention.
    daemon = sshd_factory(max_sessions=10)
    target = target_for(daemon, client_key)
    pool = OneConnectionExecutor(max_channels_per_connection=10, connect_timeout=5)
    try:
        with ThreadPoolExecutor(max_workers=20) as threads:
            for _ in range(3):
                results = list(
                    threads.map(
                        lambda i: pool.execute(target, ["echo", str(i)], timeout=10), range(20)
                    )
                )
                assert [r.stdout for r in results] == [f"{i}\n" for i in range(20)]
    finally:
        pool.close()
    assert daemon.accepted_connections() == 1


def test_an_idle_connection_is_closed_after_idle_seconds(sshd, target):
    pool = ssh.SSHPooledExecutor(idle_seconds=0.3)
    try:
        pool.execute(target, ["true"], timeout=5)
        assert wait_for(lambda: not sshd.session_pids(), timeout=5)

        assert pool.execute(target, ["true"], timeout=5).exit_code == 0
        assert sshd.accepted_connections() == 2
    finally:
        pool.close()


def test_the_service_executor_is_one_shared_instance_until_a_reset():
    from commands import services
    from commands.engine import process

    process.reset_all()
    seen: list[ssh.SSHPooledExecutor] = []
    threads = [threading.Thread(target=lambda: seen.append(services.executor())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len({id(instance) for instance in seen}) == 1
    process.reset_all()
    assert seen[0]._closed  # the reset closed its connections
    assert services.executor() is not seen[0]
    process.reset_all()
