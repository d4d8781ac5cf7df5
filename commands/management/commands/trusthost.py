"""Pin a server's SSH host key after showing its fingerprint."""

import sys

from django.core.management.base import BaseCommand, CommandError

from commands import ssh
from commands.exceptions import SSHError
from commands.models import Server
from commands.ssh.hostkeys import check_host_key_strength


def pin_host_key(
    command: BaseCommand, server: Server, key: str, *, yes: bool, interactive: bool, how: str
) -> None:
    """Show key's fingerprint, then pin it for server: at once with `yes`, else after a
    typed 'yes' on a terminal. CommandError (saying `how` to confirm) when not pinned."""
    command.stdout.write(f"{server.name} ({server.address}) host key:")
    command.stdout.write(f"  {key.split()[0]} {ssh.fingerprint(key)}")
    try:
        check_host_key_strength(key)
    except ValueError as exc:
        raise CommandError(
            f"Not pinned: the host key of {server.name} is too weak: {exc}."
        ) from None
    if server.host_key and server.host_key.split()[:2] == key.split()[:2]:
        command.stdout.write("Already pinned; nothing to do.")
        return
    if server.host_key:
        command.stdout.write(
            command.style.WARNING(f"This REPLACES the pinned {ssh.fingerprint(server.host_key)}.")
        )
    if not yes:
        compare = "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` run on the server"
        if not interactive:
            raise CommandError(f"Not pinned: compare the fingerprint with {compare}, then {how}.")
        if not sys.stdin.isatty():
            # No one can type yes here (a pipe, cron, a script): say so, not just "no".
            raise CommandError(
                "Not pinned: stdin is not a terminal: add --yes after checking the "
                f"fingerprint (compare it with {compare})."
            )
        answer = input("Pin this key? Type 'yes' to confirm: ")
        if answer.strip().lower() != "yes":
            raise CommandError("Not pinned.")
    server.host_key = key
    server.save(update_fields=["host_key", "updated_at"])
    command.stdout.write(command.style.SUCCESS(f"Pinned host key for {server.name}."))


class Command(BaseCommand):
    help = (
        "Fetch a server's SSH host key, show its SHA256 fingerprint and pin it after "
        "confirmation. Compare the fingerprint with `ssh-keygen -lf "
        "/etc/ssh/ssh_host_ed25519_key.pub` run on the server itself."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")
        parser.add_argument("--yes", action="store_true", help="Pin without asking.")
        parser.add_argument(
            "--host-key",
            help='Pin this key ("TYPE BASE64") without connecting to the server.',
        )
        parser.add_argument("--timeout", type=float, default=10.0)

    def handle(self, *args, name, yes, host_key, timeout, **options) -> None:
        try:
            server = Server.objects.get(name=name)
        except Server.DoesNotExist:
            raise CommandError(
                f"No server named {name!r}; add it with `./manage.py addserver`."
            ) from None

        if host_key:
            try:
                key = ssh.format_host_key(ssh.parse_host_key(host_key))
            except ValueError as exc:
                raise CommandError(f"--host-key: {exc}") from None
        else:
            try:
                key = ssh.fetch_host_key(server.hostname, server.port, timeout=timeout)
            except SSHError as exc:
                raise CommandError(str(exc)) from None
        pin_host_key(
            self,
            server,
            key,
            yes=yes,
            interactive=options.get("interactive", True),
            how=f"run `./manage.py trusthost {server.name} --yes`",
        )
