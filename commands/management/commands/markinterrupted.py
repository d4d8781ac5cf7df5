"""Mark executions whose process is gone as `interrupted` (run at start-up)."""

from datetime import timedelta

from django.core.management.base import BaseCommand
from django.utils import timezone

from commands.engine.runner import process_alive
from commands.models import Batch, Execution


class Command(BaseCommand):
    help = (
        "Mark executions and batches left 'running' by a stopped or crashed process as "
        "'interrupted'. "
        "A row names the process running it: rows of a process that still runs on this "
        "host are never touched, so it is safe beside live workers (make run runs it)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--older-than",
            type=int,
            default=None,
            metavar="SECONDS",
            help="Also close rows run on other hosts (whose process cannot be checked from "
            "here) once they started this long ago; use more than the longest rule "
            "timeout, e.g. 3700. Rows of this host are closed as soon as their process "
            "is gone, but not before they are this old either.",
        )

    def handle(self, *args, older_than: int | None, **options) -> None:
        # alive is None: another host, or a row from before rows named their process.
        gone = self.gone(Execution.objects, older_than)
        count = Execution.objects.filter(pk__in=gone).interrupt() if gone else 0
        if count:
            self.stdout.write(f"Marked {count} execution(s) as interrupted.")
        batches = Batch.objects.filter(pk__in=self.gone(Batch.objects, older_than)).interrupt()
        if batches:
            self.stdout.write(f"Marked {batches} batch(es) as interrupted.")

    @staticmethod
    def gone(rows, older_than: int | None) -> list[int]:
        """The running rows whose process is gone (as for executions, above)."""
        running = rows.filter(status="running")
        if older_than is not None:
            running = running.filter(created_at__lte=timezone.now() - timedelta(seconds=older_than))
        found = []
        for pk, runner in running.values_list("pk", "runner"):
            alive = process_alive(runner)
            if alive is False or (alive is None and (older_than is not None or not runner)):
                found.append(pk)
        return found
