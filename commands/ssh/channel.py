"""Running one command on an already-open paramiko channel, under a deadline, with capped
output. Knows nothing of the pool: when the connection is unusable it says so (`on_broken`)
and the caller decides what to do with it."""

from __future__ import annotations

import logging
import re
import select
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

import paramiko
from paramiko.common import cMSG_CHANNEL_REQUEST
from paramiko.message import Message

from commands.exceptions import CommandStopped, CommandTimeout, ConnectionLost, SSHError
from commands.ssh.capped import CappedOutput
from commands.ssh.connect import SSHTarget

logger = logging.getLogger("commands.ssh")

# Why the process is stopped with a server-side `timeout -k` wrapper (measured on OpenSSH 9.2,
# see docs/performance.md): closing a channel without a pty leaves the remote process running;
# the "signal" channel request is refused for root logins ("session signalling requires
# privilege separation"); a pty would merge stderr into stdout. `timeout` (GNU coreutils)
# needs no pty, keeps stderr separate, kills the whole process group, and still fires if our
# connection or this process dies mid-command. It costs ~1.7 ms of fork+exec per command.
#
# The client's deadline starts before the exec request is sent, the server's timer only once
# the remote shell runs `timeout`, and the server's timer is SERVER_MARGIN_SECONDS longer:
# so the client sees the deadline first even when this machine is loaded, and a command the
# server stopped is still reported as a timeout (see run_command).
KILL_AFTER_SECONDS = 1  # `timeout -k`: SIGTERM at the deadline, SIGKILL this much later
SERVER_MARGIN_SECONDS = 0.5  # the server's deadline is the client's plus this
# How long we keep reading after our deadline while the server stops the command.
STOP_GRACE_SECONDS = SERVER_MARGIN_SECONDS + KILL_AFTER_SECONDS + 1.0
_WRAPPER_KILL_CODES = {124, 137, -1}  # `timeout`: TERM sent; KILL sent; killed by a signal
READ_CHUNK = 64 * 1024
STOP_POLL_SECONDS = 0.05  # how often a read loop looks at its stop event and exit status
# Once the exit status is in, how long stdout/stderr may stay quiet before the result is
# returned without their EOF. A background child the command left running (`sleep 300 &`)
# holds them open, so EOF may never come; output sshd still had in the pipe when it sent
# the status arrives well within this.
EOF_GRACE_SECONDS = 0.5
_PID_PREFIX = "homelab-pid:"
_PID_LINE = re.compile(rb"homelab-pid:([0-9]{1,10})\n")
# A login shell that prints more than this before our PID line (a chatty .bashrc) hides the
# PID: its output is passed on as is, and a cancel can only close the connection.
_PID_SCAN_LIMIT = 64 * 1024
_MISSING_TIMEOUT = re.compile(r"\btimeout: (command )?not found")


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    duration_ms: int
    stdout_cut_bytes: int = 0  # how many bytes of the stream `stdout` leaves out
    stderr_cut_bytes: int = 0


def server_side_command(argv: Sequence[str], timeout: float) -> str:
    """argv run under `timeout -k`, joined with shlex (never concatenated): the one place
    the command line the server's shell reads is built.

    The server's deadline is `timeout` + SERVER_MARGIN_SECONDS, so the client's comes first.
    The login shell first prints its PID on a line of its own (a constant of ours, read
    off stdout before the command's output), then `exec`s `timeout`, which keeps that PID
    and leads a process group: a cancel signals that group over a second channel.
    """
    seconds = f"{max(timeout, 0.001) + SERVER_MARGIN_SECONDS:.3f}".rstrip("0").rstrip(".")
    wrapped = ["timeout", "-k", str(KILL_AFTER_SECONDS), seconds, *argv]
    return f"echo {_PID_PREFIX}$$; exec {shlex.join(wrapped)}"


