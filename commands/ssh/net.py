"""The TCP connection under every SSH session, with its deadline and socket options."""

from __future__ import annotations

import socket


class TcpFailed(Exception):
    """No TCP connection: `reason` is "timeout", "dns" or "refused"; `text` what the
    system said (its strerror), for the caller to put in its own sentence."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason
        self.text = text


def open_tcp(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to host:port within timeout seconds, or TcpFailed."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        raise TcpFailed("timeout", f"no answer within {timeout:g} s") from None
    except socket.gaierror as exc:
        raise TcpFailed("dns", exc.strerror or str(exc)) from None
    except OSError as exc:
        raise TcpFailed("refused", exc.strerror or str(exc)) from None
    # paramiko leaves Nagle on: every channel open then waits ~40 ms for a delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock
