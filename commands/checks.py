"""Checking a server step by step: can homelab reach it, trust it, log in and run commands?

One service, three entry points: `./manage.py checkserver NAME`, POST
/api/v1/servers/{id}/check and the admin's "Check" button all call `check_server`.
The SSH work is commands/ssh/probe.py, on a fresh connection closed at the end (the pool
is not touched). Each step is timed; the first failure stops the check, and its `fix`
says what to do. Nothing here returns or logs private key material.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from django.conf import settings

from commands import services
from commands.exceptions import (
    AuthFailed,
    ConnectFailed,
    HostKeyMismatch,
    HostKeyUnknown,
    SSHError,
)
from commands.models import Server
from commands.ssh.probe import Probe, ProbeFailed

logger = logging.getLogger(__name__)

# (name, label), in the order they run. The names are stable ids (API, admin, tests).
STEPS = (
    ("tcp", "TCP reachable"),
    ("host_key", "Host key matches the pin"),
    ("key_file", "Private key usable"),
    ("auth", "Public-key login accepted"),
    ("timeout", "`timeout` (coreutils) present"),
    ("round_trip", "No-op round trip"),
)
LABELS = dict(STEPS)
HIDDEN_PATH = "<key file>"

# The code of a failed step, by (step, reason): what execute answers for the same fault
# (its own exception classes, so the two lists cannot drift), or one of the check's own
# where execute has no code of its own for it (CHECK_CODES). (step, None) is the default.
STEP_CODES = {
    ("tcp", None): ConnectFailed.code,
    ("host_key", "not_pinned"): HostKeyUnknown.code,
    ("host_key", "bad_pin"): HostKeyUnknown.code,  # execute: "the pinned key is unusable"
    ("host_key", "changed"): HostKeyMismatch.code,
    ("host_key", None): ConnectFailed.code,  # the handshake itself failed
    ("key_file", None): AuthFailed.code,  # execute refuses a key it cannot load the same way
    ("auth", "timeout"): ConnectFailed.code,
    ("auth", "lost"): ConnectFailed.code,
    ("auth", None): AuthFailed.code,
    ("timeout", "missing"): "timeout_missing",
    ("timeout", None): SSHError.code,
    ("round_trip", "failed"): "round_trip_failed",
    ("round_trip", None): SSHError.code,
}
# Codes only a check gives (execute answers ssh_error where it meets the first two).
CHECK_CODES = {
    "timeout_missing": "`command -v timeout` found nothing: coreutils' timeout is missing",
    "round_trip_failed": "`true` exited non-zero: the user's shell does not run commands",
    "check_error": "an unexpected error in the check itself (a bug; see the service log)",
}


def step_code(name: str, reason: str) -> str:
    """The stable code of step `name` failed for `reason`."""
    return STEP_CODES.get((name, reason)) or STEP_CODES[(name, None)]


@dataclass(frozen=True)
class Step:
    name: str  # stable id: "tcp", "host_key", "key_file", "auth", "timeout", "round_trip"
    label: str  # human: "TCP reachable", "Host key matches the pin", ...
    ok: bool | None  # None = not run (an earlier step failed)
    ms: float | None  # duration of this step
    detail: str  # what was found, e.g. "256 SHA256:abc... (ED25519)" or the error
    fix: str  # for a failed step: the sentence that says how to fix it; "" otherwise
    code: str | None = None  # for a failed step: its stable code (STEP_CODES); else None


@dataclass(frozen=True)
class CheckReport:
    server: str  # server name
    ok: bool
    steps: list[Step]

    def as_dict(self) -> dict:
        """JSON-ready: {"server", "ok", "code", "steps": [{"name", "label", "ok", ...}]}."""
        steps = [asdict(s) for s in self.steps]
        return {"server": self.server, "ok": self.ok, "code": self.code, "steps": steps}

    @property
    def failed(self) -> Step | None:
        """The step that stopped the check, if one did."""
        return next((step for step in self.steps if step.ok is False), None)

    @property
    def code(self) -> str | None:
        """The failed step's code, or None when every step passed."""
        failed = self.failed
        return failed.code if failed is not None else None


def check_server(
    server: Server, *, timeout: float | None = None, hide_paths: bool = False
) -> CheckReport:
    """Run the steps against server; never raises for what the server or its settings get
    wrong (that is a failed step). `timeout` bounds each wait, HOMELAB_CONNECT_TIMEOUT by
    default. hide_paths: say "<key file>" for the private key's path (API answers)."""
    target = services.target_for(server)
    probe = Probe(target, timeout=float(timeout or settings.HOMELAB_CONNECT_TIMEOUT))
    key_path = HIDDEN_PATH if hide_paths else (target.key_filename or "")
    plan: dict[str, Callable[[], str]] = {
        "tcp": probe.tcp,
        "host_key": probe.host_key,
        "key_file": lambda: _key_file(probe, key_path),
        "auth": probe.auth,
        "timeout": lambda: _find_timeout(probe),
        "round_trip": lambda: _round_trip(probe),
    }
    steps: list[Step] = []
    try:
        for name, label in STEPS:
            if steps and steps[-1].ok is not True:
                steps.append(Step(name, label, None, None, "", ""))
                continue
            steps.append(_run_step(name, plan[name], server, probe, key_path))
    finally:
        probe.close()
    return CheckReport(server=server.name, ok=all(s.ok for s in steps), steps=steps)


