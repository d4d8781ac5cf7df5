"""Mark executions a crashed process left `running` as `interrupted` (run at start-up)."""

from datetime import timedelta

from django.core.management.base import BaseCommand
from django.utils import timezone

from commands.models import Execution


class Command(BaseCommand):
    help = (
        "Mark executions left 'running' by a stopped or crashed process as 'interrupted'. "
        "Run it once before the workers start (make run does)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--older-than",
            type=int,
            default=0,
            metavar="SECONDS",
            help="Only rows started this long ago. With workers still running (a rolling "
            "deploy), use more than the longest rule timeout, e.g. 3700.",
        )

    def handle(self, *args, older_than: int, **options) -> None:
        cutoff = timezone.now() - timedelta(seconds=older_than)
        count = Execution.objects.filter(
            status=Execution.Status.RUNNING, created_at__lte=cutoff
        ).update(
            status=Execution.Status.INTERRUPTED,
            error_code="interrupted",
            error_detail="The process running this command stopped before it finished.",
            finished_at=timezone.now(),
        )
        if count:
            self.stdout.write(f"Marked {count} execution(s) as interrupted.")
