"""The Prometheus metrics: what ran, what failed, how long it took, for the whole service.

Built with prometheus-client. With several ASGI workers on one host, set
PROMETHEUS_MULTIPROC_DIR (an empty directory, wiped by `./manage.py resetmetrics` before
the workers start): each worker then writes its samples to files there and a scrape of
any worker adds them all up (prometheus-client's multiprocess mode). Without it (one
process, the embedded default) the samples live in this process.

Labels are server names, action types, statuses and error codes: never a command string,
and never a value only a client chose (refused requests are counted by code alone).
The receivers that move these are in receivers.py; the SSH pool is watched through its
observer hooks (watch_pool), set where the services layer builds the pool.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import threading
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

if TYPE_CHECKING:
    from commands.ssh import SSHPooledExecutor, SSHTarget

MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")

# A `_created` sample per series would add a third to the scrape for nothing Prometheus
# needs (it detects counter resets itself).
disable_created_metrics()

# From a 5 ms `true` to a 30 min upgrade; one bucket less per decade than the default
# ladder would give keeps the scrape small at 100 servers x 20 action types.
DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1, 2.5, 10, 30, 60, 300, 900, 1800)
# A pooled connect: TCP, key exchange and authentication (HOMELAB_CONNECT_TIMEOUT bounds it).
CONNECT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# Refusals counted in homelab_rejected_total: the whitelist, a parameter, and who may do
# what (a key's scope, a session user's permission, a disabled server). Malformed bodies,
# unknown servers, busy runners and outages are not refusals of a command: the audit
# trail has them. `throttled` has its own counter.
REJECTED_CODES = (
    "not_whitelisted",
    "invalid_parameter",
    "key_scope",
    "permission_denied",
    "server_disabled",
)

EXECUTIONS = Counter(
    "homelab_executions",
    "Executions that ran and ended, by server, action type and final status.",
    ["server", "action_type", "status"],
)
DURATION = Histogram(
    "homelab_execution_duration_seconds",
    "How long executions ran, by server and action type.",
    ["server", "action_type"],
    buckets=DURATION_BUCKETS,
)
RUNNING = Gauge(
    "homelab_executions_running",
    "Executions running now.",
    multiprocess_mode="livesum",
)
THROTTLED = Counter(
    "homelab_throttled",
    "Execution requests refused because the caller was over its rate (429 throttled).",
)
REJECTED = Counter(
    "homelab_rejected",
    "Execution requests refused by the whitelist, a parameter pattern or a scope, by code.",
    ["code"],
)
SSH_CONNECTIONS = Gauge(
    "homelab_ssh_connections",
    "Open pooled SSH connections, by server.",
    ["server"],
    multiprocess_mode="livesum",
)
SSH_CONNECT = Histogram(
    "homelab_ssh_connect_seconds",
    "How long opening a pooled SSH connection took (TCP, key exchange, authentication).",
    buckets=CONNECT_BUCKETS,
)
STREAM_SUBSCRIBERS = Gauge(
    "homelab_stream_subscribers",
    "WebSocket clients following an execution's live output now.",
    multiprocess_mode="livesum",
)
BATCHES = Counter(
    "homelab_batches",
    "Batches (one command on many servers) that ended, by final status.",
    ["status"],
)
BUILD_INFO = Gauge(
    "homelab_build_info",
    "Always 1; the version of homelab serving, as a label.",
    ["version"],
    multiprocess_mode="livemax",
)


def version() -> str:
    """homelab's version, from pyproject.toml ("unknown" when it cannot be read)."""
    path = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        return str(tomllib.loads(path.read_text())["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def _initialise() -> None:
    """Series a dashboard expects from the start, at 0 (Prometheus' advice for known labels)."""
    BUILD_INFO.labels(version()).set(1)
    for code in REJECTED_CODES:
        REJECTED.labels(code)


_initialise()


# --- the SSH pool ----------------------------------------------------------------------------
_pool_lock = threading.Lock()
_servers_seen: set[str] = set()


def watch_pool(pool: SSHPooledExecutor) -> SSHPooledExecutor:
    """Hook pool's observers to the SSH metrics; pool."""
    pool.on_connected = _observe_connect
    pool.on_changed = _count_connections
    return pool


def _observe_connect(target: SSHTarget, seconds: float) -> None:
    SSH_CONNECT.observe(seconds)


def _count_connections(pool: SSHPooledExecutor) -> None:
    counts = pool.open_connections()
    with _pool_lock:
        # A server whose last connection closed shows 0, not its last count.
        _servers_seen.update(counts)
        for server in _servers_seen:
            SSH_CONNECTIONS.labels(server).set(counts.get(server, 0))


# --- the scrape ------------------------------------------------------------------------------
_LIVE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db$")


def render() -> tuple[bytes, str]:
    """The whole service's metrics in the Prometheus text format (0.0.4, which every
    Prometheus reads; our names need nothing newer), and its content type."""
    if not MULTIPROC_DIR:
        return generate_latest(REGISTRY), CONTENT_TYPE_PLAIN_0_0_4
    forget_dead_workers()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=MULTIPROC_DIR)
    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4


def forget_dead_workers() -> None:
    """Drop the gauges (running, connections, subscribers) of workers that are gone.

    A worker that exits cleanly drops its own (mark_dead_at_exit); one killed outright
    leaves its files, and what was running there is not running any more. Its counters
    stay: they are the service's history. PIDs compare only within one PID namespace:
    workers sharing the directory must share it (one host, one container)."""
    for path in glob.glob(os.path.join(MULTIPROC_DIR, "gauge_live*_*.db")):
        match = _LIVE_FILE.search(path)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                multiprocess.mark_process_dead(int(match.group(1)), MULTIPROC_DIR)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def mark_dead_at_exit() -> None:
    """This worker is stopping: its live gauges no longer count (multiprocess mode)."""
    if MULTIPROC_DIR:
        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(os.getpid(), MULTIPROC_DIR)