def _kill_command(pid: int) -> str:
    """Signal the remote command's process group (and its leader, in case it has not yet
    become one): `timeout` passes TERM on and sends KILL KILL_AFTER_SECONDS later."""
    return shlex.join(["kill", "-s", "TERM", "--", f"-{pid}", str(pid)])


class Streams:
    """Both streams of one command: their capped copies, the live observer, the remote PID."""

    def __init__(self, limit: int, on_output: Callable[[str, bytes], None] | None) -> None:
        self.out, self.err = CappedOutput(limit), CappedOutput(limit)
        self.on_output = on_output
        self.pid: int | None = None
        self._scan: bytearray | None = bytearray()  # stdout until the PID line is seen

    def stdout(self, data: bytes) -> None:
        if self._scan is not None:
            self._scan += data
            match = _PID_LINE.search(self._scan)
            if match:
                # 0 and 1 would make the kill signal the whole group or every process.
                self.pid = int(match[1]) if int(match[1]) >= 2 else None
                data = bytes(self._scan[: match.start()] + self._scan[match.end() :])
            elif len(self._scan) > _PID_SCAN_LIMIT:
                data = bytes(self._scan)
            else:
                return
            self._scan = None
        self._emit("stdout", self.out, data)

    def stderr(self, data: bytes) -> None:
        self._emit("stderr", self.err, data)

    def end(self) -> None:
        """The command is over: stdout held back looking for the PID line is output."""
        if self._scan:
            self._emit("stdout", self.out, bytes(self._scan))
        self._scan = None

    def _emit(self, stream: str, capped: CappedOutput, data: bytes) -> None:
        if not data:
            return
        capped.feed(data)
        if self.on_output is not None:
            try:
                self.on_output(stream, data)
            except Exception:  # a failing observer never stops the command or its result
                logger.warning("the live output observer failed; the stream stops here")
                self.on_output = None


def run_command(
    chan: paramiko.Channel,
    argv: Sequence[str],
    *,
    target: SSHTarget,
    timeout: float,
    limit: int,
    started: float,
    exec_timeout: float,
    on_broken: Callable[[], None],
    on_output: Callable[[str, bytes], None] | None = None,
    stop: threading.Event | None = None,
) -> CommandResult:
    """Run argv under the server-side `timeout` wrapper on chan; a CommandResult, or an
    SSHError (ConnectionLost and CommandTimeout carry the output so far as `.partial`).
    `on_broken` is called (before raising) when the connection is unusable.

    `limit` caps each stream; `started` is when the caller began (for duration_ms);
    `exec_timeout` bounds the server's reply to the exec request. `on_output(stream,
    bytes)` sees the output as it arrives. Setting `stop` stops the remote process and
    raises CommandStopped with the output so far.
    """
    wrapped = server_side_command(argv, timeout)
    where = target.where
    streams = Streams(limit, on_output)
    # Taken before the exec request: the server's `timeout` starts later, and later still
    # by SERVER_MARGIN_SECONDS, so this deadline passes first.
    deadline = time.monotonic() + timeout
    if stop is not None and stop.is_set():  # stopped before it started: never start it
        raise CommandStopped(_result(-1, streams, started))
    try:
        # The reply to the exec request is the server's, not the command's: a short
        # rule timeout must not turn a slow reply into a lost connection.
        accepted = send_exec(chan, wrapped, exec_timeout)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        on_broken()
        raise ConnectionLost(
            f"the connection to {where} failed while starting the command ({exc}); it may "
            "have run, so it was not retried"
        ) from None
    if not accepted:
        raise SSHError(f"{where} refused to run a command for {target.username}")
    if not pump(chan, streams, deadline, stop):
        if stop is not None and stop.is_set():
            _stopped(chan, streams, target, started, exec_timeout, on_broken)
        _timed_out(chan, streams, target, timeout, started, on_broken)
    streams.end()
    if chan.exit_status == -1 and not chan.transport.is_active():
        on_broken()
        lost = ConnectionLost(
            f"the connection to {where} dropped while the command ran; it may have "
            "finished or not, so it was not retried"
        )
        lost.partial = _result(-1, streams, started)  # what it printed before the loss
        raise lost
    if chan.exit_status in _WRAPPER_KILL_CODES and time.monotonic() >= deadline:
        # The server stopped it first: this thread was not scheduled in time to notice
        # its own deadline (a loaded machine). It is a timeout all the same.
        raise _timeout_error(target, timeout, _result(-1, streams, started))
    result = _result(chan.exit_status, streams, started)  # -1: killed by a signal
    if result.exit_code == 127 and _MISSING_TIMEOUT.search(result.stderr):
        raise SSHError(
            f"{where} has no `timeout` command, which homelab uses to stop timed-out "
            "commands; install GNU coreutils there"
        )
    return result


