"""The bounded runner: every SSH command of this process runs on one thread executor.

A request first reserves a slot (waiting at most `busy_wait` seconds, else `Busy`), then
submits its work. Each running execution is registered with a stop event, so a cancel
(from this process or, through the channel layer, from another) and a shutdown reach it.
At interpreter exit (Ctrl-C, SIGTERM) running commands get `drain_seconds` to finish, then
are stopped on their servers, so the process exits promptly instead of waiting for them.

Plain threads and Django-free, except that each task closes its thread's database
connections when it ends (the ORM opens them per thread).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from commands.exceptions import Busy

logger = logging.getLogger(__name__)

CANCELLED = "cancelled"
INTERRUPTED = "interrupted"


# --- which process runs a command ----------------------------------------------------------
def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat):
    with the PID it names one process, even after the PID is reused."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            stat = file.read()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def _pid_namespace() -> str | None:
    """This process's PID namespace: PIDs only compare within one (containers)."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return None


def identity_of(pid: int) -> str:
    """'host:pid-namespace:pid:start' naming process pid of this machine."""
    host = socket.gethostname()[:64]
    return f"{host}:{_pid_namespace() or 0}:{pid}:{_start_ticks(pid) or 0}"


_identity: tuple[int, str] | None = None


def process_identity() -> str:
    """This process's identity, recorded on every row it runs (fork-safe)."""
    global _identity
    pid = os.getpid()
    if _identity is None or _identity[0] != pid:
        _identity = (pid, identity_of(pid))
    return _identity[1]


def process_alive(identity: str) -> bool | None:
    """Whether the process named by identity still runs: None when it cannot be told here
    (another host or PID namespace, no /proc, or a row that names no process)."""
    parts = identity.split(":")
    namespace = _pid_namespace()
    if len(parts) != 4 or namespace is None or not parts[2].isdecimal():
        return None
    host, their_namespace, pid, ticks = parts
    if host != socket.gethostname()[:64] or their_namespace != namespace:
        return None
    return _start_ticks(int(pid)) == ticks


