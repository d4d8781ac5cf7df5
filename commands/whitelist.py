"""The whitelist: whether a client's command may run, and exactly what is sent.

Safety comes from how commands are handled, not from the admin writing good regexes:

1. A command holding a control or invisible character, or longer than
   MAX_COMMAND_LENGTH, is refused before anything parses it.
2. It is split with POSIX shell rules and compared token by token with the rule's
   template. Literal tokens must be equal; a `{name}` token is one parameter.
3. A parameter must re.fullmatch its pattern, must not be empty and must not start
   with '-' (a program would read it as an option). These checks run on every request,
   whatever the pattern says.
4. What is sent is shlex.join(argv) built from those tokens, never the client's string,
   so the remote POSIX shell sees every token as one literal word.

check_rule() also refuses, when a rule is saved, any pattern that can match an empty
value, a value starting with '-', or one holding a newline, CR or NUL. It proves this
from the parsed pattern (commands/patterns.py), so the admin finds a loose pattern then
rather than never. Rules 1 to 4 do not depend on it. It also refuses shell operators and
expansions (`|`, `&&`, `>`, `$(`...) outside an `sh -c` script: no shell runs a template,
so they would reach the program as literal arguments (commands/shellsyntax.py).

Everything here is pure: no models, no I/O. A rule is anything with `action_type`,
`template` and `parameters` (a saved AllowedCommand, or a migration's frozen data); finding
the rule a request names is commands/rules.py's (the services layer).
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from django.core.exceptions import ValidationError

from commands import shellsyntax
from commands.exceptions import InvalidParameter, NotWhitelisted
from commands.patterns import BREAKS, DASH, UnsafePattern, analyse

MAX_COMMAND_LENGTH = 1024
MAX_PATTERN_LENGTH = 512

# Refused anywhere in a command or template: Cc (NUL, CR, LF, TAB, ESC, DEL, C1),
# Cf (zero-width space U+200B, right-to-left override U+202E, BOM: text that reads
# differently than it runs), Cs (lone surrogates), Zl/Zp (Unicode line breaks).
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

# Builtins of POSIX sh and bash that have no program of the same name on a typical
# Linux server (echo, printf, test, kill, true, false do, and are fine).
_SHELL_ONLY_BUILTIN_NAMES = (
    ". alias bg builtin cd command declare dirs disown enable eval exec exit export fc "
    "fg getopts hash history jobs let local logout popd pushd read readonly return set "
    "shift shopt source suspend times trap type typeset ulimit umask unalias unset wait"
)
SHELL_ONLY_BUILTINS = frozenset(_SHELL_ONLY_BUILTIN_NAMES.split())

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Patterns are compiled with re.ASCII so \d, \w and \s mean ASCII only: otherwise `\d+`
# would accept Arabic-Indic digits and `\w+` fullwidth look-alike letters.
PATTERN_FLAGS = re.ASCII

# No pattern may accept an empty value, a leading '-', or a line break or NUL. Other
# controls (tab, ESC) are refused in every command anyway, and a blank is harmless once
# quoted, so patterns may allow them. analyse() proves it; these samples are a second,
# independent check and give the admin a concrete example in the message.
_SAMPLE_BASES = ("", "a", "x", "1", "0", "help", "rf", "nginx", "nginx.service", "wg-quick@wg0")
_SAMPLE_BREAKS = ("\n", "\r", "\x00")
UNSAFE_SAMPLES: tuple[str, ...] = (
    "",
    *(f"{dash}{base}" for dash in ("-", "--") for base in _SAMPLE_BASES),
    *(
        value
        for brk in _SAMPLE_BREAKS
        for value in (brk, f"a{brk}", f"{brk}a", f"a{brk}b", f"1{brk}", f"nginx{brk}")
    ),
)


class Rule(Protocol):
    """What matching needs of a rule (AllowedCommand has it)."""

    action_type: str
    template: str
    parameters: Mapping[str, str]


@dataclass(frozen=True)
class Match:
    """A command accepted by a rule.

    argv is a list of str (JSON-friendly, compares equal to a list); treat it as
    read-only. params maps each parameter name to its token.
    """

    rule: Rule
    params: dict[str, str]
    argv: list[str]

    @property
    def sent(self) -> str:
        """The command line sent to the server: shlex.join(argv), never the client's."""
        return shlex.join(self.argv)


