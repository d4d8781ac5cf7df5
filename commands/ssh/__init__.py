"""SSH I/O: host-key helpers and the pooled command executor.

The only code that imports paramiko/fabric. It imports no Django models: callers pass
plain connection parameters (`SSHTarget`) and get plain results (`CommandResult`) or one
of the `commands.exceptions.SSHError` family.

It takes an argv list and builds the command line the server runs once (channel.py).
capped.py keeps a stream's output within its cap; net.py opens the TCP connection;
keys.py loads our private key; hostkeys.py parses, checks and fingerprints host keys;
connect.py opens one pinned, authenticated connection (and fetches a server's host key);
channel.py runs one command on an open channel; pool.py shares connections between
threads (`SSHPooledExecutor`); probe.py checks a server step by step on a fresh
connection of its own (`Probe`, for commands/checks.py).
The process-wide executor is the services layer's (commands/services.py).
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
from commands.ssh.capped import CappedOutput, clean_text
from commands.ssh.channel import (
    KILL_AFTER_SECONDS,
    READ_CHUNK,
    SERVER_MARGIN_SECONDS,
    STOP_GRACE_SECONDS,
    CommandResult,
    run_command,
    server_side_command,
)
from commands.ssh.connect import SSHTarget, fetch_host_key
from commands.ssh.hostkeys import (
    check_host_key_strength,
    describe_key,
    fingerprint,
    format_host_key,
    keygen_fingerprint,
    parse_host_key,
)
from commands.ssh.keys import check_private_key
from commands.ssh.pool import SSHPooledExecutor
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
    "check_host_key_strength",
    "check_private_key",
    "clean_text",
    "describe_key",
    "fetch_host_key",
    "fingerprint",
    "format_host_key",
    "keygen_fingerprint",
    "parse_host_key",
    "run_command",
    "server_side_command",
]