def _timed_out(
    chan: paramiko.Channel,
    streams: Streams,
    target: SSHTarget,
    timeout: float,
    started: float,
    on_broken: Callable[[], None],
) -> NoReturn:
    # The server-side `timeout` fires soon (SIGTERM, then SIGKILL); keep reading so the
    # partial output includes what the command printed while it was being stopped.
    if not pump(chan, streams, time.monotonic() + STOP_GRACE_SECONDS):
        on_broken()  # the server did not answer at all: do not reuse it
    streams.end()
    raise _timeout_error(target, timeout, _result(-1, streams, started))


def _stopped(
    chan: paramiko.Channel,
    streams: Streams,
    target: SSHTarget,
    started: float,
    exec_timeout: float,
    on_broken: Callable[[], None],
) -> NoReturn:
    """Stop the remote process on request, read what it prints meanwhile, CommandStopped."""
    if streams.pid is None:  # the PID line is the first thing the shell prints
        pump(chan, streams, time.monotonic() + 1.0, until_pid=True)
    killed = streams.pid is not None and _signal(chan.transport, streams.pid, exec_timeout)
    if not killed:
        logger.warning("could not signal the command on %s; its timeout will stop it", target.name)
    if not killed or not pump(chan, streams, time.monotonic() + STOP_GRACE_SECONDS):
        on_broken()  # closing the connection is all that is left to do
    streams.end()
    raise CommandStopped(_result(-1, streams, started))


def _signal(transport: paramiko.Transport, pid: int, timeout: float) -> bool:
    """Run the kill command for pid on a channel of its own; True once it was started.

    The channel is one more session on the connection: when sshd's MaxSessions is reached
    (many runs stopped at once, e.g. at shutdown) the open is refused, and retried until
    kills on other channels free a slot, within `timeout`.
    """
    chan = _open_retrying(transport, time.monotonic() + timeout)
    if chan is None:
        return False
    try:
        if not send_exec(chan, _kill_command(pid), timeout):
            return False
        chan.status_event.wait(timeout)
        return True
    except (paramiko.SSHException, EOFError, OSError):
        return False
    finally:
        chan.close()


def _open_retrying(transport: paramiko.Transport, deadline: float) -> paramiko.Channel | None:
    delay = 0.005
    while transport.is_active():
        try:
            return transport.open_session(timeout=max(deadline - time.monotonic(), 0.001))
        except paramiko.ChannelException:
            pass  # refused: no free session slot yet
        except (paramiko.SSHException, EOFError, OSError) as exc:
            # paramiko's one saved exception per transport: under concurrency a refusal
            # meant for another open surfaces here as a plain SSHException on a live link.
            if not refused_elsewhere(exc, transport):
                return None
        if time.monotonic() + delay > deadline:
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return None


def refused_elsewhere(exc: BaseException, transport: paramiko.Transport) -> bool:
    """Whether exc, raised by open_session, is a session refusal that paramiko reported to
    another thread: it keeps one saved exception per transport, and the open that missed
    it gets a plain SSHException while the connection itself is fine."""
    return type(exc) is paramiko.SSHException and transport.is_active()


