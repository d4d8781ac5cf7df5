"""Opening one authenticated Fabric Connection to a target, pinned to its host key; and
fetching a server's host key (the handshake alone) for an admin to pin."""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass

import fabric
import paramiko

from commands.exceptions import AuthFailed, ConnectFailed, HostKeyMismatch, HostKeyUnknown, SSHError
from commands.ssh.hostkeys import (
    disabled_host_key_algorithms,
    fingerprint,
    format_host_key,
    parse_host_key,
)
from commands.ssh.keys import KeyFileProblem, load_private_key
from commands.ssh.net import TcpFailed, open_tcp

# The package's name, as these lines were logged before commands/ssh.py became a package.
logger = logging.getLogger("commands.ssh")


@dataclass(frozen=True)
class SSHTarget:
    """Where and as whom to connect; hashable, so it keys the connection pool."""

    name: str
    host: str
    port: int
    username: str
    key_filename: str | None
    host_key: str  # pinned "TYPE BASE64"; empty means not pinned (connection refused)

    @property
    def where(self) -> str:
        """How errors name the target: `nas (10.0.0.5:22)`."""
        return f"{self.name} ({self.host}:{self.port})"

    @property
    def trust_hint(self) -> str:
        return f"`./manage.py trusthost {self.name}`"


def pinned_key(target: SSHTarget) -> paramiko.PKey:
    """The host key target must present; HostKeyUnknown when none (usable) is pinned."""
    if not target.host_key:
        raise HostKeyUnknown(
            f"host key for {target.where} is not pinned; run {target.trust_hint} after "
            "checking the fingerprint"
        )
    try:
        return parse_host_key(target.host_key)
    except ValueError as exc:
        raise HostKeyUnknown(
            f"the pinned host key for {target.where} is unusable ({exc}); run "
            f"{target.trust_hint} after checking the fingerprint"
        ) from None


def client_key(target: SSHTarget) -> paramiko.PKey:
    """Our private key, loaded here so a bad file is a clear AuthFailed (never its content)."""
    fix = "set HOMELAB_SSH_KEY_FILE or the server's key file"
    if target.key_filename is None:
        raise AuthFailed(f"no SSH private key is configured for {target.name}; {fix}")
    try:
        return load_private_key(target.key_filename)
    except KeyFileProblem as exc:
        if exc.reason == "encrypted":
            detail = (
                f"the SSH private key for {target.name} is encrypted with a passphrase, which "
                "homelab cannot enter; use an unencrypted deploy key (homelab uses no SSH agent)"
            )
        else:
            # Never the path or the content: both can be sensitive.
            logger.warning("cannot load the SSH key of %s: %s", target.name, exc.reason)
            detail = f"could not read the private key for {target.name}"
    raise AuthFailed(f"{detail}; {fix}") from None


def tcp_connect(host: str, port: int, timeout: float, where: str) -> socket.socket:
    """A TCP connection to host:port (`where` names it in errors), or ConnectFailed."""
    try:
        return open_tcp(host, port, timeout)
    except TcpFailed as exc:
        if exc.reason == "timeout":
            raise ConnectFailed(
                f"{where} did not accept a TCP connection within {timeout:g} s; "
                "check the address, the port and that the server is up"
            ) from None
        raise ConnectFailed(
            f"could not connect to {where}: {exc.text}; "
            "check the address, the port and that sshd is running"
        ) from None


def fetch_host_key(host: str, port: int = 22, timeout: float = 10.0) -> str:
    """The server's host key as 'TYPE BASE64', read from the handshake (no authentication)."""
    sock = tcp_connect(host, port, timeout, where=f"{host}:{port}")
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


def _fabric_connection(
    target: SSHTarget, timeout: float, pinned: paramiko.PKey, pkey: paramiko.PKey
) -> tuple[fabric.Connection, socket.socket]:
    sock = tcp_connect(target.host, target.port, timeout, target.where)
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
            "disabled_algorithms": {"keys": disabled_host_key_algorithms(pinned)},
        },
    )
    # Replace Fabric's default auto-add policy: only the pinned key is accepted.
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    name = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
    conn.client.get_host_keys().add(name, pinned.get_name(), pinned)
    return conn, sock


def connect(
    target: SSHTarget, timeout: float, keepalive: int
) -> tuple[fabric.Connection, socket.socket]:
    """An authenticated Fabric Connection to target (and its socket), or an SSHError."""
    pinned = pinned_key(target)
    pkey = client_key(target)
    conn, sock = _fabric_connection(target, timeout, pinned, pkey)
    started = time.monotonic()
    try:
        conn.open()
    except BaseException as exc:
        conn.close()
        sock.close()
        timed_out = time.monotonic() - started >= timeout
        raise _connect_error(target, exc, pinned, timeout, timed_out=timed_out) from None
    conn.transport.set_keepalive(keepalive)
    return conn, sock


def _connect_error(
    target: SSHTarget,
    exc: BaseException,
    pinned: paramiko.PKey,
    timeout: float,
    *,
    timed_out: bool,
) -> BaseException:
    where, trust = target.where, target.trust_hint
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyMismatch(
            f"host key for {where} changed: the server presented {fingerprint(exc.key)} but "
            f"{fingerprint(pinned)} is pinned; nothing was run. If the server was reinstalled, "
            f"check the fingerprint on it and run {trust}"
        )
    if isinstance(exc, paramiko.AuthenticationException) and not timed_out:
        # paramiko has no type for a login that timed out: the clock tells it apart.
        return AuthFailed(
            f"{where} refused our SSH key for user {target.username}; add the public key to "
            "that user's authorized_keys, or set HOMELAB_SSH_KEY_FILE or the server's key file"
        )
    if isinstance(exc, paramiko.IncompatiblePeer):
        # We offer only the pinned key's algorithms: no agreement means the server has no
        # key of that type (or shares no key exchange with us at all).
        return HostKeyMismatch(
            f"{where} offers no {pinned.get_name()} host key, the type pinned "
            f"({fingerprint(pinned)}), or no algorithm we accept ({exc}); nothing was run. "
            f"Check the server and run {trust}"
        )
    if isinstance(exc, paramiko.SSHException | EOFError | OSError):
        return ConnectFailed(
            f"SSH handshake with {where} failed within {timeout:g} s ({exc}); "
            "check that the port is sshd and the server is healthy"
        )
    return exc  # KeyboardInterrupt and programming errors pass through unchanged