# --- rules ------------------------------------------------------------------------------
def check_rule(template: str, parameters: Any) -> list[str]:
    """Validate a rule; return its template tokens or raise ValidationError naming why."""
    patterns = _compile_parameters(parameters)
    tokens = _split_template(template)
    _check_shell_syntax(template, tokens)
    _check_program(tokens[0])
    used = _check_placeholders(tokens, patterns)
    unused = sorted(set(patterns) - used)
    if unused:
        raise ValidationError(
            f"Parameter {unused[0]!r} is declared but the template has no {{{unused[0]}}} "
            "token; use it in the template or remove it, so the rule shows exactly what runs.",
            code="unused_parameter",
        )
    return tokens


def _compile_parameters(parameters: Any) -> dict[str, re.Pattern[str]]:
    if not isinstance(parameters, dict):
        raise ValidationError(
            "Parameters must be a JSON object mapping each parameter name to a regular "
            'expression, e.g. {"service": "^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}$"}; '
            f"got a {type(parameters).__name__}.",
            code="parameters_not_object",
        )
    return {name: _compile_pattern(name, pattern) for name, pattern in parameters.items()}


def check_parameter(name: Any, pattern: Any) -> re.Pattern[str]:
    """Validate one parameter (its name, and its pattern as check_rule does); the compiled
    pattern, or ValidationError naming why (the admin shows it under the parameter's row)."""
    return _compile_pattern(name, pattern)


def _compile_pattern(name: Any, pattern: Any) -> re.Pattern[str]:
    if not isinstance(name, str) or not PARAMETER_NAME.fullmatch(name):
        raise ValidationError(
            f"Parameter name {name!r} is not valid; use letters, digits and _ "
            "(not starting with a digit).",
            code="bad_parameter_name",
        )
    if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN_LENGTH:
        raise ValidationError(
            f"The pattern for {name!r} must be a non-empty string of at most "
            f"{MAX_PATTERN_LENGTH} characters.",
            code="bad_pattern",
        )
    try:
        compiled = re.compile(pattern, PATTERN_FLAGS)
    # Not only re.error: (?u) raises ValueError, a{4294967296} OverflowError.
    except (re.error, ValueError, OverflowError) as exc:
        raise ValidationError(
            f"The pattern for {name!r} does not compile: {exc}.", code="bad_pattern"
        ) from None
    _refuse_unsafe_pattern(name, compiled)
    return compiled


def _refuse_unsafe_pattern(name: str, compiled: re.Pattern[str]) -> None:
    where = f"The pattern for {name!r}"
    try:
        problems = _pattern_problems(where, compiled)
    except UnsafePattern as exc:
        problems = [f"{where} is refused: {exc}."]
    if not problems:
        # Defence in depth: a sample the analysis let through would mean the analysis is
        # wrong. fullmatch, as on every request: with match(), `^[a-z]+$` accepts "a\n".
        accepted = next((v for v in UNSAFE_SAMPLES if compiled.fullmatch(v)), None)
        if accepted is not None:
            problems = [f"{where} accepts {accepted!r}, {_why_unsafe(accepted)}; tighten it."]
    if problems:
        raise ValidationError([ValidationError(text, code="unsafe_pattern") for text in problems])


def _pattern_problems(where: str, compiled: re.Pattern[str]) -> list[str]:
    """One sentence per way the pattern can match an unsafe value, proven by analyse()."""
    shape = analyse(compiled.pattern, compiled.flags)
    problems = []
    if shape.nullable:
        problems.append(
            f"{where} can match an empty value{_example(compiled, {''})}; require at least "
            "one character (+ or {1,n}, not * or ?)."
        )
    if DASH in shape.first:
        problems.append(
            f"{where} can match a value starting with '-'{_example(compiled, _DASHED)}, which "
            "a program would read as an option; start it with a class without '-', e.g. "
            "[A-Za-z0-9_]."
        )
    breaks = [_BREAK_NAMES[char] for char in _BREAK_NAMES if char in shape.chars]
    if breaks:
        problems.append(
            f"{where} can match {_either(breaks)}{_example(compiled, _BROKEN)}; leave "
            "them out of its classes (e.g. [^\\n\\r\\x00]) and avoid '.' with (?s), \\s, "
            "\\W, \\D and \\S."
        )
    return problems


