"""Add (or update) a server. Its host key is pinned separately, with `trusthost`."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from commands.models import Server


class Command(BaseCommand):
    help = "Add a server, or update the one with this name. Then pin its key with trusthost."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")
        parser.add_argument("hostname")
        parser.add_argument("--port", type=int, default=22)
        parser.add_argument("--user", default="root", help="Remote user (default: root).")
        parser.add_argument("--key-file", default="", help="Private key path on this host.")

    def handle(self, *args, name, hostname, port, user, key_file, **options) -> None:
        server = Server.objects.filter(name=name).first() or Server(name=name)
        changed_address = server.pk and (server.hostname, server.port) != (hostname, port)
        server.hostname, server.port, server.username, server.key_file = (
            hostname,
            port,
            user,
            key_file,
        )
        if changed_address:
            # A new address is a new machine as far as trust goes: pin again.
            server.host_key = ""
        try:
            server.full_clean()
        except ValidationError as exc:
            raise CommandError(
                "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            ) from None
        created = server.pk is None
        server.save()
        self.stdout.write(
            f"{'Added' if created else 'Updated'} server {name} ({user}@{hostname}:{port}). "
            f"Next: python manage.py trusthost {name}"
        )
