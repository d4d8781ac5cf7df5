"""The fan-out rule of a batch, as plain bookkeeping: which target starts next, and when to stop.

In the spirit of Fabric's ThreadingGroup (several at once) and SerialGroup (one at a time),
with AWS SSM's MaxConcurrency / MaxErrors rule:

- targets start in the order given (the batch sorts them by server name);
- at most `concurrency` of them run at once;
- once the number of targets that ended without success EXCEEDS `max_errors`, no further
  target starts; those running finish, the rest end as `skipped`;
- `max_errors` None means no limit; 0 stops at the first failure, so `concurrency` 1 with
  `max_errors` 0 is a rolling update that stops at the first failure.

No threads and no I/O here: the batch service (fleet/service.py) asks `take()` for the next
target under its own lock, reports each end with `ended()`, and runs the targets.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


def concurrency_for(number: int | None, percent: int | None, targets: int) -> int:
    """How many may run at once: the number, or percent of the targets rounded up (at
    least 1): "30%" of 10 targets is 3, of 11 is 4."""
    if number is not None:
        return number
    return max(1, math.ceil(targets * percent / 100))


def errors_allowed(number: int | None, percent: int | None, targets: int) -> int | None:
    """How many targets may end without success before the batch stops starting more:
    the number, or percent of the targets rounded down ("10%" of 25 targets is 2: the
    third failure stops it); None: no limit."""
    if number is not None:
        return number
    if percent is not None:
        return math.floor(targets * percent / 100)
    return None


@dataclass
class Scheduler:
    """Bookkeeping of one batch's targets, by index (0 .. count-1, in start order)."""

    count: int
    concurrency: int
    max_errors: int | None = None
    pending: deque[int] = field(init=False)
    running: set[int] = field(default_factory=set, init=False)
    errors: int = field(default=0, init=False)
    ended_count: int = field(default=0, init=False)
    halted: bool = field(default=False, init=False)  # cancelled, or shutting down

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.pending = deque(range(self.count))

    @property
    def stopping(self) -> bool:
        """No further target may start: halted, or more errors than allowed."""
        too_many = self.max_errors is not None and self.errors > self.max_errors
        return self.halted or too_many

    def take(self) -> int | None:
        """The next target to start now, or None (none left, the window is full, or the
        batch is stopping). The caller must start it and later report `ended`."""
        if self.stopping or not self.pending or len(self.running) >= self.concurrency:
            return None
        index = self.pending.popleft()
        self.running.add(index)
        return index

    def ended(self, index: int, *, succeeded: bool) -> None:
        """Target index (started, or given up before it ran) has ended."""
        self.running.discard(index)
        self.ended_count += 1
        if not succeeded:
            self.errors += 1

    def halt(self) -> list[int]:
        """Start nothing more (cancel, shutdown): the targets that will never start."""
        self.halted = True
        return self.leftovers()

    def leftovers(self) -> list[int]:
        """Once stopping: the targets that will never start (taken out of pending)."""
        if not self.stopping:
            return []
        left = list(self.pending)
        self.pending.clear()
        self.ended_count += len(left)
        return left

    @property
    def done(self) -> bool:
        """Every target has ended (run, skipped or given up)."""
        return self.ended_count >= self.count and not self.running