_BREAK_NAMES = {"\n": "a newline (\\n)", "\r": "a carriage return (\\r)", "\x00": "a NUL (\\x00)"}
_DASHED = frozenset(value for value in UNSAFE_SAMPLES if value.startswith(DASH))
_BROKEN = frozenset(value for value in UNSAFE_SAMPLES if BREAKS & set(value))


def _example(compiled: re.Pattern[str], samples: Any) -> str:
    """' (it accepts X)' for the first sample the pattern accepts, else ''."""
    for value in sorted(samples, key=lambda value: (len(value), value)):
        if compiled.fullmatch(value):
            return f" (it accepts {value!r})"
    return ""


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _why_unsafe(value: str) -> str:
    if value.startswith("-"):
        return "which starts with '-' and a program would read as an option"
    if _first_refused_character(value) is not None:
        return "which holds a control character"
    return "an empty value"


def _split_template(template: Any) -> list[str]:
    if not isinstance(template, str) or not template.strip():
        raise ValidationError("The template is empty.", code="empty_template")
    if len(template) > MAX_COMMAND_LENGTH:
        raise ValidationError(
            f"The template is longer than {MAX_COMMAND_LENGTH} characters.", code="too_long"
        )
    bad = _first_refused_character(template)
    if bad is not None:
        raise ValidationError(
            f"The template contains {bad}; a client's command can never contain one, so "
            "the rule could never match. Remove it.",
            code="control_character",
        )
    try:
        return shlex.split(template)
    except ValueError as exc:
        raise ValidationError(
            f"The template cannot be split with POSIX shell rules ({exc}); check its quotes.",
            code="unsplittable",
        ) from None


def _check_shell_syntax(template: str, tokens: list[str]) -> None:
    # Every token reaches the program as one literal argument (shlex.join): a pipe or
    # `$(...)` would silently become an argument (commands/shellsyntax.py).
    for position, syntax in shellsyntax.find(template):
        if shellsyntax.is_shell_script(tokens, position):
            continue
        token = tokens[position] if position < len(tokens) else syntax
        kind = "operator" if syntax[0] in shellsyntax.OPERATOR_CHARACTERS else "expansion"
        fix = shellsyntax.as_sh_c(template, PLACEHOLDER)
        raise ValidationError(
            f"Token {position + 1} ({token!r}) uses the shell {kind} {syntax!r}, but no "
            f"shell runs a template: {tokens[0]!r} would get it as a literal argument. "
            f"Run it in a shell with one `sh -c` script: {fix} (or quote it, if "
            f"{tokens[0]!r} should get it literally).",
            code="shell_syntax",
        )


def _check_program(program: str) -> None:
    # Commands run under the server's `timeout`, which executes a program: a shell builtin
    # with no program of the same name (cd, ulimit, ...) would fail with 127 every time.
    if program in SHELL_ONLY_BUILTINS:
        raise ValidationError(
            f"{program!r} is a shell builtin, not a program, and commands run under the "
            f"server's `timeout`; wrap it: sh -c '{program} ...'.",
            code="shell_builtin",
        )


def _check_placeholders(tokens: list[str], patterns: dict[str, re.Pattern[str]]) -> set[str]:
    """Return the parameter names the template uses; each must be one whole token."""
    if PLACEHOLDER.fullmatch(tokens[0]):
        raise ValidationError(
            f"The program (first token, {tokens[0]!r}) must be written literally, "
            "not as a parameter.",
            code="parameter_program",
        )
    used: set[str] = set()
    for position, token in enumerate(tokens, start=1):
        name = placeholder(token)
        if name is None:
            if PLACEHOLDER.search(token):
                raise ValidationError(
                    f"Token {position} ({token!r}) puts a parameter inside a longer "
                    "token; a {name} must be a whole token, separated by spaces.",
                    code="partial_placeholder",
                )
            continue
        if name not in patterns:
            # params let a caller reword the fix (allowcommand gives its --param form).
            raise ValidationError(
                "Token %(position)s is {%(name)s} but parameters has no pattern for "
                '%(quoted)s; add "%(name)s": "<regex>" (braces around a bare name always '
                "mean a parameter).",
                code="missing_pattern",
                params={"position": position, "name": name, "quoted": repr(name)},
            )
        if name in used:
            raise ValidationError(
                f"{{{name}}} appears more than once; each parameter fills exactly one token.",
                code="repeated_parameter",
            )
        used.add(name)
    return used