def _run_step(
    name: str, step: Callable[[], str], server: Server, probe: Probe, key_path: str
) -> Step:
    started = time.perf_counter()
    code = None
    try:
        detail = step()
    except ProbeFailed as exc:
        ok, detail, fix = False, exc.detail, _fix(name, exc.reason, server, probe, key_path)
        code = step_code(name, exc.reason)
    except Exception as exc:  # a bug or a paramiko surprise: a failed step, not a crash
        logger.exception("the %s step of checking %s failed unexpectedly", name, server.name)
        ok, detail, code = False, f"unexpected error ({type(exc).__name__})", "check_error"
        fix = "This is a homelab bug: the service log has the traceback; please report it."
    else:
        ok, fix = True, ""
    ms = round((time.perf_counter() - started) * 1000, 1)
    return Step(name, LABELS[name], ok, ms, detail, fix, code)


def _key_file(probe: Probe, key_path: str) -> str:
    where = key_path or "the private key"
    try:
        return f"{where}: {probe.key_file()}"
    except ProbeFailed as exc:
        raise ProbeFailed(f"{where}: {exc.detail}", reason=exc.reason) from None


def _find_timeout(probe: Probe) -> str:
    # Our executor runs `exec timeout -k ...` through the user's shell (ssh/channel.py):
    # the same shell, the same PATH, answers this.
    found = probe.run("command -v timeout")
    path = found.stdout.strip()
    if found.exit_code != 0 or not path:
        said = (found.stderr.strip() or f"exit status {found.exit_code}")[:200]
        raise ProbeFailed(f"`command -v timeout` found nothing ({said})", reason="missing")
    return path[:200]


def _round_trip(probe: Probe) -> str:
    ran = probe.run("true")
    if ran.exit_code != 0:
        said = ran.stderr.strip()[:200] or "no error output"
        raise ProbeFailed(f"`true` exited {ran.exit_code} ({said})", reason="failed")
    return "`true` exited 0"


def _fix(name: str, reason: str, server: Server, probe: Probe, key_path: str) -> str:
    """The sentence that says how to fix step `name` failed for `reason`."""
    target = probe.target
    address, user, trust = probe.address, target.username, f"./manage.py trusthost {server.name}"
    check_on_server = "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` run on the server"
    if name == "tcp":
        return (
            f"Is sshd running on {address}? Check the hostname and port on the server's "
            "page, and any firewall."
        )
    if name == "host_key":
        return {
            "not_pinned": f'Run {trust} (or "Pin host key" in the admin) after checking the '
            f"fingerprint against {check_on_server}.",
            "bad_pin": f'Re-pin: run {trust} (or "Pin host key" in the admin) after checking '
            f"the fingerprint against {check_on_server}.",
            "changed": "Do not re-pin blindly: find out why the key changed. Compare the "
            f"fingerprint with {check_on_server} (on its console, not over this network); "
            f'only if they match (e.g. a reinstall), run {trust} (or "Pin host key" in the '
            "admin).",
        }.get(
            reason,
            f"Check that {address} is sshd's port (not another service) and that sshd is "
            "healthy; its log says why it dropped the handshake.",
        )
    if name == "key_file":
        return _key_file_fix(reason, key_path)
    if name == "auth":
        return {
            "refused": f"Add our public key to ~{user}/.ssh/authorized_keys on the server "
            f"(or fix the server's username): {probe.public_key_line}",
            "no_publickey": f"Allow public-key login for {user} in the server's sshd_config "
            "(PubkeyAuthentication yes), then reload sshd.",
            "partial": "homelab logs in with a key alone: drop the extra method from the "
            "server's AuthenticationMethods for this user.",
        }.get(
            reason,
            f"sshd on {address} did not complete the login in time: check the server's load "
            "and its sshd log (a slow reverse-DNS lookup is fixed with UseDNS no).",
        )
    if name == "timeout" and reason == "missing":
        return (
            "Install GNU coreutils on the server (apt-get install coreutils; Alpine: apk add "
            "coreutils): homelab runs every command as `timeout -k ... COMMAND` so a "
            f"timed-out one is stopped there. If it is installed, put it on the PATH of "
            f"{user}'s non-interactive shell."
        )
    return (
        f"sshd on {address} would not run a command for {user} in time: check that the user "
        "has a working login shell (not nologin, no ForceCommand) and the server's sshd log."
    )


def _key_file_fix(reason: str, key_path: str) -> str:
    path = key_path or "PATH"
    return {
        "not_configured": "Set HOMELAB_SSH_KEY_FILE, or the server's private key file (in "
        "the admin, or ./manage.py addserver NAME HOST --key-file PATH).",
        "missing": f"Create it (ssh-keygen -t ed25519 -N '' -f {path}) or point the server's "
        "key file (or HOMELAB_SSH_KEY_FILE) at the right one.",
        "unreadable": f"Let the user homelab runs as read it, and only that user: chown it to "
        f"that user, then chmod 600 {path}.",
        "encrypted": "homelab cannot enter a passphrase (it uses no SSH agent): remove it "
        f'with ssh-keygen -p -N "" -f {path} (it asks for the old one), or use a key made '
        "without one.",
    }.get(
        reason,
        f"Give the private half of an SSH key pair (not the .pub file): {path} must be what "
        "`ssh-keygen -t ed25519 -N ''` writes.",
    )
