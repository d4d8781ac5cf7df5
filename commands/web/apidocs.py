"""The ReDoc page's script, served by us without the one thing it fetches from a CDN.

ReDoc's sidebar footer ("API docs by Redocly") shows Redocly's logo from
https://cdn.redoc.ly/redoc/logo-mini.svg, and no ReDoc option turns it off (Redocly/redoc
#2141, drf-spectacular-sidecar #11): offline, the page shows a broken image, and online it
tells a third party who reads our docs. This serves the sidecar's own bundle with that
image's source emptied: a browser fetches nothing for an empty source, ReDoc's error
handler then leaves the logo out, and the footer's text stays.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from django.contrib.staticfiles import finders
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import condition, require_safe

BUNDLE = "drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js"
CDN_LOGO = b'"https://cdn.redoc.ly/redoc/logo-mini.svg"'


@functools.cache
def bundle() -> bytes:
    """The sidecar's ReDoc bundle, read once, with the CDN logo's source made empty."""
    found = finders.find(BUNDLE)
    if not found:
        raise FileNotFoundError(f"{BUNDLE} not found: is drf-spectacular-sidecar installed?")
    return Path(found).read_bytes().replace(CDN_LOGO, b'""')


@functools.cache
def _etag() -> str:
    return hashlib.sha256(bundle()).hexdigest()[:32]


def bundle_etag(request: HttpRequest) -> str:
    return _etag()


@require_safe
@condition(etag_func=bundle_etag)
def redoc_bundle(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(bundle(), content_type="text/javascript; charset=utf-8")
    response["Cache-Control"] = "public, max-age=86400"
    return response
