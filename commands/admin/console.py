"""The console on a server's admin page: what the Run panel, the confirmation and the
recent executions need (console.js reads it from the page), and the preview of a run.

The views are ServerAdmin's (commands/admin/servers.py); they check may_execute before
any of this is built or answered.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from django.http import HttpRequest
from django.middleware.csrf import get_token
from django.urls import reverse

from commands import whitelist
from commands.exceptions import CommandRejected
from commands.models import AllowedCommand, Execution, Server

RECENT_EXECUTIONS = 10
# The status chips' colours: what went well, what went wrong, what did not run at all.
CHIP = {
    Execution.Status.RUNNING: "running",
    Execution.Status.SUCCEEDED: "ok",
    Execution.Status.FAILED: "bad",
    Execution.Status.TIMEOUT: "bad",
    Execution.Status.ERROR: "bad",
    Execution.Status.REJECTED: "quiet",
    Execution.Status.CANCELLED: "quiet",
    Execution.Status.INTERRUPTED: "quiet",
}


def console_config(request: HttpRequest, server: Server, *, may_pin: bool) -> dict[str, Any]:
    """The json_script "homelab-console" of a server's page (for a user who may execute)."""
    usable = AllowedCommand.objects.usable_on(server).filter(enabled=True)
    return {
        "mode": "server",
        "server": server.name,
        "rules": [rule_for_console(rule) for rule in usable],
        "preview_url": reverse("admin:commands_server_preview", args=[server.pk]),
        "execute_url": reverse("server-execute", args=[server.pk]),
        "cancel_url": reverse("execution-cancel", args=["__id__"]),
        "audit_url": reverse("admin:commands_execution_change", args=["__id__"]),
        "pin_url": reverse("admin:commands_server_pin", args=[server.pk]) if may_pin else "",
        "csrf_token": get_token(request),
    }


def recent_executions(server: Server) -> list[dict[str, Any]]:
    """The server's last executions, newest first, as the page lists them."""
    rows = Execution.objects.filter(server=server).order_by("-created_at", "-id")
    return [
        {
            "execution": execution,
            "chip": CHIP.get(execution.status, "quiet"),
            "url": reverse("admin:commands_execution_change", args=[execution.pk]),
        }
        for execution in rows[:RECENT_EXECUTIONS]
    ]


def rule_for_console(rule: AllowedCommand) -> dict[str, Any]:
    """A rule as the Run panel shows it: its parameters in template order, with patterns."""
    names = [name for token in rule.template_tokens if (name := whitelist.placeholder(token))]
    return {
        "action_type": rule.action_type,
        "description": rule.description,
        "template": rule.template,
        "confirm": rule.confirm,
        "parameters": [{"name": name, "pattern": rule.parameters.get(name, "")} for name in names],
    }


def preview(server: Server, action_type: str, values: dict[str, str]) -> tuple[int, dict]:
    """(status, body) for what Run would send: the command text built from the rule's
    tokens (each value one shell word), and the argv the server gets for it."""
    from commands import rules, services  # not at the top: see admin/__init__.py

    try:
        # The API's own lookup, with its refusal (which names the usable action types).
        rule = rules.find_or_refuse(action_type, server)
    except CommandRejected as exc:
        return 400, {"detail": exc.detail, "code": exc.code, "problems": {}}
    tokens = rule.template_tokens  # split and checked when the rule was saved
    problems = {
        name: problem
        for name, pattern in rule.parameters.items()
        if (problem := parameter_problem(pattern, values.get(name, "")))
    }
    words = [values.get(name, "") if (name := whitelist.placeholder(t)) else t for t in tokens]
    command = shlex.join(words)
    try:
        found = whitelist.match(command, rule)  # rule: enabled, usable on server
    except CommandRejected as exc:
        return 400, {"detail": exc.detail, "code": exc.code, "problems": problems}
    argv = services.sent_argv(server, found.argv)
    return 200, {"argv": argv, "command": command, "sent": shlex.join(argv), "problems": {}}


def parameter_problem(pattern: str, value: str) -> str:
    """Why value cannot fill a parameter with this pattern ('' when it can): the checks
    whitelist.match makes, per input, so each box is marked as the admin types."""
    if not value:
        return "Give a value."
    if value.startswith("-"):
        return "A value may not start with '-' (a program would read it as an option)."
    try:
        whitelist.check_command_text(value)
    except CommandRejected as exc:
        return exc.detail.replace("The command", "The value", 1)
    if not re.fullmatch(pattern, value, whitelist.PATTERN_FLAGS):
        return f"Does not match the pattern {pattern}."
    return ""
