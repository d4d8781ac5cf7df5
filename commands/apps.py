import atexit
import logging

from django.apps import AppConfig
from django.conf import settings


class CommandsConfig(AppConfig):
    name = "commands"
    verbose_name = "Homelab commands"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from commands.observability import metrics, receivers

        # Metrics and the finish log line hook the pipeline's signals, not each entry point.
        receivers.connect(with_metrics=settings.HOMELAB_METRICS)
        atexit.register(metrics.mark_dead_at_exit)
        if settings.HOMELAB_LOG_FORMAT == "json":
            # A Python warning is a log line too: as JSON, not warnings' own two lines.
            logging.captureWarnings(True)