def send_exec(chan: paramiko.Channel, command: str, timeout: float) -> bool:
    """Start command on chan; False if the server refused (nothing ran).

    Channel.exec_command waits for the server's answer with no deadline, so a silent peer
    would hang this thread; this sends the same request paramiko does and waits with one.
    """
    msg = Message()
    msg.add_byte(cMSG_CHANNEL_REQUEST)
    msg.add_int(chan.remote_chanid)
    msg.add_string("exec")
    msg.add_boolean(True)
    msg.add_string(command)
    chan._event_pending()
    chan.transport._send_user_message(msg)
    if not chan.event.wait(timeout):
        raise paramiko.SSHException(f"no answer to the exec request within {timeout:g} s")
    if chan.event_ready:
        return True
    if not chan.transport.is_active():
        raise chan.transport.get_exception() or EOFError("connection closed")
    return False


def _drain(chan: paramiko.Channel, streams: Streams) -> None:
    # Keep reading past the caps: the window stays open and the command runs to its end
    # (its exit code stays true); only the first `limit` bytes of each stream are kept.
    while chan.recv_ready() or chan.recv_stderr_ready():
        if chan.recv_ready():
            streams.stdout(chan.recv(READ_CHUNK))
        if chan.recv_stderr_ready():
            streams.stderr(chan.recv_stderr(READ_CHUNK))


def pump(
    chan: paramiko.Channel,
    streams: Streams,
    deadline: float,
    stop: threading.Event | None = None,
    *,
    until_pid: bool = False,
) -> bool:
    """Read both streams until the command ended (True), or the deadline passed or stop
    was set (False); with until_pid, also stop reading (True) once the PID is known.

    The command has ended at EOF with its exit status, or EOF_GRACE_SECONDS of quiet after
    the exit status (a background child of the command holds the streams open)."""
    # The channel's fileno() is a pipe paramiko sets on stdout, stderr and EOF. poll(),
    # not select(): a busy worker can hold descriptors above select's limit of 1024.
    poller = select.poll()
    poller.register(chan.fileno(), select.POLLIN)
    quiet_until: float | None = None  # set once the exit status is in, moved on by output
    while True:
        fresh = chan.recv_ready() or chan.recv_stderr_ready()
        _drain(chan, streams)
        if chan.closed or (chan.eof_received and chan.status_event.is_set()):
            _drain(chan, streams)
            return True
        if chan.status_event.is_set():
            if quiet_until is None or fresh:
                quiet_until = time.monotonic() + EOF_GRACE_SECONDS
            elif time.monotonic() >= quiet_until:
                return True  # the pool closes the channel: it is never reused
        if until_pid and streams.pid is not None:
            return True
        if stop is not None and stop.is_set():
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        # Neither a stop nor the exit status wakes the poll below (paramiko sets its pipe
        # for output and EOF only): look at them every STOP_POLL_SECONDS.
        remaining = min(remaining, STOP_POLL_SECONDS)
        if chan.eof_received:
            # Output is complete; only the exit status is still to come. Never
            # recv_exit_status(): it ignores timeouts.
            chan.status_event.wait(remaining)
        else:
            poller.poll(max(int(remaining * 1000), 1))


def _result(exit_code: int, streams: Streams, started: float) -> CommandResult:
    out, err = streams.out, streams.err
    return CommandResult(
        exit_code=exit_code,
        stdout=out.text(),
        stderr=err.text(),
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
        duration_ms=int((time.monotonic() - started) * 1000),
        stdout_cut_bytes=out.cut_bytes,
        stderr_cut_bytes=err.cut_bytes,
    )


def _timeout_error(target: SSHTarget, timeout: float, partial: CommandResult) -> CommandTimeout:
    exc = CommandTimeout(
        f"the command did not finish within {timeout:g} s on {target.where} and "
        "was stopped there; raise the rule's timeout if it needs longer"
    )
    exc.partial = partial
    return exc