def placeholder(token: str) -> str | None:
    """The parameter name of a whole `{name}` template token; None for a literal."""
    found = PLACEHOLDER.fullmatch(token)
    return found.group(1) if found else None


# --- commands ---------------------------------------------------------------------------
def check_command_text(command: str) -> None:
    """Raise NotWhitelisted unless command is non-empty, short, one line of plain text."""
    if not isinstance(command, str):
        raise NotWhitelisted("The command must be a string.")
    if not command.strip():
        raise NotWhitelisted("The command is empty.")
    # Length first, so a huge input is refused without being scanned.
    if len(command) > MAX_COMMAND_LENGTH:
        raise NotWhitelisted(
            f"The command is longer than {MAX_COMMAND_LENGTH} characters ({len(command)})."
        )
    bad = _first_refused_character(command)
    if bad is not None:
        raise NotWhitelisted(
            f"The command contains {bad}; send one line of printable text with words "
            "separated by spaces."
        )


def _first_refused_character(text: str) -> str | None:
    for position, char in enumerate(text, start=1):
        category = unicodedata.category(char)
        if category in REFUSED_CATEGORIES:
            return f"a control or invisible character (U+{ord(char):04X}) at position {position}"
    return None


def match(command: str, rule: Rule) -> Match:
    """Match command against one rule (ignoring enabled and servers); no database."""
    check_command_text(command)
    template = _rule_tokens(rule)
    tokens = _split_command(command, rule)
    _compare_shape(tokens, template, rule)
    params: dict[str, str] = {}
    for position, (expected, token) in enumerate(zip(template, tokens, strict=True), start=1):
        name = placeholder(expected)
        if name is not None:
            _check_value(name, token, position, rule)
            params[name] = token
    return Match(rule=rule, params=params, argv=list(tokens))


def _rule_tokens(rule: Rule) -> list[str]:
    # Re-validated on every request, not read from template_tokens: a row written
    # around save() (a queryset update, raw SQL, an old check) can never run unchecked.
    try:
        return check_rule(rule.template, rule.parameters)
    except ValidationError as exc:
        raise NotWhitelisted(
            f"Rule {rule.action_type!r} is invalid and refuses every command until an "
            f"admin fixes it: {' '.join(exc.messages)}"
        ) from None


def _split_command(command: str, rule: Rule) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError as exc:
        raise NotWhitelisted(
            f"The command cannot be split with POSIX shell rules ({exc}); it does not "
            f"match rule {rule.action_type!r}."
        ) from None


def _compare_shape(tokens: list[str], template: list[str], rule: Rule) -> None:
    # Literals first, up to the shorter length: the first differing position is named.
    for position, (expected, token) in enumerate(zip(template, tokens, strict=False), start=1):
        if placeholder(expected) is None and token != expected:
            raise NotWhitelisted(
                f"Token {position} ({token!r}) does not match rule {rule.action_type!r}, "
                f"which expects {expected!r} there."
            )
    if len(tokens) != len(template):
        raise NotWhitelisted(
            f"Rule {rule.action_type!r} expects {_tokens(len(template))} but the command "
            f"has {len(tokens)}; they differ from token {min(len(tokens), len(template)) + 1}."
        )


def _tokens(count: int) -> str:
    return f"{count} token" if count == 1 else f"{count} tokens"


def _check_value(name: str, value: str, position: int, rule: Rule) -> None:
    where = f"Parameter {name!r} of rule {rule.action_type!r} (token {position}, {value!r})"
    if value.startswith("-"):
        raise InvalidParameter(f"{where} starts with '-', which a program would read as an option.")
    pattern = re.compile(rule.parameters[name], PATTERN_FLAGS)
    if not value or not pattern.fullmatch(value):
        raise InvalidParameter(f"{where} does not match its pattern {pattern.pattern!r}.")
