"""Create an API key; the key itself is printed once, alone on the last line."""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from commands import scopes
from commands.management.commands.allowcommand import named_servers
from commands.models import RATE, RATE_MESSAGE, AllowedCommand, ApiKey, validate_action_types


class Command(BaseCommand):
    help = (
        "Create an API key. The key is shown once (last line of output) and stored hashed. "
        "It reaches every server and every action unless --server, --action or --read-only "
        "limit it."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="A name for the key (who or what uses it).")
        parser.add_argument("--user", help="Username of the key's owner (optional).")
        parser.add_argument(
            "--server",
            action="append",
            dest="servers",
            metavar="NAME",
            help="Limit the key to this server (repeat for each); it sees no other.",
        )
        parser.add_argument(
            "--action",
            action="append",
            dest="actions",
            metavar="TYPE",
            help="Limit the key to this action type (repeat for each).",
        )
        parser.add_argument(
            "--read-only",
            action="store_true",
            help="The key lists servers, commands and executions, never executes or cancels.",
        )
        parser.add_argument(
            "--rate",
            default="",
            metavar="RATE",
            help="The key's own execution quota, e.g. 100/min (default HOMELAB_EXECUTE_RATE); "
            "a batch counts one execution per server.",
        )

    def handle(self, *args, name: str, user: str | None, **options) -> None:
        owner = None
        if user:
            try:
                owner = get_user_model().objects.get(username=user)
            except get_user_model().DoesNotExist:
                raise CommandError(f"No user named {user!r}; create it first.") from None
        if not name.strip() or len(name) > 50:
            raise CommandError("The key name must be 1 to 50 characters.")
        if options["read_only"] and options["actions"]:
            raise CommandError("A --read-only key runs no action: give --action or --read-only.")
        servers = named_servers(options["servers"] or [])
        actions = known_actions(options["actions"] or [])
        rate = options["rate"].strip()
        if rate and not RATE.fullmatch(rate):
            raise CommandError(f"--rate {rate!r}: {RATE_MESSAGE}")
        with transaction.atomic():
            api_key, key = ApiKey.objects.create_key(
                name=name,
                owner=owner,
                all_servers=not servers,
                all_actions=not actions,
                action_types=actions,
                read_only=options["read_only"],
                rate=rate,
            )
            api_key.servers.set(servers)
        self.stderr.write(
            f"Created API key {api_key.name!r} (prefix {api_key.prefix}); scope: "
            f"{scopes.describe(api_key)}"
            f"{f'; rate {rate}' if rate else ''}. Store it now: it cannot be shown again."
        )
        self.stdout.write(key)


def known_actions(types: list[str]) -> list[str]:
    """The action types of --action, once each, in the order given; each must name a rule
    (a typo would otherwise make a key that can run nothing)."""
    types = list(dict.fromkeys(types))
    try:
        validate_action_types(types)
    except ValidationError as exc:
        raise CommandError(" ".join(exc.messages)) from None
    found = set(
        AllowedCommand.objects.filter(action_type__in=types).values_list("action_type", flat=True)
    )
    missing = [t for t in types if t not in found]
    if missing:
        known = ", ".join(AllowedCommand.objects.values_list("action_type", flat=True)[:30])
        raise CommandError(
            f"No whitelist rule named {', '.join(map(repr, missing))} (rules: "
            f"{known or 'none yet'}); add one with `./manage.py allowcommand`."
        )
    return types
