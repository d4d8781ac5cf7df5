"""SSH I/O: host-key helpers and (see below) the pooled command executor.

The only module that imports paramiko/fabric. It imports no Django models: callers pass
plain connection parameters (`SSHTarget`) and get plain results (`CommandResult`) or one
of the `commands.exceptions.SSHError` family.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import logging
import re
import select
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, NoReturn

import fabric
import paramiko
from paramiko.common import cMSG_CHANNEL_REQUEST
from paramiko.message import Message

from commands.exceptions import (
    AuthFailed,
    CommandTimeout,
    ConnectFailed,
    ConnectionLost,
    HostKeyMismatch,
    HostKeyUnknown,
    SSHError,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SSHTarget:
    """Where and as whom to connect; hashable, so it keys the connection pool."""

    name: str
    host: str
    port: int
    username: str
    key_filename: str | None
    host_key: str  # pinned "TYPE BASE64"; empty means not pinned (connection refused)


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    duration_ms: int


def parse_host_key(text: str) -> paramiko.PKey:
    """A PKey from 'TYPE BASE64 [comment]'; ValueError with the reason when malformed."""
    parts = text.strip().split()
    if len(parts) < 2:
        raise ValueError('a host key is "TYPE BASE64", e.g. "ssh-ed25519 AAAAC3Nz..."')
    kind, b64 = parts[0], parts[1]
    try:
        blob = base64.b64decode(b64, validate=True)
        key = paramiko.PKey.from_type_string(kind, blob)
    except Exception as exc:  # paramiko raises several types for a bad blob
        raise ValueError(f"not a valid {kind} public key ({exc.__class__.__name__})") from None
    return key


def format_host_key(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def fingerprint(host_key: str | paramiko.PKey) -> str:
    """OpenSSH-style 'SHA256:...' fingerprint, as `ssh-keygen -lf` prints it."""
    key = parse_host_key(host_key) if isinstance(host_key, str) else host_key
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def fetch_host_key(host: str, port: int = 22, timeout: float = 10.0) -> str:
    """The server's host key as 'TYPE BASE64', read from the handshake (no authentication)."""
    sock = _tcp_connect(host, port, timeout, where=f"{host}:{port}")
    transport = paramiko.Transport(sock)
    transport.banner_timeout = timeout
    transport.handshake_timeout = timeout
    try:
        transport.start_client(timeout=timeout)
        return format_host_key(transport.get_remote_server_key())
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise SSHError(f"SSH handshake with {host}:{port} failed: {exc}") from None
    finally:
        transport.close()


# --- the executor -------------------------------------------------------------------------
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
# server stopped is still reported as a timeout (see SSHPooledExecutor._run).
KILL_AFTER_SECONDS = 1  # `timeout -k`: SIGTERM at the deadline, SIGKILL this much later
SERVER_MARGIN_SECONDS = 0.5  # the server's deadline is the client's plus this
# How long we keep reading after our deadline while the server stops the command.
STOP_GRACE_SECONDS = SERVER_MARGIN_SECONDS + KILL_AFTER_SECONDS + 1.0
_WRAPPER_KILL_CODES = {124, 137, -1}  # `timeout`: TERM sent; KILL sent; killed by a signal
READ_CHUNK = 64 * 1024
_OPEN_RETRY_CODES = {
    paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,  # MaxSessions reached
    paramiko.common.OPEN_FAILED_CONNECT_FAILED,  # slot not yet freed after the last exit
}
_MISSING_TIMEOUT = re.compile(r"\btimeout: (command )?not found")


def _where(target: SSHTarget) -> str:
    return f"{target.name} ({target.host}:{target.port})"


def _server_side_command(command: str, timeout: float) -> str:
    """`command` run under `timeout -k`, rebuilt as argv with shlex (never concatenated).

    The server's deadline is `timeout` + SERVER_MARGIN_SECONDS, so the client's comes first.
    """
    seconds = f"{max(timeout, 0.001) + SERVER_MARGIN_SECONDS:.3f}".rstrip("0").rstrip(".")
    return shlex.join(["timeout", "-k", str(KILL_AFTER_SECONDS), seconds, *shlex.split(command)])


