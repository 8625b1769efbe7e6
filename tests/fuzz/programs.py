"""Hypothesis strategies for KMR source text, shared by the fmt and fuzz suites.

`programs()` draws programs from the generation grammar (grammar/kmr_gen.lark) with
small, explicit terminals; `kmr_files()` lists the .kmr files of the checkout that
the round-trip and mutation tests run over.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark import Lark

from kmr_dsl.parse import UNITS

ROOT = Path(__file__).resolve().parents[2]
GRAMMAR = ROOT / "grammar" / "kmr.lark"
GEN_GRAMMAR = ROOT / "grammar" / "kmr_gen.lark"


def reserved_words() -> frozenset[str]:
    """Every quoted identifier in kmr.lark (keywords, dimensions, directions) and every
    unit: a generated name must be none of them, or it would lex differently."""
    text = GRAMMAR.read_text(encoding="utf-8")
    words = set(re.findall(r'"([A-Za-z_][A-Za-z0-9_]*)"', text))
    return frozenset(words | set(UNITS))


_RESERVED = reserved_words()

_LOWER = "abcdefghijklmnopqrstuvwxyz"
names = st.one_of(
    st.sampled_from(["x", "y", "net", "acc", "w1", "lin", "d_2", "Linear", "Conv2d"]),
    st.builds(str.__add__, st.sampled_from(_LOWER), st.text(_LOWER + "0123456789_", max_size=4)),
).filter(lambda n: n not in _RESERVED)

_digits = st.integers(0, 99).map(str)
numerals = st.one_of(
    st.integers(0, 999).map(str),                                       # 12
    st.builds("{}.{}".format, _digits, st.sampled_from(["", "0", "5", "25"])),  # 0.5, 3.
    st.builds(".{}".format, _digits),                                   # .5
    st.builds("{}e{}{}".format, st.integers(1, 9), st.sampled_from(["", "-", "+"]),
              st.integers(0, 9)),                                       # 1e-3
)

quantities = st.builds(lambda n, sp, u: f"{n}{sp}{u}", numerals, st.sampled_from(["", " "]),
                       st.sampled_from(UNITS))

# A string body: plain characters (anything but `"`, `\` and newline, non-ASCII
# included) or an escape `\c` of any character but a newline.
_plain = st.characters(blacklist_characters='"\\\n', blacklist_categories=("Cs",))
_escape = st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)).map(lambda c: "\\" + c)
strings = st.lists(st.one_of(_plain, _escape), max_size=6).map(lambda parts: '"' + "".join(parts) + '"')


def _spaced(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return strategy.map(lambda s: s + " ")


EXPLICIT = {
    "NAME": _spaced(names),
    "NUMBER": _spaced(numerals),
    "QUANTITY": _spaced(quantities),
    "STRING": _spaced(strings),
}


@lru_cache(maxsize=1)
def _gen_parser() -> Lark:
    return Lark(GEN_GRAMMAR.read_text(encoding="utf-8"), start="start")


def programs() -> st.SearchStrategy[str]:
    """Whole programs drawn from the generation grammar."""
    return from_lark(_gen_parser(), start="start", explicit=EXPLICIT)


def kmr_files(*, include_errors: bool = False) -> list[Path]:
    """The stdlib, the examples, the benchmarks' programs and the golden test programs
    (only `ok/` ones unless `include_errors`), sorted so that test ids are stable."""
    found = {p for top in ("stdlib", "examples", "benchmarks") for p in ROOT.glob(f"{top}/**/*.kmr")}
    for path in ROOT.glob("tests/**/*.kmr"):
        parts = path.relative_to(ROOT).parts
        if include_errors or "err" not in parts:
            found.add(path)
    def generated_or_hidden(p: Path) -> bool:
        return any(part.startswith(".") or part == "out" for part in p.relative_to(ROOT).parts)

    return sorted(p for p in found if not generated_or_hidden(p))
