"""Run one whitelisted command on many servers from the shell, streaming every line."""

from __future__ import annotations

import getpass
import shlex
import sys
import time

from django.core.management.base import BaseCommand, CommandError

from commands import rules, whitelist
from commands.engine import framelog
from commands.exceptions import CommandRejected, HomelabError
from commands.fleet import service as fleet
from commands.models import AllowedCommand, Batch
from commands.requests import BatchRequest, Caller, validated
from commands.results import FrameType

CANCEL_WAIT_SECONDS = 4.0


class Command(BaseCommand):
    help = (
        "Run COMMAND on every server with --tag, or on each --server, as one batch: at most "
        "--max-concurrency at once (a number or N%), stopping once more than --max-errors "
        "targets failed (the rest are skipped). Every line is printed as `server | line`, "
        "then a count per status. Exit status 0 only when every target succeeded. "
        "Ctrl-C cancels the batch: running commands are stopped on their servers. "
        "Example: runbatch --tag pi -- uptime"
    )

    def add_arguments(self, parser) -> None:
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--tag", help="Every server with this tag.")
        where.add_argument(
            "--server", action="append", dest="servers", metavar="NAME", help="Repeatable."
        )
        parser.add_argument("--max-concurrency", default="10", metavar="N", help="Default 10.")
        parser.add_argument("--max-errors", default=None, metavar="N", help="Default: none.")
        parser.add_argument(
            "--action",
            metavar="TYPE",
            help="The whitelist rule (action type); by default the one rule the command fits.",
        )
        parser.add_argument(
            "--yes", action="store_true", help="Do not ask before a rule that asks to confirm."
        )
        parser.add_argument("command", nargs="+", metavar="COMMAND", help="After --.")

    def handle(self, *args, **options) -> None:
        command = shlex.join(options["command"])
        rule = self.rule_for(command, options["action"])
        body = {
            "command": command,
            "action_type": rule.action_type,
            "max_concurrency": limit(options["max_concurrency"]),
            "max_errors": limit(options["max_errors"]),
            # A flagged rule is asked about below (or --yes) before anything starts.
            "confirm": True,
            **({"tag": options["tag"]} if options["tag"] else {"servers": options["servers"]}),
        }
        caller = Caller(name=f"cli:{getpass.getuser()}"[:150], operator=True)
        if rules.must_confirm(rule, caller) and not options["yes"]:
            self.confirm(rule, self.count_targets(body, caller))
        try:
            batch = fleet.request_batch(caller=caller, body=lambda: body, wait=False)
        except HomelabError as exc:
            raise CommandError(f"{exc.code}: {exc.detail}") from None
        try:
            self.follow(batch)
        except KeyboardInterrupt:
            self.stderr.write("Cancelling: stopping the running commands on their servers...")
            batch = fleet.cancel_batch(batch, wait_seconds=CANCEL_WAIT_SECONDS)
            self.print_summary(batch)
            sys.exit(130)
        batch.refresh_from_db()
        self.print_summary(batch)
        if batch.status != Batch.Status.SUCCEEDED:
            raise CommandError(f"batch {batch.pk} {batch.status}", returncode=1)

    def rule_for(self, command: str, action_type: str | None) -> AllowedCommand:
        """The rule named by --action, or the one enabled rule the command fits."""
        rules = AllowedCommand.objects.filter(enabled=True)
        if action_type:
            rule = rules.filter(action_type=action_type).first()
            if rule is None:
                raise CommandError(f"No enabled rule named {action_type!r}.")
            return rule
        fitting = []
        for rule in rules:
            try:
                whitelist.match(command, rule)
            except CommandRejected:
                continue
            fitting.append(rule)
        if len(fitting) != 1:
            names = ", ".join(rule.action_type for rule in fitting)
            why = f"it fits {names}" if fitting else "no enabled rule fits it"
            raise CommandError(f"{command!r}: {why}; name the rule with --action TYPE.")
        return fitting[0]

    @staticmethod
    def count_targets(body: dict, caller: Caller) -> int:
        """How many servers the batch would run on (its refusals are the batch's own)."""
        try:
            return len(fleet.targets_of(validated(BatchRequest, body), caller))
        except HomelabError as exc:
            raise CommandError(f"{exc.code}: {exc.detail}") from None

    def confirm(self, rule: AllowedCommand, count: int) -> None:
        """A rule that changes machines asks first (or needs --yes); nothing runs on no."""
        question = f"Run {rule.action_type} on {count} server{'s' * (count != 1)}? [y/N] "
        if not sys.stdin.isatty():
            raise CommandError(
                f"{rule.action_type} asks for confirmation and stdin is not a terminal: "
                "add --yes to run it."
            )
        self.stdout.write(question, ending="")
        self.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise CommandError("Not run.", returncode=1)

    def follow(self, batch: Batch) -> None:
        """Print the batch's frames as they come: `server | line`, each target's end."""
        backend, log = framelog.backend(), framelog.batch_log(batch.pk)
        partial: dict[tuple[str, str], str] = {}
        cursor = 0
        while True:
            frames = backend.read(log, cursor) or []
            cursor += len(frames)
            for frame in frames:
                if self.show(frame, partial):
                    return
            if not frames:
                time.sleep(0.05)

    def show(self, frame, partial: dict[tuple[str, str], str]) -> bool:
        fields = frame.fields
        server = fields.get("server", "?")
        if frame.type == FrameType.OUTPUT:
            key = (server, fields["stream"])
            *lines, partial[key] = (partial.get(key, "") + fields["data"]).split("\n")
            out = self.stdout if fields["stream"] == "stdout" else self.stderr
            for line in lines:
                out.write(f"{server} | {line}")
        elif frame.type == FrameType.TRUNCATED:
            self.stderr.write(f"{server} | [... the rest of {fields['stream']} is not streamed]")
        elif frame.type == FrameType.RESULT:
            for (name, stream), rest in list(partial.items()):
                if name == server and rest:
                    (self.stdout if stream == "stdout" else self.stderr).write(f"{server} | {rest}")
                    del partial[(name, stream)]
            self.stdout.write(f"{server} | == {describe(fields)}")
        return frame.type == FrameType.SUMMARY

    def print_summary(self, batch: Batch) -> None:
        counts = fleet.counts(batch)
        self.stdout.write(f"batch {batch.pk} {batch.status}:")
        for status, count in counts.items():
            if count:
                self.stdout.write(f"  {status}: {count}")


def describe(result: dict) -> str:
    """A target's end in a few words: `succeeded (exit 0, 12 ms)`, `error ssh_...: ...`."""
    status = result["status"]
    if result.get("exit_code") is not None:
        return f"{status} (exit {result['exit_code']}, {result.get('duration_ms')} ms)"
    return f"{status} {result.get('code') or ''}".rstrip()


def limit(value: str | None) -> int | str | None:
    """--max-concurrency / --max-errors as the API takes them: a number or "N%"."""
    if value is None:
        return None
    return int(value) if value.isdecimal() else value