def _disabled_host_key_algorithms(pinned: paramiko.PKey) -> list[str]:
    """Every host-key algorithm except the pinned key's, so the server presents that one."""
    kind = pinned.get_name()
    allowed = {"rsa-sha2-256", "rsa-sha2-512", kind} if kind == "ssh-rsa" else {kind}
    return [name for name in paramiko.Transport._preferred_keys if name not in allowed]


def _pinned_key(target: SSHTarget) -> paramiko.PKey:
    if not target.host_key:
        raise HostKeyUnknown(
            f"host key for {_where(target)} is not pinned; run "
            f"`python manage.py trusthost {target.name}` after checking the fingerprint"
        )
    try:
        return parse_host_key(target.host_key)
    except ValueError as exc:
        raise HostKeyUnknown(
            f"the pinned host key for {_where(target)} is unusable ({exc}); run "
            f"`python manage.py trusthost {target.name}` after checking the fingerprint"
        ) from None


def _client_key(target: SSHTarget) -> paramiko.PKey:
    """Our private key, loaded here so a bad file is a clear AuthFailed (never its content)."""
    fix = "set HOMELAB_SSH_KEY_FILE or the server's key file"
    if target.key_filename is None:
        raise AuthFailed(f"no SSH private key is configured for {target.name}; {fix}")
    try:
        return paramiko.PKey.from_path(target.key_filename)
    except (TypeError, paramiko.PasswordRequiredException):
        # paramiko 5.1 raises TypeError (from cryptography) for an encrypted OpenSSH key.
        detail = (
            f"the SSH private key for {target.name} is encrypted with a passphrase, which "
            "homelab cannot enter; use an unencrypted deploy key (homelab uses no SSH agent)"
        )
    except Exception as exc:  # paramiko and cryptography raise many types for a bad file
        # Never the path or the content: both can be sensitive.
        logger.warning("cannot load the SSH key of %s: %s", target.name, type(exc).__name__)
        detail = f"could not read the private key for {target.name}"
    raise AuthFailed(f"{detail}; {fix}") from None


