"""Layer-name patterns of selectors: globs and `re:` regular expressions.

Contract: a pattern is a glob (fnmatch, case-sensitive, `*` crosses dots, matched
against the whole qualified name) or, when it starts with `re:`, a Python regular
expression matched against the whole qualified name (`re.fullmatch`), as
llm-compressor's `ignore` lists are. A tuple of patterns matches a name when any one
does. `pattern_error` says why a pattern cannot be used (a regular expression that
does not compile) so the checker can report it at the pattern; `matches` assumes a
checked pattern and treats a broken one as matching nothing. Leaf module: only `re`
and `fnmatch`.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from functools import lru_cache

REGEX_PREFIX = "re:"


@lru_cache(maxsize=512)
def _regex(body: str) -> re.Pattern | None:
    try:
        return re.compile(body)
    except (re.error, RecursionError, OverflowError):
        return None


def pattern_error(pattern: str) -> str | None:
    """Why `pattern` cannot be used, or None when it can."""
    if not pattern.startswith(REGEX_PREFIX):
        return None
    body = pattern[len(REGEX_PREFIX):]
    if not body:
        return "the regular expression after `re:` is empty"
    try:
        re.compile(body)
    except re.error as e:
        return f"invalid regular expression: {e}"
    except (RecursionError, OverflowError):
        return "invalid regular expression: too deeply nested"
    return None


def match_one(name: str, pattern: str) -> bool:
    if pattern.startswith(REGEX_PREFIX):
        rx = _regex(pattern[len(REGEX_PREFIX):])
        return rx is not None and rx.fullmatch(name) is not None
    return fnmatchcase(name, pattern)


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """Any one of the patterns matches the whole name."""
    return any(match_one(name, p) for p in patterns)


def selected(name: str, names: tuple[str, ...] | None, exclude: tuple[str, ...] | None) -> bool:
    """A selector's name test: matched by `names` (all when None), not by `exclude`."""
    return (names is None or matches(name, names)) and not (exclude and matches(name, exclude))


__all__ = ["REGEX_PREFIX", "match_one", "matches", "pattern_error", "selected"]
