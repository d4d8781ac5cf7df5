"""SSH I/O: host-key helpers and the pooled command executor.

The only code that imports paramiko/fabric. It imports no Django models: callers pass
plain connection parameters (`SSHTarget`) and get plain results (`CommandResult`) or one
of the `commands.exceptions.SSHError` family.

hostkeys.py parses, fingerprints and fetches host keys; connect.py opens one pinned,
authenticated connection; channel.py runs one command on an open channel; pool.py shares
connections between threads (`SSHPooledExecutor`, `get_executor`); probe.py checks a
server step by step on a fresh connection of its own (`Probe`, for commands/checks.py).
"""

# The SSHError family is re-exported: callers catch it as `ssh.ConnectFailed` and the like.
from commands.exceptions import (
    AuthFailed,
    CommandTimeout,
    ConnectFailed,
    ConnectionLost,
    HostKeyMismatch,
    HostKeyUnknown,
    SSHError,
)
from commands.ssh.channel import (
    KILL_AFTER_SECONDS,
    READ_CHUNK,
    SERVER_MARGIN_SECONDS,
    STOP_GRACE_SECONDS,
    CappedOutput,
    CommandResult,
    clean_text,
    run_command,
)
from commands.ssh.connect import SSHTarget, check_private_key
from commands.ssh.hostkeys import (
    describe_key,
    fetch_host_key,
    fingerprint,
    format_host_key,
    parse_host_key,
)
from commands.ssh.pool import SSHPooledExecutor, close_all, get_executor
from commands.ssh.probe import Probe, ProbeFailed, ProbeRun

__all__ = [
    "KILL_AFTER_SECONDS",
    "READ_CHUNK",
    "SERVER_MARGIN_SECONDS",
    "STOP_GRACE_SECONDS",
    "AuthFailed",
    "CappedOutput",
    "CommandResult",
    "CommandTimeout",
    "ConnectFailed",
    "ConnectionLost",
    "HostKeyMismatch",
    "HostKeyUnknown",
    "Probe",
    "ProbeFailed",
    "ProbeRun",
    "SSHError",
    "SSHPooledExecutor",
    "SSHTarget",
    "check_private_key",
    "clean_text",
    "close_all",
    "describe_key",
    "fetch_host_key",
    "fingerprint",
    "format_host_key",
    "get_executor",
    "parse_host_key",
    "run_command",
]