def _tcp_connect(host: str, port: int, timeout: float, where: str) -> socket.socket:
    """A TCP connection to host:port (`where` names it in errors), or ConnectFailed."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        raise ConnectFailed(
            f"{where} did not accept a TCP connection within {timeout:g} s; "
            "check the address, the port and that the server is up"
        ) from None
    except OSError as exc:
        raise ConnectFailed(
            f"could not connect to {where}: {exc.strerror or exc}; "
            "check the address, the port and that sshd is running"
        ) from None
    # paramiko leaves Nagle on: every channel open then waits ~40 ms for a delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


def _fabric_connection(
    target: SSHTarget, timeout: float, pinned: paramiko.PKey, pkey: paramiko.PKey
) -> tuple[fabric.Connection, socket.socket]:
    sock = _tcp_connect(target.host, target.port, timeout, _where(target))
    conn = fabric.Connection(
        host=target.host,
        user=target.username,
        port=target.port,
        # An explicit empty ssh_config and a lazy config: no ~/.ssh/config, no agent, no
        # config files can change where or how we connect.
        config=fabric.Config(lazy=True, ssh_config=paramiko.SSHConfig()),
        forward_agent=False,
        gateway=False,
        connect_kwargs={
            "sock": sock,
            "pkey": pkey,
            "look_for_keys": False,
            "allow_agent": False,
            "timeout": timeout,  # the whole key exchange (start_client)
            "banner_timeout": timeout,
            "auth_timeout": timeout,
            "channel_timeout": timeout,
            "disabled_algorithms": {"keys": _disabled_host_key_algorithms(pinned)},
        },
    )
    # Replace Fabric's default auto-add policy: only the pinned key is accepted.
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    name = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
    conn.client.get_host_keys().add(name, pinned.get_name(), pinned)
    return conn, sock


def _connect(
    target: SSHTarget, timeout: float, keepalive: int
) -> tuple[fabric.Connection, socket.socket]:
    """An authenticated Fabric Connection to target (and its socket), or an SSHError."""
    pinned = _pinned_key(target)
    pkey = _client_key(target)
    conn, sock = _fabric_connection(target, timeout, pinned, pkey)
    try:
        conn.open()
    except BaseException as exc:
        conn.close()
        sock.close()
        raise _connect_error(target, exc, pinned, timeout) from None
    conn.transport.set_keepalive(keepalive)
    return conn, sock


def _connect_error(
    target: SSHTarget, exc: BaseException, pinned: paramiko.PKey, timeout: float
) -> BaseException:
    where, trust = _where(target), f"`python manage.py trusthost {target.name}`"
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyMismatch(
            f"host key for {where} changed: the server presented {fingerprint(exc.key)} but "
            f"{fingerprint(pinned)} is pinned; nothing was run. If the server was reinstalled, "
            f"check the fingerprint on it and run {trust}"
        )
    if isinstance(exc, paramiko.AuthenticationException) and "timeout" not in str(exc):
        return AuthFailed(
            f"{where} refused our SSH key for user {target.username}; add the public key to "
            "that user's authorized_keys, or set HOMELAB_SSH_KEY_FILE or the server's key file"
        )
    if "no acceptable host key" in str(exc) or "requested host key type" in str(exc):
        return HostKeyMismatch(
            f"{where} offers no {pinned.get_name()} host key, the type pinned "
            f"({fingerprint(pinned)}); nothing was run. Check the server and run {trust}"
        )
    if isinstance(exc, paramiko.SSHException | EOFError | OSError):
        return ConnectFailed(
            f"SSH handshake with {where} failed within {timeout:g} s ({exc}); "
            "check that the port is sshd and the server is healthy"
        )
    return exc  # KeyboardInterrupt and programming errors pass through unchanged


class _CappedOutput:
    """One stream: keeps the first `limit` bytes, decodes UTF-8 across chunk boundaries."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = 0
        self.truncated = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._parts: list[str] = []

    def feed(self, data: bytes) -> None:
        room = self.limit - self.kept
        if len(data) > room:
            self.truncated = True
            data = data[:room]
        if data:
            self.kept += len(data)
            self._parts.append(self._decoder.decode(data))

    def text(self) -> str:
        # When cut, a character split by the cut is dropped rather than shown as U+FFFD.
        tail = "" if self.truncated else self._decoder.decode(b"", final=True)
        return "".join(self._parts) + tail


class _StaleConnection(Exception):
    """The pooled transport cannot open a session; nothing ran, so reconnecting is safe."""


class _Pooled:
    """One pooled Fabric Connection; counters are guarded by the executor's condition."""

    def __init__(self, target: SSHTarget) -> None:
        self.target = target
        self.open_lock = threading.Lock()  # Fabric's Connection is not thread-safe to open
        self.conn: fabric.Connection | None = None
        self.sock: socket.socket | None = None
        self.open_error: SSHError | None = None
        self.in_use = 0
        self.idle_since = time.monotonic()
        self.broken = False

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.sock is not None:
            self.sock.close()


def _send_exec(chan: paramiko.Channel, command: str, timeout: float) -> bool:
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


def _drain(chan: paramiko.Channel, out: _CappedOutput, err: _CappedOutput) -> None:
    # Keep reading past the caps: the window stays open and the command runs to its end
    # (its exit code stays true); only the first `limit` bytes of each stream are kept.
    while chan.recv_ready() or chan.recv_stderr_ready():
        if chan.recv_ready():
            out.feed(chan.recv(READ_CHUNK))
        if chan.recv_stderr_ready():
            err.feed(chan.recv_stderr(READ_CHUNK))


def _pump(chan: paramiko.Channel, out: _CappedOutput, err: _CappedOutput, deadline: float) -> bool:
    """Read both streams until the command ended (True) or the deadline passed (False)."""
    # The channel's fileno() is a pipe paramiko sets on stdout, stderr and EOF. poll(),
    # not select(): a busy worker can hold descriptors above select's limit of 1024.
    poller = select.poll()
    poller.register(chan.fileno(), select.POLLIN)
    while True:
        _drain(chan, out, err)
        if chan.closed or (chan.eof_received and chan.status_event.is_set()):
            _drain(chan, out, err)
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if chan.eof_received:
            # Output is complete; only the exit status is still to come. Never
            # recv_exit_status(): it ignores timeouts.
            chan.status_event.wait(remaining)
        else:
            poller.poll(max(int(remaining * 1000), 1))


