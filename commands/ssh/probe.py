"""A one-off SSH probe of a target, one step per method, for the server check.

commands/checks.py times the steps, names them and says how to fix a failed one; this
module only does the I/O. The probe opens a FRESH connection (never the pool's, whose
connections stay as they are) and `close()` ends it. A step that fails raises
`ProbeFailed(detail, reason=...)`; `reason` is a stable word the caller maps to a fix.

The host key is compared with the pin right after the key exchange, before any
authentication: when it is not pinned, or not the pinned one, the probe refuses every
later step, so nothing is ever sent to a server we have not recognised.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import paramiko

from commands.ssh.channel import Streams, pump, send_exec
from commands.ssh.connect import SSHTarget
from commands.ssh.hostkeys import describe_key, disabled_host_key_algorithms, parse_host_key
from commands.ssh.keys import KeyFileProblem, load_private_key
from commands.ssh.net import TcpFailed, open_tcp

OUTPUT_LIMIT = 4096  # a probe command prints a line; a chatty login shell is cut here


class ProbeFailed(Exception):
    """A probe step failed: `detail` says what was found, `reason` which way it failed."""

    def __init__(self, detail: str, *, reason: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.reason = reason


@dataclass(frozen=True)
class ProbeRun:
    """What one command printed and its exit code (-1: no exit status)."""

    exit_code: int
    stdout: str
    stderr: str


class Probe:
    """One fresh connection to target, taken step by step: tcp, host_key, key_file, auth,
    then any number of run(). Each wait is bounded by `timeout` seconds."""

    def __init__(self, target: SSHTarget, *, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.transport: paramiko.Transport | None = None
        self.pkey: paramiko.PKey | None = None
        self.host_key_verified = False

    @property
    def address(self) -> str:
        return f"{self.target.host}:{self.target.port}"

    def tcp(self) -> str:
        """Open the TCP connection."""
        try:
            self.sock = open_tcp(self.target.host, self.target.port, self.timeout)
        except TcpFailed as exc:
            detail = {
                "timeout": f"no answer from {self.address} within {self.timeout:g} s",
                "dns": f"{self.target.host!r} does not resolve ({exc.text})",
            }.get(exc.reason, f"{self.address}: {exc.text}")
            raise ProbeFailed(detail, reason=exc.reason) from None
        return f"{self.address} accepted the connection"

    def host_key(self) -> str:
        """The SSH key exchange, and the server's host key compared with the pin."""
        pinned, pin_error = None, ""
        if self.target.host_key:
            try:
                pinned = parse_host_key(self.target.host_key)
            except ValueError as exc:
                pin_error = str(exc)
        options = {}
        if pinned is not None:
            # As connect.py does: ask only for the pinned key's type, so a server with
            # several host keys presents the one we know.
            options["disabled_algorithms"] = {"keys": disabled_host_key_algorithms(pinned)}
        self.transport = paramiko.Transport(self.sock, **options)
        for name in ("banner_timeout", "handshake_timeout", "auth_timeout"):
            setattr(self.transport, name, self.timeout)
        try:
            self.transport.start_client(timeout=self.timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if pinned is not None and isinstance(exc, paramiko.IncompatiblePeer):
                raise ProbeFailed(
                    f"the server offers no {pinned.get_name()} host key, the type of the "
                    f"pinned {describe_key(pinned)}",
                    reason="changed",
                ) from None
            raise ProbeFailed(
                f"{self.address} accepted TCP but the SSH handshake failed ({exc})",
                reason="handshake",
            ) from None
        offered = self.transport.get_remote_server_key()
        if pin_error:
            raise ProbeFailed(
                f"the pinned host key is unusable ({pin_error}); the server offers "
                f"{describe_key(offered)}",
                reason="bad_pin",
            )
        if pinned is None:
            raise ProbeFailed(
                f"no host key is pinned; the server offers {describe_key(offered)}",
                reason="not_pinned",
            )
        if offered.asbytes() != pinned.asbytes():
            raise ProbeFailed(
                f"HOST KEY CHANGED: the server offers {describe_key(offered)} but "
                f"{describe_key(pinned)} is pinned; possible man-in-the-middle, or the "
                "server was reinstalled. Not logged in.",
                reason="changed",
            )
        self.host_key_verified = True
        return describe_key(offered)

    def key_file(self) -> str:
        """Load our private key: it exists, is readable, parses, has no passphrase.

        The detail never holds the key's content (nor its path: the caller adds it)."""
        path = self.target.key_filename
        if not path:
            raise ProbeFailed("no private key file is configured", reason="not_configured")
        try:
            self.pkey = load_private_key(path)
        except KeyFileProblem as exc:
            raise ProbeFailed(exc.detail, reason=exc.reason) from None
        return f"public half {describe_key(self.pkey)}"

    @property
    def public_key_line(self) -> str:
        """Our public key as an authorized_keys line (public: safe to show anywhere)."""
        return f"{self.pkey.get_name()} {self.pkey.get_base64()} homelab" if self.pkey else ""

    def auth(self) -> str:
        """Public-key authentication as the target's user."""
        if not self.host_key_verified or self.pkey is None:
            raise RuntimeError("auth() needs a verified host key and a loaded key first")
        user = self.target.username
        started = time.monotonic()
        try:
            remaining = self.transport.auth_publickey(user, self.pkey)
        except paramiko.BadAuthenticationType as exc:
            allowed = ", ".join(exc.allowed_types) or "nothing"
            raise ProbeFailed(
                f"sshd does not take a public key for {user} (it allows: {allowed})",
                reason="no_publickey",
            ) from None
        except paramiko.AuthenticationException:
            # paramiko has no type for a login that timed out: the clock tells it apart.
            if time.monotonic() - started >= self.timeout:
                raise ProbeFailed(
                    f"no answer to the login within {self.timeout:g} s", reason="timeout"
                ) from None
            raise ProbeFailed(
                f"sshd refused the key {describe_key(self.pkey)} for user {user}",
                reason="refused",
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            detail = f"the connection failed during login ({exc})"
            raise ProbeFailed(detail, reason="lost") from None
        if remaining or not self.transport.is_authenticated():
            methods = ", ".join(remaining) or "more"
            raise ProbeFailed(
                f"the key was accepted but sshd wants more for {user} ({methods})",
                reason="partial",
            )
        return f"logged in as {user} with {describe_key(self.pkey)}"

    def run(self, command: str) -> ProbeRun:
        """Run command (as given, no `timeout` wrapper) on a new channel of the
        authenticated connection; ProbeFailed(reason="timeout"/"channel") if it cannot."""
        if self.transport is None or not self.transport.is_authenticated():
            raise RuntimeError("run() needs an authenticated connection first")
        deadline = time.monotonic() + self.timeout
        try:
            channel = self.transport.open_session(timeout=self.timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ProbeFailed(f"sshd would not open a session ({exc})", reason="channel") from None
        streams = Streams(OUTPUT_LIMIT, None)
        try:
            if not send_exec(channel, command, self.timeout):
                raise ProbeFailed("sshd refused to run a command", reason="channel")
            if not pump(channel, streams, deadline):
                raise ProbeFailed(
                    f"`{command}` did not finish within {self.timeout:g} s", reason="timeout"
                )
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ProbeFailed(f"the connection failed ({exc})", reason="channel") from None
        finally:
            channel.close()
        streams.end()
        return ProbeRun(channel.exit_status, streams.out.text(), streams.err.text())

    def close(self) -> None:
        """End the connection (safe to call at any point, and twice)."""
        if self.transport is not None:
            self.transport.close()
        if self.sock is not None:
            self.sock.close()
