"""SSH I/O: host-key helpers and (see below) the pooled command executor.

The only module that imports paramiko/fabric. It imports no Django models: callers pass
plain connection parameters (`SSHTarget`) and get plain results (`CommandResult`) or one
of the `commands.exceptions.SSHError` family.
"""

from __future__ import annotations

import base64
import hashlib
import socket
from dataclasses import dataclass

import paramiko

from commands.exceptions import ConnectFailed, SSHError


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
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise ConnectFailed(f"could not connect to {host}:{port}: {exc.strerror or exc}") from None
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
