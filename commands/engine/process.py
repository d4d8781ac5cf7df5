"""The process-wide parts, built from settings on first use and rebuilt when settings change.

The runner, the SSH connection pool and the live frame log each exist once per process.
Each is a `ProcessWide`; `reset_all()` stops and forgets them all, in order (what runs
first, then the log it writes to, then the connections it used). It runs when a test
changes a setting they are built from (Django's `setting_changed`, as DRF reloads its
api_settings), and the test suite calls it between tests.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from django.core.signals import setting_changed
from django.dispatch import receiver

logger = logging.getLogger(__name__)

T = TypeVar("T")
_all: list[ProcessWide] = []
_all_lock = threading.Lock()

# Settings the process-wide parts are built from: a change rebuilds them.
REBUILT_ON = ("HOMELAB_", "REDIS_URL", "DATABASES", "CACHES", "CHANNEL_LAYERS")


class ProcessWide(Generic[T]):
    """One `T` per process, made by `build()` on first use; `reset()` closes and forgets it.
    `order` sets when reset_all() reaches it (lower first)."""

    def __init__(
        self,
        name: str,
        build: Callable[[], T],
        close: Callable[[T], None] | None = None,
        *,
        order: int = 50,
    ) -> None:
        self.name = name
        self.build = build
        self.close = close
        self.order = order
        self._instance: T | None = None
        self._lock = threading.Lock()
        with _all_lock:
            _all.append(self)
            _all.sort(key=lambda part: part.order)

    def get(self) -> T:
        with self._lock:
            if self._instance is None:
                self._instance = self.build()
            return self._instance

    def current(self) -> T | None:
        """The instance if one was built, without building one."""
        return self._instance

    def reset(self) -> None:
        with self._lock:
            instance, self._instance = self._instance, None
        if instance is not None and self.close is not None:
            try:
                self.close(instance)
            except Exception:
                logger.exception("could not close the process-wide %s", self.name)


def reset_all() -> None:
    """Stop and forget every process-wide part; the next use builds them afresh."""
    with _all_lock:
        parts = list(_all)
    for part in parts:
        part.reset()


@receiver(setting_changed)
def _rebuild_on_setting_change(*, setting: str, **kwargs) -> None:
    if setting.startswith(REBUILT_ON):
        reset_all()
