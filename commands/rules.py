"""Finding the rule for a request: the database side of the whitelist (services layer).

commands/whitelist.py decides whether a command fits a rule's template and patterns, with
no models and no I/O; this module reads the rules: which one an `action_type` names on a
server, whether a rule may run there (AllowedCommand.objects.usable_on decides), and
whether the caller must confirm it first (`must_confirm`, the one place that rule lives).
"""

from __future__ import annotations

from typing import Any

from commands.exceptions import CommandRejected, ConfirmationRequired, NotWhitelisted
from commands.models import AllowedCommand, Server
from commands.queries import OneRow
from commands.requests import Caller
from commands.whitelist import Match, check_command_text, match

LISTED_ACTION_TYPES = 20


def usable_on(rule: AllowedCommand, server: Server | None) -> bool:
    """Whether rule may run on server (any server when server is None)."""
    return AllowedCommand.objects.usable_on(server).filter(pk=rule.pk).exists()


_ENABLED_BY_ACTION = OneRow(
    lambda action_type: AllowedCommand.objects.filter(action_type=action_type, enabled=True),
    "\x00action_type",
)


def find(action_type: str, server: Server | None = None) -> AllowedCommand | None:
    """The enabled rule named action_type that may run on server, if there is one.

    action_type is unique: one plain query for the rule, and for a rule limited to some
    servers one more for whether server is one of them (usable_on's rule, per row); on
    the hot path of every execute this is cheaper than usable_on's subquery."""
    rule = _ENABLED_BY_ACTION.get(action_type)
    if rule is None or server is None or rule.all_servers:
        return rule
    listed = AllowedCommand.servers.through.objects.filter(
        allowedcommand_id=rule.pk, server_id=server.pk
    )
    return rule if listed.exists() else None


def find_or_refuse(action_type: str, server: Server | None = None) -> AllowedCommand:
    """The enabled rule named action_type usable on server, or NotWhitelisted saying which
    action types are usable there (unknown, disabled and limited-elsewhere all read the
    same to a client)."""
    rule = find(action_type, server)
    if rule is None:
        raise NotWhitelisted(_no_rule_detail(action_type, server))
    return rule


def resolve(command: str, action_type: str, server: Server | None = None) -> Match:
    """Match command against the enabled rule named action_type, usable on server.

    The returned Match's `rule` is the stored AllowedCommand (its timeout applies)."""
    check_command_text(command)  # before any query: a huge or binary command costs nothing
    return match(command, find_or_refuse(action_type, server))


def is_whitelisted(command: str, action_type: str, server: Server | None = None) -> bool:
    """Whether resolve() would accept the command."""
    try:
        resolve(command, action_type, server)
    except CommandRejected:
        return False
    return True


POWER = frozenset({"reboot", "shutdown", "poweroff", "halt"})


def changes_power(tokens: list[str]) -> bool:
    """Whether a rule's tokens reboot or shut the machine down (reboot, shutdown, poweroff,
    halt, or systemctl with one of them; behind sudo too): such a new rule asks first
    unless its author says otherwise (allowcommand; migration 0010 for existing ones)."""
    words = [str(token) for token in tokens]
    if words[:1] == ["sudo"]:
        words = [word for word in words if not word.startswith("-")][1:]
    if not words:
        return False
    program = words[0].rsplit("/", 1)[-1]
    return program in POWER or (program == "systemctl" and any(w in POWER for w in words[1:]))


def must_confirm(rule: AllowedCommand, caller: Caller) -> bool:
    """Whether caller must confirm before rule runs: a rule flagged `confirm` (it changes
    the machine), asked for by a person, i.e. anyone but an API key. A browser session
    confirms with "confirm": true (the console's dialog sends it once the server's name is
    typed), the CLI with its y/N prompt or --yes. A key is a script that states what it
    runs by calling: the API stays as it was for keys."""
    return rule.confirm and caller.api_key is None


def require_confirmation(
    rule: AllowedCommand, caller: Caller, *, confirmed: bool, where: str
) -> None:
    """ConfirmationRequired when must_confirm(rule, caller) and the request did not confirm;
    `where` names the target in the detail (a server's name, or "12 servers")."""
    if confirmed or not must_confirm(rule, caller):
        return
    raise ConfirmationRequired(
        f"Rule {rule.action_type} changes the machine, so it asks for confirmation before "
        f'it runs on {where}: send "confirm": true once the user has confirmed (the admin '
        "console asks for the server's name first). API keys are not asked."
    )


def _no_rule_detail(action_type: Any, server: Server | None) -> str:
    name = str(action_type)[:64]
    if server is None:
        return f"No enabled rule named {name!r}."
    return (
        f"No enabled rule named {name!r} is usable on server {server.name!r}. "
        f"{_usable_action_types(server)}"
    )


def _usable_action_types(server: Server) -> str:
    """A sentence naming the action types a client may use on server, and where to look."""
    names = list(
        AllowedCommand.objects.usable_on(server)
        .filter(enabled=True)
        .values_list("action_type", flat=True)[: LISTED_ACTION_TYPES + 1]
    )
    where = f"GET /api/v1/servers/{server.pk}/commands/"
    if not names:
        return (
            f"No rule is usable there yet ({where} lists them); an admin adds rules in the "
            "admin or with the allowcommand management command."
        )
    shown = ", ".join(names[:LISTED_ACTION_TYPES])
    more = ", ..." if len(names) > LISTED_ACTION_TYPES else ""
    return f"Action types usable there: {shown}{more} ({where} shows their templates)."
