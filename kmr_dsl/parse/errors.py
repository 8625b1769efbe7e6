"""The KMR1xx message of a declaration lark could not parse.

Contract: `diagnose(exc, chunk, file, line_offset)` turns lark's UnexpectedInput on one
declaration into one Diagnostic. Messages are chosen from labelled examples (lark's
`match_examples`, keyed on the parser state), plus a bracket scan that names the
construct a missing `}` or `)` should close (pairing a `}` alone on its line with the
`{` indented like it), a check for a word glued to a number (KMR107, unknown unit), and
"expected a declaration" (KMR108) between declarations.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from kmr_dsl.diagnostics import Diagnostic, Span, error
from kmr_dsl.parse.lalr import UNITS, parser
from kmr_dsl.parse.source import comment_start, scan

# Labelled examples: each label is (code, message). lark picks the label whose example
# fails in the same parser state as the real error.
_EXAMPLES: dict[tuple[str, str], list[str]] = {
    ("KMR105", "missing operand after the operator"): [
        "pipeline p(m) { budget { size <= } }",
        "pipeline p(m) { budget { size <= 1 + } }",
        "pipeline p(m) { budget { size <= 2 * } }",
        "meter r = size / ",
        "pipeline p(m) { budget { size <= 1 and } }",
        "rule r() requires layer.bits >= effect layer.bits = 1",
        "pipeline p(m) { budget { size <= 1 - } }",
        "pipeline p(m) { objective maximize }",
    ],
    ("KMR104", "a step needs its argument list: `RULE(arg = value, ...)`"): [
        "pipeline p(m) { prune on layers(Linear) }",
        "pipeline p(m) { prune }",
    ],
    ("KMR104", "arguments are separated by `,`"): [
        "pipeline p(m) { prune(amount = 0.5 method = channel) }",
        "model m = factory(\"a:b\" weights = \"w\")",
    ],
    ("KMR104", "a knob needs a type: `knob NAME : int in [lo, hi]`"): [
        "knob x = 3",
        "knob x in [0, 1]",
        "knob x : = 3",
        "knob x : in [0, 1]",
    ],
    ("KMR104", "a comparison cannot be compared again; a budget or check line cannot start with `-` "
               "(move the negated term to the other side)"): [
        "pipeline p(m) { budget { size <= 3 -size <= 3 } }",
        "pipeline p(m) { budget { size <= 3 - size <= 3 } }",
        "property q(p) { check size <= 3 <= 4 }",
    ],
    ("KMR104", "an int or float knob needs a domain: `in [lo, hi]` or `in {v1, v2}`"): [
        "knob x : int = 3",
        "knob x : float",
    ],
    ("KMR104", "a domain is `[lo, hi]`, `[lo, hi)` or `{v1, v2, ...}`"): [
        "knob x : int in 3",
        "knob x : int in [0 1]",
        "knob x : int in [0, 1, 2]",
    ],
    ("KMR104", "a selector is `layers(KIND, ..., name = \"glob\", exclude = \"glob\")` or `all`"): [
        "pipeline p(m) { prune(amount = 0.5) on Linear }",
        "pipeline p(m) { prune(amount = 0.5) on }",
    ],
    ("KMR104", "a kind list names at least one layer kind: `layers([Linear, Conv2d])`"): [
        "pipeline p(m) { prune(amount = 0.5) on layers([]) }",
    ],
    ("KMR104", "a list parameter is `list[int]`, `list[float]` or `list[str]`"): [
        "rule r(a : list[bool]) impl \"a:b\"",
        "rule r(a : list) impl \"a:b\"",
    ],
    ("KMR105", "`report` lists the meters to show: `report accuracy(test), size`"): [
        "pipeline p(m) { report }",
    ],
    ("KMR104", "a budget line is a comparison such as `size <= 16 KB`"): [
        "pipeline p(m) { budget { <= 3 } }",
        "pipeline p(m) { budget { size <= 3 ) } }",
    ],
    ("KMR104", "an objective reads `objective maximize EXPR` or `objective minimize EXPR`"): [
        "pipeline p(m) { objective accuracy }",
        "pipeline p(m) { objective max accuracy }",
    ],
    ("KMR104", "a pipeline names its model: `pipeline NAME(MODEL) { ... }`"): [
        "pipeline p { }",
        "pipeline p() { }",
    ],
    ("KMR104", "a rule clause starts with accepts, requires, effect or impl"): [
        "rule r() foo layer.bits",
        "rule r() accepts Linear bar",
    ],
    ("KMR104", "an effect assigns a state field: `effect layer.FIELD = EXPR` or `effect model.FIELD = EXPR`"): [
        "rule r() effect bits = 3",
        "rule r() effect layer.bits 3",
    ],
    ("KMR104", "a model or data declaration is `NAME = LOADER(...)`"): [
        "model m factory(\"a:b\")",
        "model m = \"x\"",
        "data d = 3",
    ],
    ("KMR104", "an import names a quoted path: `import \"std\"`"): [
        "import std",
    ],
    ("KMR108", "expected a declaration: import, model, data, knob, meter, rule, pipeline or property"): [
        "foo",
        "3",
        "prune(amount = 0.5)",
    ],
}

_CLOSERS = {"(": ")", "[": "]", "{": "}"}


def _state_key(e: UnexpectedInput):
    """The LALR state the parser was in: lark's own match_examples also compares the
    stack depth, which differs with the number of earlier items, so we key on the top
    state and the token type only."""
    state = getattr(e, "state", None)
    position = getattr(state, "position", state)
    token = getattr(e, "token", None)
    accepts = frozenset(getattr(e, "accepts", None) or getattr(e, "expected", ()) or ())
    return position, accepts, getattr(token, "type", None)


@lru_cache(maxsize=1)
def _example_states() -> dict:
    table: dict = {}
    for label, examples in _EXAMPLES.items():
        for example in examples:
            try:
                parser().parse(example)
            except UnexpectedToken as e:
                table.setdefault(_state_key(e), label)
                table.setdefault(_state_key(e)[:2] + (None,), label)
    return table


def _strip_comment(line: str) -> str:
    """The line without its comment (a `#` inside a string is not one)."""
    start = comment_start(line)
    return line if start < 0 else line[:start]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _open_brackets(text: str, stop: tuple[int, int] | None = None):
    """Brackets still open (innermost last) at the end of `text`, or before (line, col)
    `stop`: each is (char, line, col, the words before it on its line). Also returns
    the openers that a closer skipped by indentation: a `}` alone on its line closes the
    open `{` whose line is indented like it, so the deeper ones it jumps over are the
    ones left unclosed (a missing `}` of a budget is blamed on the budget, not on the
    pipeline around it)."""
    stack: list[tuple[str, int, int, str]] = []
    skipped: list[tuple[str, int, int, str]] = []
    lines = text.split("\n")
    for lineno, raw in enumerate(lines, start=1):
        if stop is not None and lineno > stop[0]:
            return stack, skipped
        for i, c in scan(raw):
            if stop is not None and (lineno, i + 1) >= stop:
                return stack, skipped
            if c in _CLOSERS:
                stack.append((c, lineno, i + 1, raw[:i].strip()))
            elif c != "#" and stack and _CLOSERS[stack[-1][0]] == c:
                if c == "}" and not raw[:i].strip():
                    level = _indent(raw)
                    same = [k for k, b in enumerate(stack) if b[0] == "{" and _indent(lines[b[1] - 1]) == level]
                    if same and same[-1] < len(stack) - 1 and _indent(lines[stack[-1][1] - 1]) > level:
                        skipped.extend(reversed(stack[same[-1] + 1:]))
                        del stack[same[-1] + 1:]
                stack.pop()
    return stack, skipped


def _unclosed(text: str) -> tuple[str, int, int, str] | None:
    """The bracket most likely left open: (char, line, col, the words before it)."""
    stack, skipped = _open_brackets(text)
    if skipped:
        return skipped[0]
    return stack[-1] if stack else None


def _code_end(chunk: str) -> tuple[int, int]:
    """(line, col) just after the last character of code, comments and blank lines aside."""
    lines = chunk.split("\n")
    for number in range(len(lines), 0, -1):
        code = _strip_comment(lines[number - 1]).rstrip()
        if code:
            return number, len(code) + 1
    return 1, 1


def _missing_closer(open_, file: str, line_offset: int) -> Diagnostic:
    ch, oline, ocol, before = open_
    closer = _CLOSERS[ch]
    what = _construct(before) if ch == "{" else "the argument list" if ch == "(" else "the brackets"
    span = Span(file, oline + line_offset, ocol, oline + line_offset, ocol + 1)
    return error("KMR102", span, f"missing `{closer}` closing {what}",
                 f"`{ch}` opened here is never closed", hint=f"add `{closer}` at the end of {what}")


# A name right after a number on the same line is most likely a unit the lexer does not
# know (`16 kb`, `2 sec`): the known ones are lexed together with their number.
_AFTER_NUMBER = re.compile(r"(?<![A-Za-z_0-9.])([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?[ \t]*$")


def _unknown_unit(tok: Token, chunk: str, line: int, col: int) -> str | None:
    lines = chunk.split("\n")
    if tok.type != "NAME" or not re.fullmatch(r"[A-Za-z]{1,5}", str(tok)) or line - 1 >= len(lines):
        return None
    text = lines[line - 1]
    if not _AFTER_NUMBER.search(text[:col - 1]):
        return None
    if re.match(r"[ \t]*=(?!=)", text[col - 1 + len(str(tok)):]):
        return None       # `amount = 0.5 n = 2`: a missing comma before an argument, not a unit
    by_lower = {u.lower(): u for u in UNITS}
    return by_lower.get(str(tok).lower(), "")


def _construct(words: str) -> str:
    words = words.split("#")[0].strip()
    for key, label in (("pipeline", "the pipeline"), ("budget", "the budget block"),
                       ("property", "the property"), ("for", "the for block")):
        if re.search(rf"\b{key}\b", words):
            name = re.search(rf"\b{key}\s+([A-Za-z_]\w*)", words)
            return f"{label} `{name.group(1)}`" if name and key in ("pipeline", "property") else label
    return "the block"


def diagnose(e: UnexpectedInput, chunk: str, file: str, line_offset: int) -> Diagnostic:
    line = getattr(e, "line", 1) or 1
    col = getattr(e, "column", 1) or 1
    if isinstance(e, (UnexpectedEOF,)) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        open_ = _unclosed(chunk)
        if open_:
            return _missing_closer(open_, file, line_offset)
        line, col = _code_end(chunk)
        span = Span(file, line + line_offset, col, line + line_offset, col + 1)
        return error("KMR105", span, "the declaration ends too early: missing operand or value")
    if isinstance(e, UnexpectedCharacters):
        span = Span(file, line + line_offset, col, line + line_offset, col + 1)
        text_line = chunk.split("\n")[line - 1] if line - 1 < len(chunk.split("\n")) else ""
        ch = text_line[col - 1] if 0 < col <= len(text_line) else ""
        if ch == '"':
            end = len(text_line) + 1
            return error("KMR103", Span(file, span.line, col, span.line, end), "unterminated string",
                         "strings are double-quoted and end on the same line")
        if ch.isdigit() or unicodedata.category(ch) == "Nd":
            value = unicodedata.digit(ch, None)
            reads = f" (it looks like {value})" if value is not None else ""
            return error("KMR106", span, f"non-ASCII digit {ch!r} ({unicodedata.name(ch, 'unnamed')}){reads}",
                         "only the ASCII digits 0-9 make numbers, so text cannot look like one number and mean another",
                         hint="retype the number with the digits 0-9")
        return error("KMR106", span, f"invalid character {ch!r}")
    tok = e.token
    span = Span(file, line + line_offset, col, (tok.end_line or line) + line_offset, tok.end_column or col + 1)
    if tok.type in ("RBRACE", "RPAR", "RSQB"):
        # a closer that matches an outer open bracket means the inner one was never closed
        stack, _ = _open_brackets(chunk, (line, col))
        if stack and _CLOSERS[stack[-1][0]] != str(tok) and any(_CLOSERS[b[0]] == str(tok) for b in stack):
            return _missing_closer(stack[-1], file, line_offset)
    unit = _unknown_unit(tok, chunk, line, col)
    if unit is not None:
        notes = [f"did you mean `{unit}`?"] if unit else []
        return error("KMR107", span, f"unknown unit `{tok}`", *notes,
                     "units: bytes B KB MB GB KiB MiB GiB, time us ms s, ratio %, counts K M G",
                     hint="units are case-sensitive: `16 KB`, `2 ms`, `25%`")
    key = _state_key(e)
    label = _example_states().get(key) or _example_states().get(key[:2] + (None,))
    accepts = set(getattr(e, "accepts", None) or getattr(e, "expected", ()) or ())
    if label is None and tok.type not in ("RBRACE", "RPAR", "RSQB") and {"$END", "KNOB", "PIPELINE"} <= accepts:
        # between declarations (after a complete one): whatever this is, it needs a keyword
        label = ("KMR108", "expected a declaration: import, model, data, knob, meter, rule, pipeline or property")
    expected = sorted(getattr(e, "accepts", None) or getattr(e, "expected", ()))
    note = "expected one of: " + ", ".join(list(dict.fromkeys(_pretty_terminal(t) for t in expected))[:12])
    if tok.type in ("RBRACE", "RPAR", "RSQB") and label is None:
        stack, _ = _open_brackets(chunk, (line, col))
        if not any(_CLOSERS[b[0]] == str(tok) for b in stack):
            return error("KMR104", span, f"unexpected `{tok}`: unbalanced bracket", note,
                         hint=f"remove the `{tok}`; nothing open here needs it")
        # balanced: something required is missing before it (the note says what)
        return error("KMR101", span, f"unexpected `{tok}`: something is missing before it", note)
    if label is None:
        return error("KMR101", span, f"unexpected `{tok}`", note)
    code, message = label
    return error(code, span, f"unexpected `{tok}`: {message}", note)


_TERMINAL_NAMES = {
    "LPAR": "`(`", "_LINE_LPAR": "`(`", "RPAR": "`)`", "LBRACE": "`{`", "RBRACE": "`}`", "LSQB": "`[`", "RSQB": "`]`",
    "COMMA": "`,`", "EQUAL": "`=`", "COLON": "`:`", "DOT": "`.`", "NAME": "a name", "NUMBER": "a number",
    "QUANTITY": "a quantity", "STRING": "a string", "COMPARE": "a comparison", "PLUS": "`+`",
    "MINUS": "`-`", "STAR": "`*`", "SLASH": "`/`",
}


def _pretty_terminal(name: str) -> str:
    if name in _TERMINAL_NAMES:
        return _TERMINAL_NAMES[name]
    try:
        pattern = parser().get_terminal(name).pattern
        if pattern.type == "str":
            return f"`{pattern.value}`"
    except KeyError:
        pass
    return name.lower()
