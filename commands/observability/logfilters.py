"""Logging filters: keep Django's request log for the errors nobody else has logged.

Django logs every 4xx and 5xx response on `django.request` ("Failed Dependency: ...",
"Internal Server Error: ..."). An SSH failure the admin fixes in the configuration (an
unpinned or changed host key, a refused key: 424; sshd down: 500) is expected:
commands/api/handlers.py logs it as one line of its own with the code and the server, and
marks the request so that Django's line is dropped here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # settings import this module while configuring logging: keep it light
    from django.http import HttpRequest

MARK = "_homelab_error_logged"


def mark_logged(request: HttpRequest) -> None:
    """Say that the error answering request has been logged already."""
    setattr(request, MARK, True)


class OneLine(logging.Filter):
    """Logs an expected condition as one WARNING line: no traceback (its exc_info is
    dropped). Django logs a bad Host header (DisallowedHost, a 400 any scanner causes) at
    ERROR with the whole traceback of the check that refused it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class SkipLoggedErrors(logging.Filter):
    """Drops a `django.request` record whose request was marked by mark_logged()."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Django passes the request in the record's extra (django.utils.log.log_response).
        return not getattr(getattr(record, "request", None), MARK, False)
