"""Real OpenSSH sshd daemons on loopback for the tests (used by conftest.py).

Each daemon runs in the foreground (`sshd -D`) as a child of the test process, with its
own throwaway host key and config in a temporary folder, on a free 127.0.0.1 port; it is
stopped by its PID. Nothing here touches the machine's own sshd or ~/.ssh.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path, comment: str = "homelab-test") -> Path:
    """Write an ed25519 key pair at path / path.pub and return path."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return path


def public_key(path: Path) -> str:
    """'TYPE BASE64' of the public half of a key pair (the comment dropped)."""
    kind, b64, *_ = (path.with_name(path.name + ".pub")).read_text().split()
    return f"{kind} {b64}"


@dataclass
class SSHDaemon:
    """One sshd listening on 127.0.0.1:port, accepting the given client public keys."""

    workdir: Path
    authorized_keys: list[str]
    max_sessions: int = 10
    extra_config: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    username: str = field(default_factory=getpass.getuser)
    process: subprocess.Popen | None = None
    # Variables for every session, e.g. {"PATH": "/x"}. sshd honours only its first SetEnv
    # line, so these join that line rather than going into extra_config.
    environment: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host_key_path = keygen(self.workdir / "ssh_host_ed25519_key", "host")
        self.log_path = self.workdir / "sshd.log"
        self.write_config()

    @property
    def host_key(self) -> str:
        """The daemon's public host key as 'TYPE BASE64', what a Server pins."""
        return public_key(self.host_key_path)

    def write_config(self) -> None:
        auth_file = self.workdir / "authorized_keys"
        auth_file.write_text("".join(f"{key}\n" for key in self.authorized_keys))
        auth_file.chmod(0o600)
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.host_key_path}",
            f"PidFile {self.workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {auth_file}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            f"MaxSessions {self.max_sessions}",
            "MaxStartups 100:30:200",
            "LogLevel VERBOSE",
            # Root's ~/.bashrc on these machines runs `pyenv init` (~150 ms a command);
            # bash skips .bashrc for a non-interactive shell when SHLVL is set.
            " ".join(["SetEnv SHLVL=1", *(f"{k}={v}" for k, v in self.environment.items())]),
            "Subsystem sftp internal-sftp",
            *self.extra_config,
        ]
        (self.workdir / "sshd_config").write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> SSHDaemon:
        if self.process is not None and self.process.poll() is None:
            return self
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege-separation dir sshd insists on
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.workdir / "sshd_config")],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self.wait_for_banner(timeout)
        return self

    def wait_for_banner(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"sshd exited early:\n{self.log_path.read_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    if sock.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"sshd did not answer on {self.host}:{self.port}")

    def stop(self, sig: int = signal.SIGTERM, *, sessions: bool = True) -> None:
        """Stop the listening daemon by its PID and, unless sessions=False, its session
        processes too (sshd alone leaves them, and pooled connections, alive; a reboot
        would not). SIGTERM, then SIGKILL for whatever is still running after a grace."""
        if self.process is None:
            return
        children = self.session_pids() if sessions else []  # found while still its children
        signal_pids(children, signal.SIGTERM)
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None
        if not wait_for(lambda: not any(map(is_running, children)), timeout=5):
            signal_pids([pid for pid in children if is_running(pid)], signal.SIGKILL)
            wait_for(lambda: not any(map(is_running, children)), timeout=5)

    def kill(self) -> None:
        """A crash: SIGKILL the listener only; established connections survive it."""
        self.stop(signal.SIGKILL, sessions=False)

    def restart(self, *, sessions: bool = True) -> SSHDaemon:
        """Stop and start on the same port; sessions=False keeps established connections."""
        self.stop(sessions=sessions)
        return self.start()

    def session_pids(self) -> list[int]:
        """PIDs of sshd processes serving this daemon's connections (children of it)."""
        if self.process is None:
            return []
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)],
            capture_output=True,
            text=True,
        ).stdout
        return [int(pid) for pid in out.split()]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def accepted_connections(self) -> int:
        """How many client connections sshd authenticated, counted from its log."""
        return self.log().count("Accepted publickey")


def processes_matching(text: str) -> list[int]:
    """PIDs of this machine's processes whose command line contains text (the servers
    the tests talk to run here, so this is `ps` on the server side)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    pids = []
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if text in args and int(pid) != os.getpid():
            pids.append(int(pid))
    return pids


def signal_pids(pids: list[int], sig: int) -> None:
    """Send sig to each PID, ignoring those that already exited."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def is_running(pid: int) -> bool:
    """True while pid exists and is not a zombie (an exited child nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll predicate until it is true or timeout passes; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


SLACK = 5.0  # how long a wait for something that should happen at once may take


def target_for(daemon: SSHDaemon, key: Path, **changes: object):
    """The executor's SSHTarget for a test daemon, host key pinned."""
    from commands import ssh

    fields = {
        "name": "srv",
        "host": daemon.host,
        "port": daemon.port,
        "username": daemon.username,
        "key_filename": str(key),
        "host_key": daemon.host_key,
        **changes,
    }
    return ssh.SSHTarget(**fields)


def sh(script: str) -> list[str]:
    """A shell snippet as the service passes commands: an argv."""
    return ["sh", "-c", script]


def terminate(process: subprocess.Popen, *, group: bool = False, grace: float = 10) -> None:
    """Stop a process a test started, by its PID (or its process group): TERM, then KILL."""
    send = os.killpg if group else os.kill
    send(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        send(process.pid, signal.SIGKILL)
        process.wait()