def channel_name_for(identity: str) -> str:
    """The channel-layer channel a runner process listens on for cancel requests."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
    return f"homelab.runner.{digest}"


# --- the executor ------------------------------------------------------------------------
@dataclass
class Run:
    """One execution running in this process."""

    execution_id: int
    stop: threading.Event = field(default_factory=threading.Event)
    reason: str = ""  # why stop was set: CANCELLED or INTERRUPTED
    future: Future | None = None

    def request_stop(self, reason: str) -> None:
        if not self.stop.is_set():
            self.reason = reason
            self.stop.set()


class Runner:
    """A bounded thread executor for SSH work, with a registry of what is running."""

    def __init__(self, *, max_running: int, busy_wait: float, drain_seconds: float) -> None:
        self.max_running = max_running
        self.busy_wait = busy_wait
        self.drain_seconds = drain_seconds
        self._slots = threading.BoundedSemaphore(max_running)
        self._pool = ThreadPoolExecutor(max_workers=max_running, thread_name_prefix="homelab-run")
        self._runs: dict[int, Run] = {}
        self._lock = threading.Condition()
        self._closing = False
        self._early_stops: dict[int, str] = {}
        # Called once a shutdown has stopped the runs, e.g. to close rows nobody recorded.
        self.after_shutdown: Callable[[], None] | None = None

    def reserve(self) -> None:
        """Take a slot, waiting up to busy_wait seconds; Busy (503) when none frees."""
        if self._closing:
            raise Busy("This process is shutting down; nothing was run, try again shortly.")
        if not self._slots.acquire(timeout=self.busy_wait):
            raise Busy(
                f"All {self.max_running} runner slots of this process are busy "
                f"(HOMELAB_MAX_RUNNING); nothing was run, try again shortly."
            )

    def wait_for_slot(self, stop: threading.Event, poll: float = 0.2) -> bool:
        """Take a slot, waiting as long as it takes (a batch queues, it is never `busy`):
        True once taken; False when stop is set or a shutdown begins first."""
        while not stop.is_set() and not self._closing:
            if self._slots.acquire(timeout=poll):
                if self._closing:
                    self._slots.release()
                    return False
                return True
        return False

    @property
    def closing(self) -> bool:
        """A shutdown has begun: no new work is taken."""
        return self._closing

    def release(self) -> None:
        """Give back a slot reserved with reserve() that was not used by submit()."""
        self._slots.release()

    def submit(self, execution_id: int, work: Callable[[Run], Any], *, here: bool = False) -> Run:
        """Run work(run) in the slot reserve() took (Busy, and the slot given back, when a
        shutdown began meanwhile): on the executor, or with here=True on this thread,
        returning once it is done (a caller that waits for the result anyway saves the
        hand-over and, on its own database connection, a connect). Either way the run is
        registered, so a cancel and a shutdown reach it, and its slot is taken."""
        run = Run(execution_id)
        with self._lock:
            if self._closing:
                self._slots.release()
                raise Busy("This process is shutting down; nothing was run, try again shortly.")
            self._runs[execution_id] = run
            early = self._early_stops.pop(execution_id, None)
        if early:  # a cancel came between the row's save and this submit
            run.request_stop(early)
        if here:
            run.future = Future()
            try:
                run.future.set_result(work(run))
            except BaseException as exc:
                run.future.set_exception(exc)
            finally:
                self._done(run)
            return run
        try:
            run.future = self._pool.submit(self._task, run, work)
        except BaseException:
            self._done(run)
            raise
        return run

    def _task(self, run: Run, work: Callable[[Run], Any]) -> Any:
        try:
            return work(run)
        finally:
            self._done(run)
            close_idle_connections()

    def _done(self, run: Run) -> None:
        with self._lock:
            self._runs.pop(run.execution_id, None)
            self._lock.notify_all()
        self._slots.release()

    def stop(self, execution_id: int, reason: str) -> bool:
        """Ask a run of this process to stop; False if it does not run here (yet: the
        request is kept briefly, for a run whose row is saved but not yet submitted)."""
        with self._lock:
            run = self._runs.get(execution_id)
            if run is None:
                self._early_stops[execution_id] = reason
                while len(self._early_stops) > 1000:  # ids that never came: forget the oldest
                    del self._early_stops[next(iter(self._early_stops))]
                return False
        run.request_stop(reason)
        return True

    def running(self) -> list[int]:
        with self._lock:
            return list(self._runs)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing runs; False if something still does after timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._runs:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
        return True

    def shutdown(self, *, drain_seconds: float | None = None, grace: float = 4.0) -> None:
        """Refuse new work, let running commands drain, then stop the rest on their servers.

        `grace` bounds the wait for stopped runs to record themselves `interrupted`.
        """
        self._closing = True
        drain = self.drain_seconds if drain_seconds is None else drain_seconds
        if self.running() and drain > 0:
            logger.info("waiting up to %gs for %d running command(s)", drain, len(self.running()))
            self.wait_idle(drain)
        left = self.running()
        if left:
            logger.warning("stopping %d running command(s): shutting down", len(left))
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            run.request_stop(INTERRUPTED)
        if not self.wait_idle(grace):
            logger.error("commands still running after shutdown: %s", self.running())
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.after_shutdown is not None and (left or runs):
            try:
                self.after_shutdown()
            except Exception:
                logger.exception("could not close the rows of the stopped commands")


def close_idle_connections() -> None:
    """After a task on a reused thread (a runner's, an HTTP pool's): close its server
    connections past their CONN_MAX_AGE (0 by default: each task) or broken."""
    # A SQLite connection is a file handle nothing cuts: such a thread keeps its own (a
    # connect less per task). Imported here
    # so this module stays importable without Django set up.
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if connection.vendor != "sqlite":
            connection.close_if_unusable_or_obsolete()


_server_stopping = threading.Event()
_current: Callable[[], Runner | None] = lambda: None  # noqa: E731 (set by install_exit_hook)
_exit_hook_installed = False
_exit_hook_lock = threading.Lock()


def shutdown_current(*, server: bool = False) -> None:
    """Drain and stop this process's running commands; server=True: the ASGI server
    itself is stopping (Ctrl-C, SIGTERM), see _at_exit."""
    if server:
        _server_stopping.set()
    runner = _current()
    if runner is not None and runner.running():
        runner.shutdown()


EXIT_GRACE_SECONDS = 2.0


def _at_exit() -> None:
    shutdown_current()
    if _server_stopping.is_set():
        # Python now joins every worker thread. A request thread that was answering when
        # the server's event loop stopped can wait for that loop forever (asgiref's
        # AsyncToSync, seen with daphne): rather than hang on Ctrl-C, leave once the
        # grace is over. The commands are stopped and their rows recorded by now.
        threading.Thread(target=_exit_if_stuck, name="homelab-exit", daemon=True).start()


def _exit_if_stuck() -> None:
    time.sleep(EXIT_GRACE_SECONDS)
    logger.warning("request threads still blocked %gs after shutdown; exiting", EXIT_GRACE_SECONDS)
    logging.shutdown()
    os._exit(0)


def install_exit_hook(current: Callable[[], Runner | None]) -> None:
    """At interpreter exit, stop the runner current() names before Python joins threads.

    Python joins every ThreadPoolExecutor's threads at exit (the hook concurrent.futures
    registers with threading._register_atexit), so a running command would hold Ctrl-C
    until it ended. These hooks run in reverse order of registration: ours, registered
    later, runs first and stops the commands, then the join is quick. Installed once."""
    global _current, _exit_hook_installed
    with _exit_hook_lock:
        _current = current
        if _exit_hook_installed:
            return
        _exit_hook_installed = True
    register = getattr(threading, "_register_atexit", None)
    if register is None:  # pragma: no cover (CPython 3.9+ has it)
        import atexit

        atexit.register(_at_exit)
    else:
        register(_at_exit)
