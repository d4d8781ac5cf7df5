"""Serve homelab: prepare the database and static files, then run daphne in this process.

What `make run` runs. One process does it all, so Django and the app load once: the
migrations only when some are pending, collectstatic, markinterrupted (and emptying
PROMETHEUS_MULTIPROC_DIR when it is set), then daphne serves the ASGI app already loaded.
"""

import os
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor


class Command(BaseCommand):
    help = (
        "Migrate (when needed), collect static files, close the rows a stopped process left "
        "running, then serve the app with daphne on HOST:PORT (make run does this)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, host: str, port: int, **options) -> None:
        if pending_migrations():
            call_command("migrate", "--noinput", verbosity=1)
        call_command("collectstatic", "--noinput", verbosity=0)
        call_command("markinterrupted")
        if settings.PROMETHEUS_MULTIPROC_DIR:
            from commands.management.commands.resetmetrics import reset

            # The previous workers' files; this process's own are kept (it serves).
            reset(Path(settings.PROMETHEUS_MULTIPROC_DIR), keep_pid=os.getpid())
        base = f"http://{host}:{port}"
        self.stdout.write(
            f"homelab on {base}/  API docs: {base}/api/docs  admin: {base}/admin/", ending="\n"
        )
        self.stdout.flush()
        connections.close_all()  # the server's threads open their own
        # Imported last: daphne installs twisted's asyncio reactor when it is imported.
        from daphne.cli import CommandLineInterface

        CommandLineInterface().run(["-b", host, "-p", str(port), "homelab.asgi:application"])


def pending_migrations() -> bool:
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    return bool(executor.migration_plan(executor.loader.graph.leaf_nodes()))
