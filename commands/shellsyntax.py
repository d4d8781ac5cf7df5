"""Shell syntax in a whitelist template: what a POSIX shell would act on, and where.

No shell runs a template: its tokens reach the program as literal arguments. So a `|`,
`&&`, `>` or `$(...)` written where a shell would act on it is a mistake the admin must
hear about when saving the rule, with the `sh -c` form that does what they meant. Quoted
text is the admin's deliberate literal, as in a shell; the script of `sh -c` is the one
token a shell does read, whatever it holds.
"""

from __future__ import annotations

import re
import shlex

# What a POSIX shell acts on outside quotes; inside double quotes only the expansions.
OPERATOR_CHARACTERS = frozenset("|&;<>()")
EXPANSION = re.compile(r"\$(?:\(|\{|[A-Za-z_][A-Za-z0-9_]*|[0-9@*#?!$-])")
SHELLS = frozenset({"sh", "bash", "dash", "ash", "ksh", "zsh"})
C_OPTION = re.compile(r"-[A-Za-z]*c")  # -c, or a cluster ending in it: -ec, -lc


def find(template: str) -> list[tuple[int, str]]:
    """(token index, text) of each operator or expansion a POSIX shell would act on: the
    same scan as shlex.split, but noting what stands outside single quotes."""
    found: list[tuple[int, str]] = []
    index, in_word, quote, i = 0, False, "", 0
    while i < len(template):
        char = template[i]
        if quote == "'":
            quote = "" if char == "'" else quote
        elif char == "\\":
            i += 1  # escaped (a literal) outside single quotes
            in_word = True
        elif char in "`$" and (expansion := expansion_at(template, i)):
            found.append((index, expansion))
            in_word = True
        elif quote == '"':
            quote = "" if char == '"' else quote
        elif char in "'\"":
            quote, in_word = char, True
        elif char.isspace():
            index, in_word = index + in_word, False
        elif char in OPERATOR_CHARACTERS:
            end = i
            while end < len(template) and template[end] in OPERATOR_CHARACTERS:
                end += 1
            found.append((index, template[i:end]))
            in_word, i = True, end - 1
        else:
            in_word = True
        i += 1
    return found


def expansion_at(template: str, i: int) -> str | None:
    """The command substitution or parameter expansion starting at template[i], if any."""
    if template[i] == "`":
        return "`"
    found = EXPANSION.match(template, i)
    return found.group(0) if found else None


def is_shell_script(tokens: list[str], position: int) -> bool:
    """Whether tokens[position] is the script of `sh -c` (options may stand between)."""
    if position < 2 or not C_OPTION.fullmatch(tokens[position - 1]):
        return False
    for before in range(position - 2, -1, -1):
        token = tokens[before]
        if token.rsplit("/", 1)[-1] in SHELLS:
            return True
        option_argument = before > 0 and tokens[before - 1] in ("-o", "+o")
        if not token.startswith(("-", "+")) and not option_argument:
            return False
    return False


def as_sh_c(template: str, placeholder: re.Pattern[str]) -> str:
    """The template as one `sh -c` script, its parameters passed as "$1", "$2", ..."""
    names = list(dict.fromkeys(placeholder.findall(template)))
    script = placeholder.sub(lambda found: f'"${names.index(found.group(1)) + 1}"', template)
    rest = "".join(f" {{{name}}}" for name in names)
    return f"sh -c {shlex.quote(script)}" + (f" sh{rest}" if names else "")
