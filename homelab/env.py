"""Typed readers of environment variables for settings.py (as healthchecks does).

Each raises ImproperlyConfigured naming the variable and the fix when its value is bad,
so a typo stops start-up instead of running with a surprising default.
"""

import ipaddress
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean; use 1 or 0.")


def env_int(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number.") from None
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ImproperlyConfigured(f"{name}={value!r} must be {bounds}.")
    return number


def env_rate(name: str, default: str) -> str:
    """A DRF throttle rate such as '10/min'; checked here so a typo fails at start-up."""
    value = os.environ.get(name) or default
    if not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", value):
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a rate; use a number of requests per period, "
            "e.g. '10/min' (periods: s, min, hour, day)."
        )
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of choices (case-insensitive, returned as written in choices)."""
    value = env_str(name, default).strip()
    for choice in choices:
        if value.upper() == choice.upper():
            return choice
    raise ImproperlyConfigured(f"{name}={value!r} is not one of {', '.join(choices)}.")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_origins(name: str, *, wildcard_subdomains: bool = False) -> list[str]:
    """Comma-separated origins, each `scheme://host[:port]` (e.g. http://localhost:5173).

    A bare `*` is refused: every origin that may call the API is named. With
    wildcard_subdomains (CSRF_TRUSTED_ORIGINS), `https://*.example.com` is allowed.
    """
    origins = env_list(name, "")
    for origin in origins:
        if origin == "*":
            raise ImproperlyConfigured(
                f"{name} may not be '*': list each origin allowed, comma-separated, "
                "e.g. http://localhost:5173,https://app.example."
            )
        parts = urlsplit(origin)
        host = parts.hostname or ""
        if wildcard_subdomains and host.startswith("*."):
            host = host[2:]
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            port_ok = False
        if (
            parts.scheme not in ("http", "https")
            or not host
            or "*" in host
            or parts.path
            or parts.query
            or parts.fragment
            or parts.username is not None
            or not port_ok
        ):
            raise ImproperlyConfigured(
                f"{name}: {origin!r} is not an origin; write scheme://host[:port] with no "
                "path or trailing slash, e.g. https://app.example."
            )
    return origins


def env_networks(name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Comma-separated IP addresses or CIDR networks (e.g. 127.0.0.1,10.0.0.0/8)."""
    networks = []
    for item in env_list(name, ""):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: {item!r} is not an IP address or CIDR network; "
                "use e.g. 127.0.0.1 or 10.0.0.0/8."
            ) from None
    return networks


def env_directory(name: str) -> str:
    """A directory this process may write to (made, private, if missing), or "" when the
    variable is unset or empty."""
    value = env_str(name).strip()
    if not value:
        return ""
    try:
        os.makedirs(value, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ImproperlyConfigured(
            f"{name}={value!r}: cannot create it ({exc.strerror})."
        ) from None
    if not (os.path.isdir(value) and os.access(value, os.W_OK | os.X_OK)):
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a directory this process can write to; point it at "
            "one (e.g. /run/homelab/metrics) owned by the user homelab runs as."
        )
    return value


def dev_secret_key(path: Path) -> str:
    """The key `make run` generated into path (.dev-secret-key), or "" without the file."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise ImproperlyConfigured(
            f"{path} cannot be read ({exc.strerror}); set DJANGO_SECRET_KEY instead."
        ) from None
