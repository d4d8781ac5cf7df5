"""Empty PROMETHEUS_MULTIPROC_DIR before the workers start (make run runs it)."""

import re
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

# What prometheus-client writes there: counter_PID.db, gauge_livesum_PID.db, ...
METRIC_FILE = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_[0-9]+\.db")


class Command(BaseCommand):
    help = (
        "Delete the metric files the previous workers left in PROMETHEUS_MULTIPROC_DIR "
        "(several workers on one host). Run it once per start, before any worker starts: "
        "a running worker's counters would be lost. Other files there are left alone."
    )

    def handle(self, *args, **options) -> None:
        directory = settings.PROMETHEUS_MULTIPROC_DIR
        if not directory:
            self.stdout.write(
                "PROMETHEUS_MULTIPROC_DIR is not set: each process keeps its own metrics; "
                "nothing to reset."
            )
            return
        removed = reset(Path(directory))
        self.stdout.write(f"Removed {removed} metric file(s) from {directory}.")


def reset(directory: Path, *, keep_pid: int | None = None) -> int:
    """Delete the metric files in directory (but those of process keep_pid); how many."""
    removed = 0
    for path in directory.iterdir():
        found = METRIC_FILE.fullmatch(path.name)
        if path.is_file() and found and not path.name.endswith(f"_{keep_pid}.db"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
