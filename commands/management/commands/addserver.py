"""Add a server, or change the one with this name; with --check, also pin its host key and
log in once.

An update changes only what is given: `addserver nas --port 2222` keeps the user, the key
file, sudo, the tags and the pin. The pin goes only when the address (host or port)
changes, as in the admin. `--reset` puts what is not given back to the defaults instead.

The key file is checked here, where the operator can fix it, rather than at the first
command (where the API may only say "could not read the private key").
"""

import argparse
import os

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from commands import services, ssh
from commands.management.commands.trusthost import pin_host_key
from commands.models import Server, Tag

# What a new server gets, and what --reset goes back to, for each option not given.
DEFAULTS = {"port": 22, "username": "root", "use_sudo": False, "key_file": "", "tags": []}


class Command(BaseCommand):
    help = (
        "Add a server, or change the one with this name (only the options given; --reset "
        "for the defaults). Then pin its key with trusthost, or give --check to connect, "
        "pin and log in now."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="A unique slug (e.g. nas); URLs accept it for the id.")
        parser.add_argument(
            "hostname",
            nargs="?",
            help="DNS name or IP address; needed to add a server, kept when changing one.",
        )
        parser.add_argument("--port", type=int, help="SSH port (new servers: 22).")
        parser.add_argument("--user", help="Remote user (new servers: root).")
        parser.add_argument(
            "--sudo",
            action=argparse.BooleanOptionalAction,
            help="Send every command as `sudo -n -- COMMAND` (for a user other than root); "
            "--no-sudo to stop (new servers: off).",
        )
        parser.add_argument(
            "--key-file",
            help="Private key path on this host (~ is expanded); it must be readable and "
            'without a passphrase. --key-file "" uses HOMELAB_SSH_KEY_FILE (new servers: that).',
        )
        tags = parser.add_mutually_exclusive_group()
        tags.add_argument(
            "--tag",
            action="append",
            dest="tags",
            metavar="TAG",
            help="A tag (repeatable, e.g. --tag pi --tag web): the server's tags become "
            "exactly these.",
        )
        tags.add_argument("--no-tags", action="store_true", help="Remove every tag.")
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Changing a server: put every option not given back to its default "
            "(port 22, root, no sudo, HOMELAB_SSH_KEY_FILE, no tags).",
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

    def handle(self, *args, name, check, yes, timeout, reset, **opts) -> None:
        if yes and not check:
            raise CommandError("--yes confirms pinning the host key, so it needs --check.")
        server = Server.objects.filter(name=name).first()
        created = server is None
        if created and not opts["hostname"]:
            raise CommandError(
                f"No server named {name!r} yet: give its address to add it, e.g. "
                f"`./manage.py addserver {name} 192.168.1.10`."
            )
        given = given_options(opts)
        if created or reset:
            given = {**DEFAULTS, **given}
        server = server or Server(name=name)
        before = summary(server) if not created else None
        unpinned = apply(server, given)
        self.report(server, created=created, before=before, unpinned=unpinned)
        if check:
            self.check_server(
                server,
                yes=yes,
                interactive=opts.get("interactive", True),
                timeout=timeout or settings.HOMELAB_CONNECT_TIMEOUT,
            )
        elif not server.host_key:
            self.stdout.write(f"Next: ./manage.py trusthost {server.name}")

    def report(self, server: Server, *, created: bool, before: dict | None, unpinned: str) -> None:
        """The id and name the API knows the server by, and what changed."""
        verb = "Added" if created else "Updated"
        self.stdout.write(
            f"{verb} server {server.name} with id {server.pk} ({server.username}@"
            f"{server.address}); URLs accept either, e.g. /api/v1/servers/{server.name}/."
        )
        if before is not None:
            after = summary(server)
            changed = [f"{what} {before[what]} -> {after[what]}" for what in after
                       if before[what] != after[what]]  # fmt: skip
            self.stdout.write(f"Changed: {'; '.join(changed)}." if changed else "No change.")
        if unpinned:
            self.stdout.write(
                self.style.WARNING(
                    f"The address changed, so the pinned host key ({unpinned}) was cleared: "
                    "a new address is a new machine until you pin its key again."
                )
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


def given_options(opts: dict) -> dict:
    """The server's fields the command line sets (None: not given), checked."""
    given = {
        "hostname": opts["hostname"],
        "port": opts["port"],
        "username": opts["user"],
        "use_sudo": opts["sudo"],
        "tags": [] if opts["no_tags"] else opts["tags"],
    }
    if opts["key_file"] is not None:
        given["key_file"] = usable_key_file(opts["key_file"])
    return {field: value for field, value in given.items() if value is not None}


def apply(server: Server, given: dict) -> str:
    """Set the given fields on server and save it, with its tags, in one transaction. The
    fingerprint of the pin it cleared (the address changed), or ""."""
    unpinned = ""
    moved = (given.get("hostname", server.hostname), given.get("port", server.port))
    if server.pk is not None and server.host_key and moved != (server.hostname, server.port):
        # A new address is a new machine as far as trust goes: pin again.
        unpinned = pin_text(server.host_key)
        server.host_key = ""
    tags = given.pop("tags", None)
    for field, value in given.items():
        setattr(server, field, value)
    try:
        server.full_clean()
        rows = [Tag(name=tag) for tag in dict.fromkeys(tags or [])]
        for row in rows:
            row.clean_fields()
    except ValidationError as exc:
        raise CommandError(
            "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        ) from None
    with transaction.atomic():
        server.save()
        if tags is not None:
            server.tags.set([Tag.objects.get_or_create(name=row.name)[0] for row in rows])
    return unpinned


def summary(server: Server) -> dict[str, str]:
    """What addserver sets, as the before -> after line shows it."""
    tags = ", ".join(server.tags.values_list("name", flat=True)) if server.pk else ""
    return {
        "address": f"{server.username}@{server.address}",
        "sudo": "on" if server.use_sudo else "off",
        "key file": server.key_file or "(HOMELAB_SSH_KEY_FILE)",
        "tags": tags or "(none)",
    }


def pin_text(host_key: str) -> str:
    try:
        return ssh.fingerprint(host_key)
    except ValueError:
        return "unusable"


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