def _result(
    exit_code: int, out: _CappedOutput, err: _CappedOutput, started: float
) -> CommandResult:
    return CommandResult(
        exit_code=exit_code,
        stdout=out.text(),
        stderr=err.text(),
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
        duration_ms=int((time.monotonic() - started) * 1000),
    )


def _timeout_error(target: SSHTarget, timeout: float, partial: CommandResult) -> CommandTimeout:
    exc = CommandTimeout(
        f"the command did not finish within {timeout:g} s on {_where(target)} and "
        "was stopped there; raise the rule's timeout if it needs longer"
    )
    exc.partial = partial
    return exc


class SSHPooledExecutor:
    """Runs one command on one server over pooled, pinned, deadline-bound SSH connections.

    Connections are keyed by SSHTarget (host, port, user, key file, pinned host key), opened
    lazily, shared by threads up to `max_channels_per_connection` sessions each (below sshd's
    MaxSessions, 10 by default) and closed after `idle_seconds` unused.
    """

    # Class attributes so tests (and callers) subclass instead of patching.
    max_connections_per_target = 4  # then requests queue for a free session
    open_retry_delay = 0.005  # first back-off after sshd refuses a session open

    def __init__(
        self,
        *,
        idle_seconds: float = 300,
        keepalive_seconds: int = 15,
        max_channels_per_connection: int = 8,
        connect_timeout: float = 10,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.keepalive_seconds = keepalive_seconds
        self.max_channels_per_connection = max_channels_per_connection
        self.connect_timeout = connect_timeout
        self._cond = threading.Condition()  # guards _pool and every _Pooled's counters
        self._pool: dict[SSHTarget, list[_Pooled]] = {}
        self._closed = False
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    def execute(
        self, target: SSHTarget, command: str, *, timeout: float, output_limit: int = 10240
    ) -> CommandResult:
        """Run `command` on target; a CommandResult, or an SSHError (a command is never re-run).

        `command` is a shell-safe string (shlex.join of an argv). CommandTimeout carries the
        output read so far as `.partial` (a CommandResult with exit_code -1).
        """
        if timeout <= 0 or output_limit < 0:
            raise ValueError("timeout must be > 0 and output_limit >= 0")
        _pinned_key(target)  # an unpinned server is refused before any network I/O
        started = time.monotonic()
        pooled, chan = self._session(target)
        try:
            wrapped = _server_side_command(command, timeout)
            return self._run(pooled, chan, wrapped, timeout, output_limit, started)
        finally:
            chan.close()
            self._release(pooled)

    def close(self) -> None:
        """Close every pooled connection; later execute() calls raise SSHError."""
        with self._cond:
            self._closed = True
            doomed = [pooled for conns in self._pool.values() for pooled in conns]
            self._pool.clear()
            self._cond.notify_all()
        self._stop.set()
        for pooled in doomed:
            pooled.broken = True
            pooled.close()

    # --- running one command ---------------------------------------------------------------
    def _run(
        self,
        pooled: _Pooled,
        chan: paramiko.Channel,
        command: str,
        timeout: float,
        limit: int,
        started: float,
    ) -> CommandResult:
        where = _where(pooled.target)
        out, err = _CappedOutput(limit), _CappedOutput(limit)
        # Taken before the exec request: the server's `timeout` starts later, and later still
        # by SERVER_MARGIN_SECONDS, so this deadline passes first.
        deadline = time.monotonic() + timeout
        try:
            # The reply to the exec request is the server's, not the command's: a short
            # rule timeout must not turn a slow reply into a lost connection.
            accepted = _send_exec(chan, command, self.connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self._evict(pooled)
            raise ConnectionLost(
                f"the connection to {where} failed while starting the command ({exc}); it may "
                "have run, so it was not retried"
            ) from None
        if not accepted:
            raise SSHError(f"{where} refused to run a command for {pooled.target.username}")
        if not _pump(chan, out, err, deadline):
            self._timed_out(pooled, chan, out, err, timeout, started)
        if chan.exit_status == -1 and not chan.transport.is_active():
            self._evict(pooled)
            raise ConnectionLost(
                f"the connection to {where} dropped while the command ran; it may have "
                "finished or not, so it was not retried"
            )
        if chan.exit_status in _WRAPPER_KILL_CODES and time.monotonic() >= deadline:
            # The server stopped it first: this thread was not scheduled in time to notice
            # its own deadline (a loaded machine). It is a timeout all the same.
            raise _timeout_error(pooled.target, timeout, _result(-1, out, err, started))
        result = _result(chan.exit_status, out, err, started)  # -1: killed by a signal
        if result.exit_code == 127 and _MISSING_TIMEOUT.search(result.stderr):
            raise SSHError(
                f"{where} has no `timeout` command, which homelab uses to stop timed-out "
                "commands; install GNU coreutils there"
            )
        return result

    def _timed_out(self, pooled, chan, out, err, timeout: float, started: float) -> NoReturn:
        # The server-side `timeout` fires soon (SIGTERM, then SIGKILL); keep reading so the
        # partial output includes what the command printed while it was being stopped.
        if not _pump(chan, out, err, time.monotonic() + STOP_GRACE_SECONDS):
            self._evict(pooled)  # the server did not answer at all: do not reuse it
        raise _timeout_error(pooled.target, timeout, _result(-1, out, err, started))

    # --- getting a session -----------------------------------------------------------------
    def _session(self, target: SSHTarget) -> tuple[_Pooled, paramiko.Channel]:
        """A pooled connection with an open channel.

        A reused connection that cannot open a session (sshd restarted, peer frozen) is
        evicted and the next one tried, until a freshly opened connection fails too: nothing
        has run yet, so trying again is safe. Bounded, as other threads may add connections.
        """
        for _ in range(self.max_connections_per_target + 2):
            pooled = self._acquire(target)
            try:
                reused = self._ensure_open(pooled)
                return pooled, self._open_channel(pooled)
            except _StaleConnection as exc:
                self._evict(pooled)
                self._release(pooled)
                if not reused:
                    raise ConnectFailed(f"{exc}; nothing was run") from None
                logger.info("SSH connection to %s was stale (%s); trying another", target.name, exc)
            except BaseException:
                self._release(pooled)
                raise
        raise ConnectFailed(
            f"every pooled SSH connection to {_where(target)} failed to open a session; "
            "nothing was run, try again"
        )

    def _open_channel(self, pooled: _Pooled) -> paramiko.Channel:
        where = _where(pooled.target)
        transport = pooled.conn.transport
        deadline = time.monotonic() + self.connect_timeout
        delay = self.open_retry_delay
        while True:
            if not transport.is_active():
                raise _StaleConnection(f"the connection to {where} was closed")
            try:
                return transport.open_session(timeout=max(deadline - time.monotonic(), 0.001))
            except paramiko.ChannelException as exc:
                # sshd frees a session slot a moment after the exit status; retrying is
                # safe because nothing ran.
                if exc.code not in _OPEN_RETRY_CODES or time.monotonic() + delay > deadline:
                    raise ConnectFailed(
                        f"{where} refused a new SSH session ({exc.text}); nothing was run. "
                        "Raise MaxSessions in its sshd_config or lower "
                        "max_channels_per_connection"
                    ) from None
            except (paramiko.SSHException, EOFError, OSError) as exc:
                # paramiko keeps one "saved exception" per transport, so under concurrency a
                # refusal meant for this open can surface in another thread and this one only
                # sees "Unable to open channel." while the transport is fine: a refusal too.
                refused = "Unable to open channel" in str(exc) and transport.is_active()
                if not refused or time.monotonic() + delay > deadline:
                    raise _StaleConnection(
                        f"{where} did not open an SSH session within "
                        f"{self.connect_timeout:g} s ({exc or type(exc).__name__})"
                    ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _ensure_open(self, pooled: _Pooled) -> bool:
        """Connect pooled if needed (one thread at a time); True if it was already open."""
        with pooled.open_lock:
            if pooled.conn is not None:
                return True
            if pooled.open_error is not None:  # another thread just failed to open it
                raise type(pooled.open_error)(pooled.open_error.detail)
            try:
                pooled.conn, pooled.sock = _connect(
                    pooled.target, self.connect_timeout, self.keepalive_seconds
                )
            except SSHError as exc:
                pooled.open_error = exc
                self._evict(pooled)
                raise
            return False

    # --- the pool ------------------------------------------------------------------------------
    def _acquire(self, target: SSHTarget) -> _Pooled:
        """Reserve a session slot on a pooled connection, waiting while all are busy."""
        dead: list[_Pooled] = []
        try:
            with self._cond:
                return self._reserve(target, dead)
        finally:
            for pooled in dead:  # closed outside the lock
                pooled.close()

    def _reserve(self, target: SSHTarget, dead: list[_Pooled]) -> _Pooled:
        """_acquire with _cond held; connections found closed are evicted (unused: into dead)."""
        deadline = time.monotonic() + self.connect_timeout
        self._start_reaper()
        while True:
            if self._closed:
                raise SSHError("the SSH executor is closed")
            conns = self._pool.setdefault(target, [])
            for pooled in list(conns):
                if pooled.conn is not None and not pooled.conn.transport.is_active():
                    pooled.broken = True  # its last user closes it (see _release)
                    conns.remove(pooled)
                    if not pooled.in_use:
                        dead.append(pooled)
                elif pooled.in_use < self.max_channels_per_connection:
                    pooled.in_use += 1
                    return pooled
            if len(conns) < self.max_connections_per_target:
                pooled = _Pooled(target)
                pooled.in_use = 1
                conns.append(pooled)
                return pooled
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConnectFailed(
                    f"all SSH sessions to {_where(target)} stayed busy for "
                    f"{self.connect_timeout:g} s; nothing was run, try again later"
                )
            self._cond.wait(remaining)

    def _release(self, pooled: _Pooled) -> None:
        with self._cond:
            pooled.in_use -= 1
            pooled.idle_since = time.monotonic()
            close_now = pooled.broken and pooled.in_use == 0
            self._cond.notify_all()
        if close_now:
            pooled.close()

    def _evict(self, pooled: _Pooled) -> None:
        """Take pooled out of the pool; its last user closes it (see _release)."""
        with self._cond:
            pooled.broken = True
            conns = self._pool.get(pooled.target, [])
            if pooled in conns:
                conns.remove(pooled)
            self._cond.notify_all()

    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(
                target=self._reap_forever, name="ssh-pool-reaper", daemon=True
            )
            self._reaper.start()

    def _reap_forever(self) -> None:
        interval = min(max(self.idle_seconds / 4, 0.05), 30.0)
        while not self._stop.wait(interval):
            with self._cond:
                doomed = self._take_idle(time.monotonic())
            for pooled in doomed:
                pooled.close()

    def _take_idle(self, now: float) -> list[_Pooled]:
        """Unused connections idle too long or already dead (call with _cond held)."""
        doomed = []
        for conns in self._pool.values():
            for pooled in list(conns):
                if pooled.in_use or pooled.conn is None:
                    continue
                dead = not pooled.conn.transport.is_active()
                if dead or now - pooled.idle_since >= self.idle_seconds:
                    pooled.broken = True
                    conns.remove(pooled)
                    doomed.append(pooled)
        return doomed


_instance: SSHPooledExecutor | None = None
_instance_lock = threading.Lock()


def get_executor(**options: Any) -> SSHPooledExecutor:
    """The process-wide executor shared by all requests, created on first use with options."""
    global _instance
    with _instance_lock:
        if _instance is None:
            _instance = SSHPooledExecutor(**options)
        return _instance


def close_all() -> None:
    """Close the process-wide executor's connections; the next get_executor() starts afresh."""
    global _instance
    with _instance_lock:
        executor, _instance = _instance, None
    if executor is not None:
        executor.close()
