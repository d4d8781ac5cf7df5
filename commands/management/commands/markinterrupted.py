"""Mark executions a crashed process left `running` as `interrupted` (run at start-up)."""

from django.core.management.base import BaseCommand
from django.utils import timezone

from commands.models import Execution


class Command(BaseCommand):
    help = (
        "Mark executions left 'running' by a stopped or crashed process as 'interrupted'. "
        "Run it once before the workers start (make run does)."
    )

    def handle(self, *args, **options) -> None:
        count = Execution.objects.filter(status=Execution.Status.RUNNING).update(
            status=Execution.Status.INTERRUPTED,
            error_code="interrupted",
            error_detail="The process running this command stopped before it finished.",
            finished_at=timezone.now(),
        )
        if count:
            self.stdout.write(f"Marked {count} execution(s) as interrupted.")
