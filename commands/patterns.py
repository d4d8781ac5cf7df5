"""What a parameter pattern can match, worked out from its parse tree, not by sampling.

analyse() walks the tree Python's own regex parser builds (the one re.compile uses) and
over-approximates three facts about every string the pattern can re.fullmatch:

- nullable: whether it can be empty;
- first: which of '-', '\\n', '\\r', '\\0' can be its first character;
- chars: which of '\\n', '\\r', '\\0' (and '-') can appear anywhere in it.

Over-approximate means: when a construct could match one of those, it is counted. Zero-width
constructs (^ $ \\A \\Z \\b, lookarounds) are treated as matching the empty string, which
only adds strings to what the pattern can match, so the answers stay sound. Constructs whose
text depends on other groups (backreferences, conditionals) and Unicode matching are
refused with UnsafePattern.

Only those four characters matter, so a character class is reduced to which of them it
holds. None of them has an upper or lower case, so IGNORECASE never changes the answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

try:
    # Private, but it is what re.compile itself calls; the interpreter is pinned (3.11).
    from re import _parser as sre_parse
    from re._constants import (
        ANY,
        ASSERT,
        ASSERT_NOT,
        AT,
        ATOMIC_GROUP,
        BRANCH,
        CATEGORY,
        CATEGORY_DIGIT,
        CATEGORY_NOT_DIGIT,
        CATEGORY_NOT_SPACE,
        CATEGORY_NOT_WORD,
        CATEGORY_SPACE,
        CATEGORY_WORD,
        GROUPREF,
        GROUPREF_EXISTS,
        IN,
        LITERAL,
        MAX_REPEAT,
        MIN_REPEAT,
        NEGATE,
        NOT_LITERAL,
        POSSESSIVE_REPEAT,
        RANGE,
        SUBPATTERN,
    )
except ImportError as exc:  # pragma: no cover - only on an interpreter this was not built for
    raise ImportError(
        "commands.patterns needs Python's private regex parser (re._parser, "
        f"re._constants) as in Python 3.11; this interpreter does not have it ({exc}). "
        "Port commands/patterns.py to the new parser before upgrading Python."
    ) from exc

DASH = "-"
BREAKS = frozenset("\n\r\x00")
CRITICAL = frozenset({DASH, *BREAKS})

# Which critical characters each class escape holds. \s is [ \t\n\r\f\v] (plus non-ASCII
# spaces without re.ASCII, none of them critical); \d and \w hold none of the four.
_CATEGORIES: dict[Any, frozenset[str]] = {
    CATEGORY_DIGIT: frozenset(),
    CATEGORY_NOT_DIGIT: CRITICAL,
    CATEGORY_WORD: frozenset(),
    CATEGORY_NOT_WORD: CRITICAL,
    CATEGORY_SPACE: frozenset("\n\r"),
    CATEGORY_NOT_SPACE: frozenset({DASH, "\x00"}),
}
_REPEATS = (MAX_REPEAT, MIN_REPEAT, POSSESSIVE_REPEAT)
_ZERO_WIDTH = frozenset()


class UnsafePattern(ValueError):
    """The pattern uses a construct analyse() refuses; the message says which and why."""


@dataclass(frozen=True)
class Shape:
    """An over-approximation of the strings a pattern (or part of one) can match."""

    nullable: bool
    first: frozenset[str]
    chars: frozenset[str]


EMPTY = Shape(nullable=True, first=_ZERO_WIDTH, chars=_ZERO_WIDTH)


def analyse(pattern: str, flags: int = 0) -> Shape:
    """Return the Shape of every string pattern can fullmatch; raise UnsafePattern."""
    parsed = sre_parse.parse(pattern, flags)  # raises re.error like re.compile
    # state.flags includes global inline flags such as a leading (?s).
    try:
        return _sequence(parsed, parsed.state.flags)
    except RecursionError:
        raise UnsafePattern("it nests groups too deeply to check") from None


def _sequence(items: Iterable[tuple[Any, Any]], flags: int) -> Shape:
    nullable, first, chars = True, frozenset[str](), frozenset[str]()
    for op, av in items:
        part = _item(op, av, flags)
        if nullable:  # everything before this part can match empty, so it can start
            first |= part.first
        chars |= part.chars
        nullable = nullable and part.nullable
    return Shape(nullable, first, chars)


def _one(found: frozenset[str]) -> Shape:
    """A single character, which may be any of found."""
    return Shape(nullable=False, first=found, chars=found)


def _item(op: Any, av: Any, flags: int) -> Shape:
    if op is LITERAL:
        return _one(CRITICAL & {chr(av)})
    if op is NOT_LITERAL:
        return _one(CRITICAL - {chr(av)})
    if op is ANY:
        return _one(CRITICAL if flags & re.DOTALL else CRITICAL - {"\n"})
    if op is IN:
        return _one(_class_members(av))
    if op is BRANCH:
        alternatives = [_sequence(branch, flags) for branch in av[1]]
        return Shape(
            nullable=any(alt.nullable for alt in alternatives),
            first=frozenset().union(*(alt.first for alt in alternatives)),
            chars=frozenset().union(*(alt.chars for alt in alternatives)),
        )
    if op is SUBPATTERN:
        _group, add_flags, del_flags, body = av
        if add_flags & re.UNICODE:
            raise UnsafePattern(
                "it turns on Unicode matching with (?u:…), so \\d and \\w would accept "
                "look-alike characters; remove the u flag"
            )
        return _sequence(body, (flags | add_flags) & ~del_flags)
    if op in _REPEATS:
        low, high, body = av
        if high == 0:
            return EMPTY
        inner = _sequence(body, flags)
        # Any non-empty repetition starts with a non-empty match of the body.
        return Shape(nullable=low == 0 or inner.nullable, first=inner.first, chars=inner.chars)
    if op is ATOMIC_GROUP:
        return _sequence(av, flags)
    if op is AT:
        return EMPTY
    if op in (ASSERT, ASSERT_NOT):
        _sequence(av[1], flags)  # still refuse what it holds, e.g. a backreference
        return EMPTY
    if op is GROUPREF:
        raise UnsafePattern("backreferences are not allowed")
    if op is GROUPREF_EXISTS:
        raise UnsafePattern("conditional groups (?(…)…|…) are not allowed")
    raise UnsafePattern(f"it uses a construct the safety check does not know ({op})")


def _class_members(items: list[tuple[Any, Any]]) -> frozenset[str]:
    """Which critical characters a [...] class (or \\d, \\w, \\s…) can match."""
    negate = False
    found: set[str] = set()
    for op, av in items:
        if op is NEGATE:
            negate = True
        elif op is LITERAL:
            found |= CRITICAL & {chr(av)}
        elif op is RANGE:
            low, high = av
            found |= {char for char in CRITICAL if low <= ord(char) <= high}
        elif op is CATEGORY and av in _CATEGORIES:
            found |= _CATEGORIES[av]
        else:
            raise UnsafePattern(
                f"it uses a character class item the safety check does not know ({op})"
            )
    return CRITICAL - found if negate else frozenset(found)
