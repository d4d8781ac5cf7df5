"""Check a server step by step: TCP, host key, private key, login, `timeout`, round trip."""

from django.core.management.base import BaseCommand, CommandError

from commands.checks import CheckReport, Step, check_server
from commands.models import Server


class Command(BaseCommand):
    help = (
        "Check that homelab can run commands on a server: TCP, the pinned host key, the "
        "private key file, the login, `timeout` on the server and a no-op round trip, each "
        "timed, with the code and the fix under the step that fails (the code is the one "
        "POST servers/{id}/check gives). Exit status 0 when all pass, else 1. "
        "Uses a fresh SSH connection; nothing is run but `command -v timeout` and `true`."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="The server's name (see ./manage.py addserver).")
        parser.add_argument(
            "--timeout",
            type=float,
            default=None,
            metavar="SECONDS",
            help="Seconds per step (default: HOMELAB_CONNECT_TIMEOUT).",
        )

    def handle(self, *args, name: str, timeout: float | None, **options) -> None:
        server = Server.objects.filter(name=name).first()
        if server is None:
            known = ", ".join(Server.objects.values_list("name", flat=True)) or "none yet"
            raise CommandError(
                f"No server named {name!r} (known: {known}); add it with "
                "`./manage.py addserver NAME HOST`."
            )
        if timeout is not None and timeout <= 0:
            raise CommandError("--timeout must be a positive number of seconds.")
        self.stdout.write(
            f"Checking {server.name} ({server.username}@{server.hostname}:{server.port})"
        )
        report = check_server(server, timeout=timeout)
        self.show(report)
        if not report.ok:
            raise CommandError(
                f"{server.name} failed the check at step {report.failed.name} "
                f"({report.code}); see the fix above.",
                returncode=1,
            )
        self.stdout.write(self.style.SUCCESS(f"{server.name} passed every step."))

    def show(self, report: CheckReport) -> None:
        passed, failed, skipped = self.marks()
        width = max(len(step.label) for step in report.steps)
        for step in report.steps:
            mark = {True: passed, False: failed, None: skipped}[step.ok]
            line = f"  {mark} {step.label:<{width}}  {self.timing(step)}  {step.detail}"
            self.stdout.write(line.rstrip())
            if step.code:
                self.stdout.write(f"      Code: {step.code}")
            if step.fix:
                self.stdout.write(f"      Fix: {step.fix}")

    def marks(self) -> tuple[str, str, str]:
        """✓ ✗ on a terminal that can show them, else ok FAIL (e.g. a latin-1 locale)."""
        try:
            # A text buffer with no encoding (StringIO) takes any character.
            "✓✗".encode(getattr(self.stdout, "encoding", None) or "utf-8")
            words = ("✓", "✗", "-")
        except (UnicodeEncodeError, LookupError):
            words = ("ok", "FAIL", "-")
        width = max(map(len, words))
        passed, failed, skipped = (word.ljust(width) for word in words)
        return self.style.SUCCESS(passed), self.style.ERROR(failed), skipped

    @staticmethod
    def timing(step: Step) -> str:
        return f"{step.ms:8.1f} ms" if step.ms is not None else f"{'not run':>11}"
