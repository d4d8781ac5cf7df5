"""Delete audit rows past their retention (run it from cron or a systemd timer)."""

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from commands.models import Batch, Execution


class Command(BaseCommand):
    help = (
        "Delete executions and batches created more than DAYS ago (default "
        "HOMELAB_AUDIT_RETENTION_DAYS). "
        "Rows still 'running' are kept whatever their age: markinterrupted closes them."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--older-than",
            type=int,
            default=None,
            metavar="DAYS",
            help="Keep the last DAYS days (at least 1); default HOMELAB_AUDIT_RETENTION_DAYS.",
        )

    def handle(self, *args, older_than: int | None, **options) -> None:
        days = settings.HOMELAB_AUDIT_RETENTION_DAYS if older_than is None else older_than
        if days < 1:
            raise CommandError(f"--older-than {days}: give a number of days, at least 1.")
        cutoff = timezone.now() - timedelta(days=days)
        # A running row is the only record of a command that may still be running.
        old = Execution.objects.filter(created_at__lt=cutoff).exclude(
            status=Execution.Status.RUNNING
        )
        deleted = old.delete()[1].get("commands.Execution", 0)
        batches = Batch.objects.filter(created_at__lt=cutoff).exclude(status=Batch.Status.RUNNING)
        pruned = batches.delete()[1].get("commands.Batch", 0)
        self.stdout.write(
            f"Deleted {deleted} execution(s) and {pruned} batch(es) created before "
            f"{cutoff:%Y-%m-%d %H:%M} UTC (older than {days} days); running ones are kept."
        )
