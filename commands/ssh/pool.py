"""The connection pool: SSHPooledExecutor and the process-wide instance.

Connections are opened by connect.py and each command is run by channel.py; this module
decides which connection a command uses and when a connection is closed.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence

import fabric
import paramiko

from commands.exceptions import Busy, CommandStopped, ConnectFailed, SSHError
from commands.ssh.channel import CommandResult, refused_elsewhere, run_command
from commands.ssh.connect import SSHTarget, connect, pinned_key

# The package's name, as these lines were logged before commands/ssh.py became a package.
logger = logging.getLogger("commands.ssh")

_OPEN_RETRY_CODES = {
    paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,  # MaxSessions reached
    paramiko.common.OPEN_FAILED_CONNECT_FAILED,  # slot not yet freed after the last exit
}


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


class SSHPooledExecutor:
    """Runs one command on one server over pooled, pinned, deadline-bound SSH connections.

    Connections are keyed by SSHTarget (host, port, user, key file, pinned host key), opened
    lazily, shared by threads up to `max_channels_per_connection` sessions each (below sshd's
    MaxSessions, 10 by default), at most `max_connections_per_target` per server (then
    requests queue for a free session) and closed after `idle_seconds` unused.
    """

    # Class attributes so tests (and callers) subclass instead of patching.
    max_connections_per_target = 4  # then requests queue for a free session
    open_retry_delay = 0.005  # first back-off after sshd refuses a session open
    # Observer hooks, for metrics (set by the services layer; this package knows neither
    # Django nor Prometheus): on_connected(target, seconds) after a connection is opened
    # and authenticated; on_changed(executor) after connections were opened or closed
    # (read open_connections() there). Called without the pool's lock held; an exception
    # in one is logged, never raised into a command.
    on_connected: Callable[[SSHTarget, float], None] | None = None
    on_changed: Callable[[SSHPooledExecutor], None] | None = None

    def __init__(
        self,
        *,
        idle_seconds: float = 300,
        keepalive_seconds: int = 15,
        max_channels_per_connection: int = 8,
        connect_timeout: float = 10,
        max_connections_per_target: int | None = None,
    ) -> None:
        if max_connections_per_target is not None:
            if max_connections_per_target < 1:
                raise ValueError("max_connections_per_target must be >= 1")
            # Per instance (HOMELAB_SSH_MAX_CONNECTIONS); the class attribute is the default.
            self.max_connections_per_target = max_connections_per_target
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
        self,
        target: SSHTarget,
        argv: Sequence[str],
        *,
        timeout: float,
        output_limit: int = 10240,
        on_output: Callable[[str, bytes], None] | None = None,
        stop: threading.Event | None = None,
    ) -> CommandResult:
        """Run argv on target; a CommandResult, or an SSHError (a command is never re-run).

        argv is the exact argument vector (the whitelist's); the wrapped command line is
        built from it once, in channel.py. CommandTimeout and ConnectionLost carry the
        output read so far as `.partial` (a CommandResult with exit_code -1).
        `on_output(stream, bytes)` sees output as it arrives; setting `stop` stops the
        remote process and raises CommandStopped (with `.partial`).
        """
        if timeout <= 0 or output_limit < 0:
            raise ValueError("timeout must be > 0 and output_limit >= 0")
        if isinstance(argv, str) or not argv:
            raise ValueError("argv must be a non-empty list of arguments, not a command line")
        pinned_key(target)  # an unpinned server is refused before any network I/O
        started = time.monotonic()
        pooled, chan = self._session(target, stop)
        try:
            return run_command(
                chan,
                argv,
                target=target,
                timeout=timeout,
                limit=output_limit,
                started=started,
                exec_timeout=self.connect_timeout,
                # The connection is unusable: no later command may get it.
                on_broken=lambda: self._evict(pooled),
                on_output=on_output,
                stop=stop,
            )
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
        if doomed:
            self._changed()

    def open_connections(self) -> dict[str, int]:
        """Open pooled connections per target name (those being opened not counted)."""
        counts: dict[str, int] = {}
        with self._cond:
            for target, conns in self._pool.items():
                opened = sum(1 for pooled in conns if pooled.conn is not None)
                if opened:
                    counts[target.name] = counts.get(target.name, 0) + opened
        return counts

    def _changed(self) -> None:
        if self.on_changed is not None:
            try:
                self.on_changed(self)
            except Exception:
                logger.exception("the SSH pool's on_changed observer failed")

    # --- getting a session -----------------------------------------------------------------
    def _session(
        self, target: SSHTarget, stop: threading.Event | None = None
    ) -> tuple[_Pooled, paramiko.Channel]:
        """A pooled connection with an open channel.

        A reused connection that cannot open a session (sshd restarted, peer frozen) is
        evicted and the next one tried, until a freshly opened connection fails too: nothing
        has run yet, so trying again is safe. Bounded, as other threads may add connections.
        """
        for _ in range(self.max_connections_per_target + 2):
            pooled = self._acquire(target, stop)
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
            f"every pooled SSH connection to {target.where} failed to open a session; "
            "nothing was run, try again"
        )

    def _open_channel(self, pooled: _Pooled) -> paramiko.Channel:
        where = pooled.target.where
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
                # A refusal paramiko reported to another thread's open: a refusal too.
                if not refused_elsewhere(exc, transport) or time.monotonic() + delay > deadline:
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
            started = time.monotonic()
            try:
                pooled.conn, pooled.sock = connect(
                    pooled.target, self.connect_timeout, self.keepalive_seconds
                )
            except SSHError as exc:
                pooled.open_error = exc
                self._evict(pooled)
                raise
        self._connected(pooled.target, time.monotonic() - started)
        return False

    def _connected(self, target: SSHTarget, seconds: float) -> None:
        if self.on_connected is not None:
            try:
                self.on_connected(target, seconds)
            except Exception:
                logger.exception("the SSH pool's on_connected observer failed")
        self._changed()

    # --- the pool ------------------------------------------------------------------------------
    def _acquire(self, target: SSHTarget, stop: threading.Event | None = None) -> _Pooled:
        """Reserve a session slot on a pooled connection, waiting while all are busy."""
        dead: list[_Pooled] = []
        try:
            with self._cond:
                return self._reserve(target, dead, stop)
        finally:
            for pooled in dead:  # closed outside the lock
                pooled.close()
            if dead:
                self._changed()

    def _reserve(
        self, target: SSHTarget, dead: list[_Pooled], stop: threading.Event | None = None
    ) -> _Pooled:
        """_acquire with _cond held; connections found closed are evicted (unused: into dead)."""
        deadline = time.monotonic() + self.connect_timeout
        self._start_reaper()
        while True:
            if stop is not None and stop.is_set():  # cancelled while queued: nothing ran
                raise CommandStopped()
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
                # Not an SSH failure: the server is fine, just fully used (503 + Retry-After).
                raise Busy(
                    f"all {len(conns) * self.max_channels_per_connection} SSH sessions to "
                    f"{target.where} stayed busy for {self.connect_timeout:g} s "
                    "(HOMELAB_SSH_MAX_CONNECTIONS connections x 8 sessions); nothing was run, "
                    "try again shortly"
                )
            # With a stop event, look at it now and then: _release does not know of it.
            self._cond.wait(remaining if stop is None else min(remaining, 0.1))

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
            evicted = pooled in conns
            if evicted:
                conns.remove(pooled)
            self._cond.notify_all()
        if evicted and pooled.conn is not None:
            self._changed()

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
            if doomed:
                self._changed()

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
