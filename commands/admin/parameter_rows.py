"""A rule's parameters as rows (name, pattern, help text) in the admin, instead of JSON.

Stored as before: `parameters` = {name: pattern} and `parameter_help` = {name: text}.
Each row's pattern is judged by itself with the whitelist's own check
(whitelist.check_parameter), so its error shows under its row; the rule as a whole is
judged by the model's clean() (commands/admin/rules.py puts those errors in place).
"""

import json
import re
import shlex
import unicodedata
from dataclasses import dataclass
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from commands import whitelist

EXTRA_ROWS = 3  # blank rows under the filled ones: enough without JavaScript
HELP_MAX_LENGTH = 200
ROW_INPUT = re.compile(r"(\d{1,4})-(name|pattern|help)")
EXAMPLE_PATTERN = "^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$"

# check_rule()'s error codes, by the field they concern (the rest concern the template).
PARAMETER_CODES = frozenset(
    {"parameters_not_object", "bad_parameter_name", "bad_pattern", "unsafe_pattern"}
)
TEMPLATE_CODES = frozenset({
    "empty_template", "too_long", "control_character", "unsplittable", "shell_syntax",
    "shell_builtin", "parameter_program", "partial_placeholder", "missing_pattern",
    "repeated_parameter",
})  # fmt: skip
RULE_CODES = PARAMETER_CODES | TEMPLATE_CODES | {"unused_parameter"}


@dataclass(frozen=True)
class ParameterRow:
    """One parameter as the admin edits it: the name in {braces}, its pattern, a hint."""

    name: str
    pattern: str
    help: str = ""


def rows_of(parameters: Any, help_texts: Any) -> list[ParameterRow]:
    """A rule's stored parameters ({name: pattern}, {name: text}) as rows."""
    if not isinstance(parameters, dict):
        return []
    texts = help_texts if isinstance(help_texts, dict) else {}
    return [
        ParameterRow(name=str(name), pattern=str(pattern), help=str(texts.get(name, "")))
        for name, pattern in parameters.items()
    ]


def rows_from_json(text: str, help_texts: Any) -> list[ParameterRow]:
    """Rows from a posted JSON object, as the field took before it had rows (scripts)."""
    try:
        parameters = json.loads(text)
    except ValueError:
        parameters = None
    if not isinstance(parameters, dict) or not all(
        isinstance(pattern, str) for pattern in parameters.values()
    ):
        raise ValidationError(
            "Parameters must be a JSON object mapping each parameter name to its pattern "
            '(a string), e.g. {"service": "%(example)s"}; or fill in the parameter rows.',
            code="parameters_not_object",
            params={"example": EXAMPLE_PATTERN},
        )
    return rows_of(parameters, help_texts)


def placeholders(template: str) -> set[str]:
    """The parameter names a template uses as whole {name} tokens."""
    try:
        tokens = shlex.split(template)
    except ValueError:
        return set()
    return {name for token in tokens if (name := whitelist.placeholder(token))}


class ParameterRowsWidget(forms.Widget):
    """Inputs `parameters-<n>-name`, `-pattern` and `-help` per row, plus blank rows; a
    script adds more (commands/static/commands/rules-params.js) but is not needed."""

    template_name = "admin/commands/allowedcommand/parameter_rows.html"

    class Media:
        js = ["commands/rules-params.js"]

    def __init__(self, attrs: dict | None = None) -> None:
        super().__init__(attrs)
        self.row_errors: dict[int, list[str]] = {}  # filled by the form, by row position

    def value_from_datadict(self, data: Any, files: Any, name: str) -> list[ParameterRow] | Any:
        found: dict[int, dict[str, str]] = {}
        for key in data:
            matched = key.startswith(f"{name}-") and ROW_INPUT.fullmatch(key[len(name) + 1 :])
            if matched:
                found.setdefault(int(matched[1]), {})[matched[2]] = data.get(key)
        if not found:
            # A post without rows (a script, a test) may still send the JSON object.
            return data.get(name)
        rows = (
            # The pattern is kept as typed: a blank can be part of a regular expression.
            ParameterRow(
                name=values.get("name", "").strip(),
                pattern=values.get("pattern", ""),
                help=values.get("help", "").strip(),
            )
            for _, values in sorted(found.items())
        )
        return [row for row in rows if row.name or row.pattern.strip() or row.help]

    def value_omitted_from_data(self, data: Any, files: Any, name: str) -> bool:
        return name not in data and not any(key.startswith(f"{name}-") for key in data)

    def get_context(self, name: str, value: Any, attrs: dict | None) -> dict:
        context = super().get_context(name, value, attrs)
        if not isinstance(value, list):
            try:
                value = rows_from_json(value, {}) if isinstance(value, str) else []
            except ValidationError:
                value = []
        shown = [*value, *(ParameterRow(name="", pattern="") for _ in range(EXTRA_ROWS))]
        context["rows"] = [
            {"index": index, "number": index + 1, "row": row, "errors": self.row_errors.get(index)}
            for index, row in enumerate(shown)
        ]
        return context

    def id_for_label(self, id_: str) -> str:
        return f"{id_}-0-name" if id_ else id_


class ParameterRowsField(forms.Field):
    """The filled rows, in order; the form checks them (it knows the template)."""

    widget = ParameterRowsWidget

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, **kwargs)
        self.saved_help: dict = {}  # the rule's help texts, kept when JSON is posted

    def to_python(self, value: Any) -> list[ParameterRow]:
        if isinstance(value, list):
            return value
        if value in (None, ""):
            return []
        return rows_from_json(value, self.saved_help)


def row_problems(row: ParameterRow, earlier: list[ParameterRow]) -> list[str]:
    """What is wrong with one row, alone and against the rows above it."""
    if not row.name:
        return ["Name this parameter (service for a {service} in the template) or clear the row."]
    if not whitelist.PARAMETER_NAME.fullmatch(row.name):
        return [
            f"{row.name!r} is not a parameter name; use letters, digits and _, not starting "
            "with a digit (service for a {service} in the template)."
        ]
    for number, other in enumerate(earlier, start=1):
        if other.name == row.name:
            return [
                f"Parameter {row.name!r} already has row {number}; give each parameter one "
                "row (rename or clear this one)."
            ]
    problems = help_problems(row.help)
    if not row.pattern.strip():
        problems.append(
            f"Give {row.name!r} a pattern: the regular expression a value must fully match, "
            f"e.g. {EXAMPLE_PATTERN}"
        )
        return problems
    try:
        # check_rule()'s own check of one parameter, so its message lands on this row.
        whitelist.check_parameter(row.name, row.pattern)
    except ValidationError as exc:
        problems.extend(exc.messages)
    return problems


def help_problems(text: str) -> list[str]:
    if len(text) > HELP_MAX_LENGTH:
        return [
            f"Keep the help text to {HELP_MAX_LENGTH} characters (it has {len(text)}): a "
            "short hint for clients, e.g. 'a systemd unit, e.g. nginx'."
        ]
    if any(unicodedata.category(char) in whitelist.REFUSED_CATEGORIES for char in text):
        return ["The help text holds a control or invisible character; write plain text."]
    return []


def rows_to_fix(row_errors: dict[int, list[str]]) -> str:
    numbers = [str(index + 1) for index in sorted(row_errors)]
    if len(numbers) == 1:
        return f"Fix parameter row {numbers[0]} (see the message under it)."
    return f"Fix parameter rows {', '.join(numbers)} (see the message under each)."
