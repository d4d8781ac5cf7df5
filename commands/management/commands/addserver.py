"""Add (or update) a server; with --check, also pin its host key and log in once.

The key file is checked here, where the operator can fix it, rather than at the first
command (where the API may only say "could not read the private key").
"""

import os

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from commands import services, ssh
from commands.management.commands.trusthost import pin_host_key
from commands.models import Server


class Command(BaseCommand):
    help = (
        "Add a server, or update the one with this name. Then pin its key with trusthost, "
        "or give --check to connect, pin and log in now."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="A unique slug (e.g. nas); URLs accept it for the id.")
        parser.add_argument("hostname")
        parser.add_argument("--port", type=int, default=22)
        parser.add_argument("--user", default="root", help="Remote user (default: root).")
        parser.add_argument(
            "--sudo",
            action="store_true",
            help="Send every command as `sudo -n -- COMMAND` (for a user other than root).",
        )
        parser.add_argument(
            "--key-file",
            default="",
            help="Private key path on this host (~ is expanded); it must be readable and "
            "without a passphrase. Empty: HOMELAB_SSH_KEY_FILE.",
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="Then connect, show the host key's fingerprint, pin it (asks, or --yes) "
            "and log in running `true`.",
        )
        parser.add_argument(
            "--yes", action="store_true", help="With --check: pin the host key without asking."
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=None,
            help="Seconds per --check step (default: HOMELAB_CONNECT_TIMEOUT).",
        )

    def handle(
        self, *args, name, hostname, port, user, sudo, key_file, check, yes, timeout, **opts
    ) -> None:
        if yes and not check:
            raise CommandError("--yes confirms pinning the host key, so it needs --check.")
        key_file = usable_key_file(key_file)
        server = Server.objects.filter(name=name).first() or Server(name=name)
        created = server.pk is None
        if not created and (server.hostname, server.port) != (hostname, port):
            # A new address is a new machine as far as trust goes: pin again.
            server.host_key = ""
        server.hostname, server.port, server.username = hostname, port, user
        server.use_sudo = sudo
        server.key_file = key_file
        try:
            server.full_clean()
        except ValidationError as exc:
            raise CommandError(
                "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            ) from None
        server.save()
        self.stdout.write(
            f"{'Added' if created else 'Updated'} server {server.name} with id {server.pk} "
            f"({user}@{hostname}:{port}); URLs accept either, e.g. "
            f"/api/v1/servers/{server.name}/."
        )
        if not check:
            self.stdout.write(f"Next: ./manage.py trusthost {server.name}")
            return
        self.check_server(
            server,
            yes=yes,
            interactive=opts.get("interactive", True),
            timeout=timeout or settings.HOMELAB_CONNECT_TIMEOUT,
        )

    def check_server(self, server: Server, *, yes: bool, interactive: bool, timeout: float) -> None:
        """Connect, pin and log in, each step named in the error that stops it."""
        try:
            key = ssh.fetch_host_key(server.hostname, server.port, timeout=timeout)
        except ssh.SSHError as exc:
            raise CommandError(f"Check failed at step 1, connect: {exc}") from None
        try:
            pin_host_key(
                self,
                server,
                key,
                yes=yes,
                interactive=interactive,
                how=f"add --yes to --check, or run `./manage.py trusthost {server.name}`",
            )
        except CommandError as exc:
            raise CommandError(f"Check stopped at step 2, pin: {exc}") from None
        # A private executor: this process only needs the one connection, closed after.
        executor = ssh.SSHPooledExecutor(connect_timeout=timeout)
        try:
            result = executor.execute(services.target_for(server), ["true"], timeout=timeout)
        except ssh.SSHError as exc:
            raise CommandError(f"Check failed at step 3, log in and run `true`: {exc}") from None
        finally:
            executor.close()
        if result.exit_code != 0:
            raise CommandError(
                f"Check failed at step 3, log in and run `true`: it exited {result.exit_code}"
                f" ({result.stderr.strip()[:200] or 'no error output'})"
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Check passed: connected, host key pinned, logged in as {server.username} "
                "and ran `true`."
            )
        )


def usable_key_file(key_file: str) -> str:
    """key_file made absolute (~ expanded) and checked; "" stays "" (HOMELAB_SSH_KEY_FILE)."""
    if not key_file:
        return ""
    path = os.path.abspath(os.path.expanduser(key_file))
    try:
        ssh.check_private_key(path)
    except ValueError as exc:
        raise CommandError(f"--key-file {path}: {exc}") from None
    return path
