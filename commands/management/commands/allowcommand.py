"""Create or update one whitelist rule, with the same validation as the admin."""

import argparse

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from commands.models import AllowedCommand, Server
from commands.rules import changes_power


class Command(BaseCommand):
    help = (
        "Create or update the whitelist rule ACTION_TYPE, e.g. allowcommand restart_service "
        '"systemctl restart {service}" --param "service=^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}$". '
        "The template and --param set replace the rule's; the rule is enabled unless "
        "--disable is given; timeout, description, servers and --confirm are kept when not "
        "given. "
        "A new rule is usable on every server unless --server limits it."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("action_type")
        parser.add_argument("template")
        parser.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="NAME=REGEX",
            help="A parameter's pattern; repeat for each {NAME} in the template.",
        )
        parser.add_argument("--timeout", type=int, help="Seconds, 1-3600.")
        parser.add_argument("--description", help="What the rule is for.")
        parser.add_argument("--disable", action="store_true", help="Save the rule disabled.")
        parser.add_argument(
            "--confirm",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="The rule changes the machine: ask before running it (the admin console asks "
            'for the server\'s name, runbatch for y/N, a browser session must send "confirm": '
            "true; API keys are not asked). --no-confirm clears the flag. Kept when neither "
            "is given; a new rule asks when it reboots or shuts down, else not.",
        )
        where = parser.add_mutually_exclusive_group()
        where.add_argument(
            "--server",
            action="append",
            dest="servers",
            metavar="NAME",
            help="Limit the rule to this server (repeat for each); replaces its servers.",
        )
        where.add_argument(
            "--all-servers",
            action="store_true",
            help="Make the rule usable on every server, including ones added later.",
        )

    def handle(self, *args, action_type: str, template: str, **options) -> None:
        rule = AllowedCommand.objects.filter(action_type=action_type).first()
        created = rule is None
        rule = rule or AllowedCommand(action_type=action_type)
        rule.template = template
        rule.parameters = parse_params(options["param"])
        rule.enabled = not options["disable"]
        if options["timeout"] is not None:
            rule.timeout_seconds = options["timeout"]
        if options["description"] is not None:
            rule.description = options["description"]
        if options["confirm"] is not None:
            rule.confirm = options["confirm"]
        servers = named_servers(options["servers"] or [])
        if options["servers"]:
            rule.all_servers = False
        elif options["all_servers"] or created:
            rule.all_servers = True
        try:
            rule.full_clean()
        except ValidationError as exc:
            raise CommandError(describe(for_the_command_line(exc))) from None
        if created and options["confirm"] is None and changes_power(rule.template_tokens):
            rule.confirm = True  # a new reboot or shutdown rule asks first, as the defaults
        with transaction.atomic():
            rule.save()
            if options["servers"] or options["all_servers"]:
                rule.servers.set(servers)  # "every server" lists none, so none can vanish
        state = "enabled" if rule.enabled else "disabled"
        if rule.confirm:
            state += ", asks for confirmation"
        self.stdout.write(
            f"{'Created' if created else 'Updated'} rule {action_type} ({state}): "
            f"{rule.template_tokens}; usable on {usable_on(rule)}"
        )


def usable_on(rule: AllowedCommand) -> str:
    if rule.all_servers:
        return "every server"
    names = ", ".join(server.name for server in rule.servers.all())
    return names or "no server (give --server NAME or --all-servers)"


def named_servers(names: list[str]) -> list[Server]:
    """The servers named by --server, in the order given; every name must exist."""
    found = {server.name: server for server in Server.objects.filter(name__in=names)}
    missing = [name for name in dict.fromkeys(names) if name not in found]
    if missing:
        known = ", ".join(Server.objects.values_list("name", flat=True)[:20]) or "none yet"
        raise CommandError(
            f"No server named {', '.join(map(repr, missing))} (servers: {known}); add one "
            "with `./manage.py addserver`."
        )
    return [found[name] for name in dict.fromkeys(names)]


def parse_params(values: list[str]) -> dict[str, str]:
    """Turn ["name=regex", ...] into {"name": "regex"}; the regex may contain '='."""
    params: dict[str, str] = {}
    for value in values:
        name, sep, pattern = value.partition("=")
        if not sep or not name:
            raise CommandError(f"--param {value!r} is not NAME=REGEX.")
        if name in params:
            raise CommandError(f"--param {name} is given twice; give each parameter once.")
        params[name] = pattern
    return params


def for_the_command_line(exc: ValidationError) -> ValidationError:
    """exc, with the fix for a missing pattern written as the --param to add."""
    if not hasattr(exc, "error_dict"):
        return exc
    return ValidationError(
        {field: [_reword(error) for error in errors] for field, errors in exc.error_dict.items()}
    )


def _reword(error: ValidationError) -> ValidationError:
    if error.code != "missing_pattern":
        return error
    name, position = error.params["name"], error.params["position"]
    return ValidationError(
        f"Token {position} is {{{name}}} but there is no pattern for {name!r}; add "
        f"--param '{name}=<regex>', e.g. --param '{name}=^[A-Za-z0-9_][A-Za-z0-9_.-]{{0,63}}$' "
        "(braces around a bare name always mean a parameter).",
        code=error.code,
    )


def describe(exc: ValidationError) -> str:
    if not hasattr(exc, "error_dict"):
        return " ".join(exc.messages)
    parts = []
    for field, errors in exc.message_dict.items():
        text = " ".join(errors)
        parts.append(text if field == NON_FIELD_ERRORS else f"{field}: {text}")
    return "; ".join(parts)
