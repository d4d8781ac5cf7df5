"""API-key authentication: `Authorization: Api-Key <key>` or `X-API-Key: <key>`.

Keys are generated and hashed by djangorestframework-api-key; a request authenticated
this way has `request.auth` set to the `ApiKey` row and `request.user` set to the
key's owner (or an anonymous user when the key has none).
"""

from datetime import timedelta

from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from commands.models import ApiKey
from commands.queries import OneRow

KEYWORD = "Api-Key"
LAST_USED_GRAIN = timedelta(minutes=1)


def key_from_request(request: Request) -> str | None:
    """The raw key the client sent over HTTP, or None when it sent none."""
    meta = request.META
    return raw_key(meta.get("HTTP_AUTHORIZATION", ""), meta.get("HTTP_X_API_KEY", ""))


def raw_key(authorization: str, x_api_key: str) -> str | None:
    """The key in these two header values (HTTP or a WebSocket handshake), or None.
    `Authorization: Api-Key` comes first; X-API-Key counts beside any other Authorization
    header (a proxy's, say)."""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == KEYWORD.lower():
        return value.strip()
    return x_api_key.strip() or None


def _authorization(request: Request) -> tuple[str, str]:
    scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
    return scheme, value


def _wrong_scheme(request: Request) -> str | None:
    """The scheme of an Authorization header that is not ours (`Bearer`, `Token`...)."""
    scheme, _ = _authorization(request)
    if not scheme or scheme.lower() == KEYWORD.lower():
        return None
    return scheme[:32]


_USABLE_BY_PREFIX = OneRow(
    lambda prefix: ApiKey.objects.get_usable_keys().filter(prefix=prefix).select_related("owner"),
    "\x00prefix",
)


def authenticate_key(raw: str) -> ApiKey:
    """The usable key for raw; AuthenticationFailed (401) saying why it is not."""
    # As ApiKey.objects.get_from_key(raw): the unrevoked key with raw's prefix, if raw
    # hashes to it; its owner read in the same query.
    key = _USABLE_BY_PREFIX.get(raw.partition(".")[0])
    if key is None or not key.is_valid(raw):
        raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
    if key.has_expired:
        raise exceptions.AuthenticationFailed("The API key has expired.")
    if key.owner is not None and not key.owner.is_active:
        # Deactivating a user in the admin must also stop the keys they own.
        raise exceptions.AuthenticationFailed("The API key's owner is deactivated.")
    now = timezone.now()
    # At most one write a minute per key: "last used" needs no finer grain, and a
    # write on every request would serialize bursts on SQLite.
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_GRAIN:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def check_key(raw: str) -> ApiKey | None:
    """The usable key for raw, or None (unknown, revoked, expired, owner deactivated)."""
    try:
        return authenticate_key(raw)
    except exceptions.AuthenticationFailed:
        return None


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Authenticates a request by its API key; a bad, revoked or expired key is a 401."""

    def authenticate(self, request: Request):
        raw = key_from_request(request)
        if raw is None:
            scheme = _wrong_scheme(request)
            # A logged-in admin behind a proxy that adds its own Authorization (Basic)
            # is still let through to session authentication.
            if scheme is not None and not _session_user(request).is_authenticated:
                raise exceptions.AuthenticationFailed(
                    f"The {scheme!r} authorization scheme is not accepted; send the key as "
                    "`Authorization: Api-Key <key>` or `X-API-Key: <key>`."
                )
            return None
        key = authenticate_key(raw)
        return (key.owner or AnonymousUser(), key)

    def authenticate_header(self, request: Request) -> str:
        return KEYWORD


def _session_user(request: Request):
    """Who the session says is logged in (Django's AuthenticationMiddleware), if anyone."""
    return getattr(request._request, "user", None) or AnonymousUser()
