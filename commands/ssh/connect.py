"""Opening one authenticated Fabric Connection to a target, pinned to its host key."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

import fabric
import paramiko

from commands.exceptions import AuthFailed, ConnectFailed, HostKeyMismatch
from commands.ssh.hostkeys import _disabled_host_key_algorithms, _pinned_key, fingerprint

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


def _where(target: SSHTarget) -> str:
    return f"{target.name} ({target.host}:{target.port})"


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


def check_private_key(path: str) -> None:
    """Raise ValueError with the reason when path is not a private key homelab can use.

    For the operator's own CLI (addserver): the reason never holds the key's content, and
    the caller names the path.
    """
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except IsADirectoryError:
        raise ValueError("it is a directory, not a key file") from None
    except PermissionError:
        raise ValueError("this user may not read it (permission denied)") from None
    except OSError as exc:
        raise ValueError(f"cannot open it ({exc.strerror or type(exc).__name__})") from None
    try:
        paramiko.PKey.from_path(path)
    except (TypeError, paramiko.PasswordRequiredException):
        # paramiko 5.1 raises TypeError (from cryptography) for an encrypted key.
        raise ValueError(
            "it is protected by a passphrase, which homelab cannot enter (it uses no SSH "
            "agent); make a key without one: ssh-keygen -t ed25519 -f ~/.ssh/homelab_ed25519 -N ''"
        ) from None
    except Exception as exc:  # paramiko and cryptography raise many types for a bad file
        raise ValueError(
            f"it is not an SSH private key paramiko can read ({type(exc).__name__}); "
            "give the private half, not the .pub file"
        ) from None


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
    where, trust = _where(target), f"`./manage.py trusthost {target.name}`"
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
