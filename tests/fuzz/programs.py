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

from kmr_dsl.parse.lalr import UNITS

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


# ---------------------------------------------------------------- deep and unicode programs

from kmr_dsl.parse import MAX_NESTING  # noqa: E402

# One nesting level each: `{}` is the expression nested so far. Type errors are welcome
# (the checker must report them, not crash); a wrapper like `({})` adds no level.
WRAPPERS = (
    "{} + size", "size + {}", "{} - 1 KB", "{} * 2", "2 / {}", "-{}", "not {}", "({})",
    "if s > 0.1 then {} else size", "if {} then size else 2 * size", "max(size, {})", "min({}, 1 MB)",
    "{} and true", "false or {}", "{} <= 1 MB", "baseline.size - {}", "acc({})", "{}.bits", "x[{}]",
)
ATOMS = ("size", "s", "1 KB", "0.5", "true", "baseline.size", "latency", "layer.bits", "3", "25%")

# Characters a hostile file might carry: digits of other scripts, marks that change
# how text looks (byte order mark, zero-width and bidirectional controls, combining
# accents), line and paragraph separators, letters outside ASCII, an emoji.
UNICODE = ("٣", "０", "৩", "𝟑", "²", "\ufeff", "\u200b", "\u200d", "\u202e", "\u2066", "\u0301", "\u00a0",
           "\u2028", "\u2029", "\x85", "é", "ß", "λ", "Ж", "中", "💥", "\U0001F3F3\uFE0F", "ﬁ", "Ⅻ", "\x00", "\r")

# Where a generated expression goes: each template reads `{e}` once.
CONTEXTS = (
    "pipeline p(m) {{\n    prune(amount = s) on layers(Linear)\n    budget {{\n        {e}\n    }}\n}}\n",
    "pipeline p(m) {{\n    budget {{ size <= 1 MB }}\n    objective minimize {e}\n}}\n",
    "meter d = {e}\npipeline p(m) {{\n    budget {{ d <= 1 MB }}\n}}\n",
    "rule r(a : float in [0.0, 1.0]) accepts Linear requires {e} effect layer.density = a\n",
    "pipeline p(m) {{\n    prune(amount = {e}) on layers(Linear)\n}}\n",
    "property q(p) {{\n    forall s\n    check {e}\n}}\npipeline p(m) {{ prune(amount = s) }}\n",
)
HEADER = 'import "std"\nmodel m = factory("fake:mlp")\nknob s : float in [0.0, 0.9] step 0.1 = 0.5\n'

# Far past the limit the parse itself costs about a second per 3,000 levels, so those
# are drawn rarely; tests/parse/test_limits.py has 10,000-level cases of each form.
depths = st.one_of(
    st.integers(0, 12),
    st.integers(MAX_NESTING - 4, MAX_NESTING + 4),      # either side of the limit
    st.integers(0, 40).map(lambda k: MAX_NESTING + 20 if k < 36 else 1_000 if k < 40 else 3_000),
)


@st.composite
def deep_expressions(draw) -> str:
    depth = draw(depths)
    # a few wrappers repeated keep deep texts small to draw; the order still varies
    cycle = draw(st.lists(st.sampled_from(WRAPPERS), min_size=1, max_size=4))
    e = draw(st.sampled_from(ATOMS))
    for i in range(depth):
        prefix, suffix = cycle[i % len(cycle)].split("{}")
        e = prefix + e + suffix
    return e


@st.composite
def unicode_noise(draw, text: str) -> str:
    """`text` with up to four characters of UNICODE (or any non-surrogate character)
    inserted at drawn places, and sometimes a byte order mark in front."""
    chars = list(text)
    for _ in range(draw(st.integers(0, 4))):
        c = draw(st.one_of(st.sampled_from(UNICODE), st.characters(blacklist_categories=("Cs",))))
        chars.insert(draw(st.integers(0, len(chars))), c)
    out = "".join(chars)
    return ("\ufeff" + out) if draw(st.booleans()) and not out.startswith("\ufeff") else out


@st.composite
def deep_unicode_programs(draw) -> str:
    """A small program with one deeply nested expression in a drawn context (budget
    line, objective, derived meter, rule precondition, step argument, property check),
    unicode names, strings and comments, and unicode noise anywhere."""
    e = draw(deep_expressions())
    body = draw(st.sampled_from(CONTEXTS)).format(e=e)
    extra = draw(st.sampled_from([
        "", '# commentaire — 中文 💥\n', 'data d = tensors("données/ж.pt")\n', "knob ñ : int in [0, 4] = 2\n",
        "knob b : int in {4, 8} = ８\n", "pipeline z(m) {\n    budget {\n        size <= ٣٠ KB\n    }\n}\n",
    ]))
    return draw(unicode_noise(HEADER + extra + body)) if draw(st.booleans()) else HEADER + extra + body
