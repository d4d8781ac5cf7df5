"""Host keys: parsing, checking, formatting and fingerprinting them, and the algorithms a
connection asks for so that a server presents its pinned key. Pure: no network (fetching a
server's key is connect.fetch_host_key)."""

from __future__ import annotations

import base64
import hashlib

import paramiko


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


MIN_RSA_BITS = 2048


def check_host_key_strength(key: str | paramiko.PKey) -> None:
    """ValueError saying why, when key is too weak to pin: DSA, or RSA under 2048 bits."""
    key = parse_host_key(key) if isinstance(key, str) else key
    kind = key.get_name()
    if kind == "ssh-dss":
        raise ValueError(
            "it is a DSA (ssh-dss) key, which OpenSSH itself no longer supports; give the "
            "server an ed25519 host key (`ssh-keygen -A` on it) and pin that"
        )
    if kind == "ssh-rsa" and key.get_bits() < MIN_RSA_BITS:
        raise ValueError(
            f"it is a {key.get_bits()}-bit RSA key, under the {MIN_RSA_BITS} bits a pinned "
            "key needs; give the server an ed25519 host key (`ssh-keygen -A` on it) and "
            "pin that"
        )


def format_host_key(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def fingerprint(host_key: str | paramiko.PKey) -> str:
    """OpenSSH-style 'SHA256:...' fingerprint, as `ssh-keygen -lf` prints it."""
    key = parse_host_key(host_key) if isinstance(host_key, str) else host_key
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


# The key type as `ssh-keygen -l` names it, after the fingerprint.
# `ssh-keygen -l` names a key type by these words (ECDSA keys by "ECDSA").
_KEYGEN_TYPES = {
    "ssh-ed25519": "ED25519",
    "ssh-rsa": "RSA",
    "ssh-dss": "DSA",
    "sk-ssh-ed25519@openssh.com": "ED25519-SK",
    "sk-ecdsa-sha2-nistp256@openssh.com": "ECDSA-SK",
}


def keygen_fingerprint(host_key_line: str) -> str:
    """The line `ssh-keygen -lf` prints for a public key line 'TYPE BASE64 [comment]':
    '256 SHA256:... comment (ED25519)', or '256 SHA256:... (ED25519)' without a comment
    (where ssh-keygen says 'no comment'), so an admin can compare it with the server's."""
    return describe_key(parse_host_key(host_key_line), " ".join(host_key_line.split()[2:]))


def describe_key(key: paramiko.PKey, comment: str = "") -> str:
    """A public key as `ssh-keygen -lf` prints it: `256 SHA256:... [comment] (ED25519)`."""
    kind = key.get_name()
    label = _KEYGEN_TYPES.get(kind) or ("ECDSA" if kind.startswith("ecdsa-") else kind.upper())
    middle = f" {comment}" if comment else ""
    return f"{key.get_bits()} {fingerprint(key)}{middle} ({label})"


def disabled_host_key_algorithms(pinned: paramiko.PKey) -> list[str]:
    """Every host-key algorithm except the pinned key's, so the server presents that one."""
    kind = pinned.get_name()
    allowed = {"rsa-sha2-256", "rsa-sha2-512", kind} if kind == "ssh-rsa" else {kind}
    return [name for name in paramiko.Transport._preferred_keys if name not in allowed]
