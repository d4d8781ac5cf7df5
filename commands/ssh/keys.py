"""Our private key: loading it, and saying plainly why a file is not one homelab can use.

The one place a private key file is read (the executor, the server check and addserver
all come here). No message ever holds the key's content, nor its path: the caller names
the path where it may (the operator's own CLI) and hides it where it may not (the API).
"""

from __future__ import annotations

import paramiko


class KeyFileProblem(Exception):
    """The key file is unusable: `reason` is a stable word ("missing", "unreadable",
    "invalid", "encrypted"); the message says what was found, in words."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def load_private_key(path: str) -> paramiko.PKey:
    """The private key in the file at path, or KeyFileProblem saying why not."""
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise KeyFileProblem("missing", "no such file") from None
    except IsADirectoryError:
        raise KeyFileProblem("invalid", "it is a directory, not a key file") from None
    except PermissionError:
        raise KeyFileProblem(
            "unreadable", "this user may not read it (permission denied)"
        ) from None
    except OSError as exc:
        detail = f"cannot open it ({exc.strerror or type(exc).__name__})"
        raise KeyFileProblem("unreadable", detail) from None
    try:
        return paramiko.PKey.from_path(path)
    except (TypeError, paramiko.PasswordRequiredException):
        # paramiko 5.1 raises TypeError (from cryptography) for an encrypted OpenSSH key.
        raise KeyFileProblem("encrypted", "it is protected by a passphrase") from None
    except Exception as exc:  # paramiko and cryptography raise many types for a bad file
        detail = f"not an SSH private key paramiko can read ({type(exc).__name__})"
        raise KeyFileProblem("invalid", detail) from None


def check_private_key(path: str) -> None:
    """Raise ValueError with the reason (and the fix) when path is not a private key
    homelab can use. For the operator's own CLI (addserver), which names the path."""
    try:
        load_private_key(path)
    except KeyFileProblem as exc:
        if exc.reason == "encrypted":
            raise ValueError(
                "it is protected by a passphrase, which homelab cannot enter (it uses no SSH "
                "agent); make a key without one: ssh-keygen -t ed25519 -f "
                "~/.ssh/homelab_ed25519 -N ''"
            ) from None
        if exc.reason == "invalid" and exc.detail.startswith("not an SSH"):
            raise ValueError(
                f"it is {exc.detail}; give the private half, not the .pub file"
            ) from None
        raise ValueError(exc.detail) from None
