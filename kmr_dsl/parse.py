"""Parse KMR source text into the surface AST (kmr_dsl.ast). The only module that imports lark.

Contract: `parse(text, file)` never raises on bad input; it returns the program built
from every declaration that parsed and one KMR1xx diagnostic per declaration that did
not. To report several syntax errors in one run, the text is cut into top-level
declarations (a line that starts with a declaration keyword, at brace depth zero or in
column one) and each is parsed on its own, with its line numbers kept. Error messages
are chosen from labelled examples (lark's `match_examples`), plus a bracket scan that
names the construct a missing `}` or `)` should close (pairing a `}` alone on its line
with the `{` indented like it), a check for a word glued to a number (KMR107, unknown
unit), and "expected a declaration" (KMR108) between declarations. A post-lexer
retypes a `(` that starts a line as _LINE_LPAR (see grammar/kmr.lark).
"""

from __future__ import annotations

import re
from functools import lru_cache

import lark
from lark import Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from kmr_dsl import ast
from kmr_dsl.diagnostics import Diagnostic, KmrError, Span, error
from kmr_dsl.resources import grammar_path

DECL_KEYWORDS = ("import", "model", "data", "knob", "meter", "rule", "pipeline", "property")
UNITS = ("KiB", "MiB", "GiB", "KB", "MB", "GB", "B", "us", "ms", "s", "%", "K", "M", "G")


class _LineStartParen:
    """Post-lexer: a `(` first on its line, outside ( ) and [ ], becomes _LINE_LPAR.

    Newlines are whitespace in the grammar, so without this a budget line starting with
    `(` would continue the previous line as a call (`2 ms (size + 1 KB)`). The grammar
    accepts _LINE_LPAR wherever `(` opens something other than a call's arguments.
    """

    always_accept = ()

    def process(self, stream):
        depth = 0
        prev_line = None
        for tok in stream:
            if tok.type == "LPAR" and depth == 0 and prev_line is not None and tok.line > prev_line:
                tok = Token.new_borrow_pos("_LINE_LPAR", tok.value, tok)
            if tok.type in ("LPAR", "_LINE_LPAR", "LSQB"):
                depth += 1
            elif tok.type in ("RPAR", "RSQB"):
                depth = max(0, depth - 1)
            prev_line = tok.end_line
            yield tok


@lru_cache(maxsize=1)
def parser() -> lark.Lark:
    # lark caches the built LALR tables in the temp folder, keyed on the grammar's text
    # and these options: a second `kmr` process skips about 0.2 s of table building.
    return lark.Lark(
        grammar_path().read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        postlex=_LineStartParen(),
        propagate_positions=True,
        maybe_placeholders=True,
        cache=True,
    )


# ---------------------------------------------------------------- tree -> AST

def _unquote(tok: str) -> str:
    """The value of a STRING token: `\\"` is a quote, `\\\\` a backslash, and any other
    backslash stays as written, so a `re:` pattern reads as in Python (`\\.` is `\\.`).
    `ast.quote` is the inverse."""
    body = tok[1:-1]
    return re.sub(r'\\(["\\])', r"\1", body)


def _number(text: str) -> int | float:
    return int(text) if re.fullmatch(r"\d+", text) else float(text)


_QUANTITY = re.compile(r"((?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[ \t]*(\S+)")


def _is_node(x) -> bool:
    return x is not None and not isinstance(x, Token)


class _Builder(Transformer):
    """Builds AST nodes; every method receives lark's meta for the span."""

    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _span(self, meta) -> Span:
        if getattr(meta, "empty", True):
            return Span.unknown(self.file)
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tspan(self, tok: Token) -> Span:
        return Span(self.file, tok.line, tok.column, tok.end_line, tok.end_column)

    # -- top level
    @v_args(meta=True)
    def start(self, meta, ch):
        return list(ch)

    @v_args(meta=True)
    def import_decl(self, meta, ch):
        return ast.ImportDecl(_unquote(ch[0]), self._span(meta))

    @v_args(meta=True)
    def loader_call(self, meta, ch):
        return ast.LoaderCall(str(ch[0]), tuple(a for a in ch[1:] if _is_node(a)), self._span(meta))

    @v_args(meta=True)
    def model_decl(self, meta, ch):
        return ast.ModelDecl(str(ch[0]), ch[1], self._span(meta))

    @v_args(meta=True)
    def data_decl(self, meta, ch):
        return ast.DataDecl(str(ch[0]), ch[1], self._span(meta))

    # -- knobs, types, domains, literals
    @v_args(meta=True)
    def knob_decl(self, meta, ch):
        name, family, typ, step, default = ch
        return ast.KnobDecl(str(name), family, typ, step, default, self._span(meta))

    @v_args(meta=True)
    def family(self, meta, ch):
        return ast.Family(str(ch[0]), ch[1], self._span(meta))

    def scalar_type(self, ch):
        return str(ch[0])

    @v_args(meta=True)
    def ranged_type(self, meta, ch):
        return ast.ScalarType(ch[0], ch[1], self._span(meta))

    @v_args(meta=True)
    def scalar_param_type(self, meta, ch):
        return ast.ScalarType(ch[0], ch[1], self._span(meta))

    @v_args(meta=True)
    def bool_type(self, meta, ch):
        return ast.BoolType(self._span(meta))

    @v_args(meta=True)
    def enum_type(self, meta, ch):
        members, span = ch[0]
        return ast.EnumType(members, span)

    @v_args(meta=True)
    def enum_set(self, meta, ch):
        return tuple(str(t) for t in ch if t is not None), self._span(meta)

    @v_args(meta=True)
    def data_type(self, meta, ch):
        return ast.DataType(self._span(meta))

    @v_args(meta=True)
    def model_type(self, meta, ch):
        return ast.ModelType(self._span(meta))

    @v_args(meta=True)
    def str_type(self, meta, ch):
        return ast.StrType(self._span(meta))

    @v_args(meta=True)
    def list_type(self, meta, ch):
        return ast.ListType(ch[1], self._span(meta))

    def elem_type(self, ch):
        return str(ch[0])

    def step_clause(self, ch):
        return ch[0]

    def default(self, ch):
        return ch[0]

    def lo_bracket(self, ch):
        return str(ch[0])

    def hi_bracket(self, ch):
        return str(ch[0])

    @v_args(meta=True)
    def range_domain(self, meta, ch):
        lo_b, lo, hi, hi_b = ch
        return ast.RangeDomain(lo, hi, lo_b == "[", hi_b == "]", self._span(meta))

    @v_args(meta=True)
    def set_domain(self, meta, ch):
        return ast.SetDomain(tuple(c for c in ch if c is not None), self._span(meta))

    @v_args(meta=True)
    def signed_number(self, meta, ch):
        toks = [c for c in ch if c is not None]
        negative = len(toks) == 2
        tok = toks[-1]
        node = self._numeric(tok, self._span(meta))
        if not negative:
            return node
        if isinstance(node, ast.Quantity):
            return ast.Quantity(-node.value, node.unit, node.span)
        return ast.Number(-node.value, node.span)

    def _numeric(self, tok: Token, span: Span):
        if tok.type == "QUANTITY":
            m = _QUANTITY.fullmatch(str(tok))
            return ast.Quantity(_number(m.group(1)), m.group(2), span)
        return ast.Number(_number(str(tok)), span)

    @v_args(meta=True)
    def name_lit(self, meta, ch):
        return ast.Name(str(ch[0]), self._tspan(ch[0]))

    # -- meters
    @v_args(meta=True)
    def derived_meter(self, meta, ch):
        return ast.DerivedMeter(str(ch[0]), ch[1], self._span(meta))

    @v_args(meta=True)
    def builtin_meter(self, meta, ch):
        name, params, dim, kind, impl = ch
        return ast.BuiltinMeter(str(name), params or (), str(dim), str(kind), _unquote(impl), self._span(meta))

    # -- rules
    def params(self, ch):
        return tuple(p for p in ch if p is not None)

    @v_args(meta=True)
    def param(self, meta, ch):
        return ast.Param(str(ch[0]), ch[1], ch[2], self._span(meta))

    @v_args(meta=True)
    def rule_decl(self, meta, ch):
        return ast.RuleDecl(str(ch[0]), ch[1], tuple(ch[2:]), self._span(meta))

    @v_args(meta=True)
    def accepts_clause(self, meta, ch):
        return ast.AcceptsClause(tuple(str(t) for t in ch), self._span(meta))

    @v_args(meta=True)
    def requires_clause(self, meta, ch):
        return ast.RequiresClause(ch[0], self._span(meta))

    @v_args(meta=True)
    def effect_clause(self, meta, ch):
        return ast.EffectClause(ch[0], ch[1], self._span(meta))

    @v_args(meta=True)
    def impl_clause(self, meta, ch):
        return ast.ImplClause(_unquote(ch[0]), self._span(meta))

    @v_args(meta=True)
    def target(self, meta, ch):
        return ast.Target(str(ch[0]), str(ch[1]), self._span(meta))

    # -- pipelines
    @v_args(meta=True)
    def pipeline_decl(self, meta, ch):
        return ast.PipelineDecl(str(ch[0]), str(ch[1]), tuple(ch[2:]), self._span(meta))

    @v_args(meta=True)
    def step(self, meta, ch):
        args = tuple(a for a in ch[1:-1] if _is_node(a))
        return ast.Step(str(ch[0]), args, ch[-1], self._span(meta))

    @v_args(meta=True)
    def for_block(self, meta, ch):
        return ast.ForBlock(str(ch[0]), ch[1], tuple(ch[2:]), self._span(meta))

    @v_args(meta=True)
    def all_selector(self, meta, ch):
        return ast.AllSelector(self._span(meta))

    @v_args(meta=True)
    def selector_call(self, meta, ch):
        opts = [c for c in ch if c is not None]
        kinds = tuple(k for key, v in opts if key == "kind" for k in v)
        names = [v for key, v in opts if key == "name"]
        exclude = [v for key, v in opts if key == "exclude"]
        return ast.Selector(kinds, names[-1] if names else None, exclude[-1] if exclude else None, self._span(meta))

    def kind_arg(self, ch):
        return ("kind", (str(ch[0]),))

    def kind_list_arg(self, ch):
        return ("kind", tuple(str(t) for t in ch if t is not None))

    def name_arg(self, ch):
        key, patterns = ch
        if str(key) not in ("name", "exclude"):
            raise KmrError(error("KMR104", self._tspan(key), f"unknown selector option `{key}`",
                                 hint='a selector lists layer kinds, then `name = PATTERN` and `exclude = PATTERN`'))
        return (str(key), patterns)

    def pattern(self, ch):
        return tuple(ast.String(_unquote(t), self._tspan(t)) for t in ch if t is not None)

    @v_args(meta=True)
    def list_lit(self, meta, ch):
        return ast.ListLit(tuple(c for c in ch if c is not None), self._span(meta))

    @v_args(meta=True)
    def report_clause(self, meta, ch):
        return ast.ReportClause(tuple(ch), self._span(meta))

    @v_args(meta=True)
    def budget_block(self, meta, ch):
        return ast.BudgetBlock(tuple(ch), self._span(meta))

    def constraint(self, ch):
        return ch[0]

    @v_args(meta=True)
    def objective(self, meta, ch):
        return ast.Objective(str(ch[0]), ch[1], self._span(meta))

    @v_args(meta=True)
    def search_clause(self, meta, ch):
        return ast.SearchClause(str(ch[0]), tuple(a for a in ch[1:] if _is_node(a)), self._span(meta))

    @v_args(meta=True)
    def named_arg(self, meta, ch):
        return ast.Arg(str(ch[0]), ch[1], self._span(meta))

    @v_args(meta=True)
    def positional_arg(self, meta, ch):
        return ast.Arg(None, ch[0], self._span(meta))

    # -- properties
    @v_args(meta=True)
    def property_decl(self, meta, ch):
        name, pipe, forall, *checks = ch
        return ast.PropertyDecl(str(name), str(pipe), forall or (), tuple(checks), self._span(meta))

    def forall(self, ch):
        return tuple(str(t) for t in ch)

    def check(self, ch):
        return ch[0]

    # -- expressions
    @v_args(meta=True)
    def if_expr(self, meta, ch):
        return ast.IfExpr(ch[0], ch[1], ch[2], self._span(meta))

    @v_args(meta=True)
    def or_op(self, meta, ch):
        return ast.Binary("or", ch[0], ch[1], self._span(meta))

    @v_args(meta=True)
    def and_op(self, meta, ch):
        return ast.Binary("and", ch[0], ch[1], self._span(meta))

    @v_args(meta=True)
    def not_op(self, meta, ch):
        return ast.Unary("not", ch[0], self._span(meta))

    @v_args(meta=True)
    def compare(self, meta, ch):
        return ast.Compare(str(ch[1]), ch[0], ch[2], self._span(meta))

    def _bin(op):
        @v_args(meta=True)
        def method(self, meta, ch):
            return ast.Binary(op, ch[0], ch[1], self._span(meta))
        return method

    add, sub, mul, div = _bin("+"), _bin("-"), _bin("*"), _bin("/")

    @v_args(meta=True)
    def neg(self, meta, ch):
        return ast.Unary("-", ch[0], self._span(meta))

    @v_args(meta=True)
    def attribute(self, meta, ch):
        return ast.Attribute(ch[0], str(ch[1]), self._span(meta))

    @v_args(meta=True)
    def call(self, meta, ch):
        return ast.Call(ch[0], tuple(a for a in ch[1:] if _is_node(a)), self._span(meta))

    @v_args(meta=True)
    def index(self, meta, ch):
        return ast.Index(ch[0], ch[1], self._span(meta))

    def number(self, ch):
        return self._numeric(ch[0], self._tspan(ch[0]))

    def quantity(self, ch):
        return self._numeric(ch[0], self._tspan(ch[0]))

    def string(self, ch):
        return ast.String(_unquote(ch[0]), self._tspan(ch[0]))

    def true_lit(self, ch):
        return ast.Bool(True, self._tspan(ch[0]))

    def false_lit(self, ch):
        return ast.Bool(False, self._tspan(ch[0]))

    def name(self, ch):
        return ast.Name(str(ch[0]), self._tspan(ch[0]))

    def baseline_ref(self, ch):
        return ast.BaselineRef(self._tspan(ch[0]))

    def layer_ref(self, ch):
        return ast.LayerRef(self._tspan(ch[0]))

    def model_ref(self, ch):
        return ast.ModelRef(self._tspan(ch[0]))


# ---------------------------------------------------------------- chunking

_DECL_START = re.compile(r"[ \t]*(" + "|".join(DECL_KEYWORDS) + r")(?=[ \t]+[A-Za-z_\"])")


def _scan_line(line: str, depth: int, in_string: bool) -> tuple[int, bool]:
    """Bracket depth after `line`; strings do not span lines, so they reset at its end."""
    i = 0
    while i < len(line):
        c = line[i]
        if in_string:
            if c == "\\":
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "#":
            break
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth = max(0, depth - 1)
        i += 1
    return depth, False


def split_declarations(text: str) -> list[tuple[int, str]]:
    """Cut the text into (first line number, chunk) pieces, one top-level declaration each."""
    lines = text.split("\n")
    chunks: list[tuple[int, list[str]]] = []
    depth = 0
    for number, line in enumerate(lines, start=1):
        m = _DECL_START.match(line)
        starts = m is not None and (depth == 0 or m.start(1) == 0)
        if starts or not chunks:
            chunks.append((number, []))
            depth = 0
        chunks[-1][1].append(line)
        depth, _ = _scan_line(line, depth, False)
    return [(start, "\n".join(body)) for start, body in chunks]


# ---------------------------------------------------------------- errors

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


def comment_start(line: str) -> int:
    """Column of the `#` that starts a comment on `line`, or -1. Strings never span a
    line, so a `#` inside double quotes (with `\\"` escapes) is not a comment."""
    in_string = False
    i = 0
    while i < len(line):
        c = line[i]
        if in_string:
            if c == "\\":
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "#":
            return i
        i += 1
    return -1


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
        line = _strip_comment(raw)
        in_string = False
        i = 0
        while i < len(line):
            if stop is not None and (lineno, i + 1) >= stop:
                return stack, skipped
            c = line[i]
            if in_string:
                if c == "\\":
                    i += 1
                elif c == '"':
                    in_string = False
            elif c == '"':
                in_string = True
            elif c in _CLOSERS:
                stack.append((c, lineno, i + 1, line[:i].strip()))
            elif c in ")]}" and stack and _CLOSERS[stack[-1][0]] == c:
                if c == "}" and not line[:i].strip():
                    level = _indent(line)
                    same = [k for k, b in enumerate(stack) if b[0] == "{" and _indent(lines[b[1] - 1]) == level]
                    if same and same[-1] < len(stack) - 1 and _indent(lines[stack[-1][1] - 1]) > level:
                        skipped.extend(reversed(stack[same[-1] + 1:]))
                        del stack[same[-1] + 1:]
                stack.pop()
            i += 1
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
_AFTER_NUMBER = re.compile(r"(?<![A-Za-z_0-9.])(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?[ \t]*$")


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


def _diagnose(e: UnexpectedInput, chunk: str, file: str, line_offset: int) -> Diagnostic:
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


# ---------------------------------------------------------------- entry point

def parse(text: str, file: str = "<input>") -> tuple[ast.Program, list[Diagnostic]]:
    """Parse a whole file; never raises on malformed input."""
    decls: list = []
    diags: list[Diagnostic] = []
    for start, chunk in split_declarations(text):
        if not chunk.strip() or not re.sub(r"#[^\n]*", "", chunk).strip():
            continue
        try:
            tree = parser().parse(chunk)
            decls.extend(_Builder(file)._shift(tree, start - 1))
        except UnexpectedInput as e:
            diags.append(_diagnose(e, chunk, file, start - 1))
        except VisitError as e:  # a builder bug must still not reach the user as a traceback
            if isinstance(e.orig_exc, KmrError):      # a construct the grammar admits but the AST does not
                diags.append(e.orig_exc.diagnostic)
                continue
            diags.append(error("KMR101", Span(file, start, 1, start, 2), f"could not build the declaration: {e.orig_exc}"))
    lines = text.count("\n") + 1
    program = ast.Program(file, tuple(decls), Span(file, 1, 1, lines, 1))
    return program, diags


def _shift(self, tree, offset: int) -> list:
    if offset:
        for tok in tree.scan_values(lambda v: isinstance(v, Token)):
            tok.line += offset
            tok.end_line += offset
        for sub in tree.iter_subtrees():
            if not sub.meta.empty:
                sub.meta.line += offset
                sub.meta.end_line += offset
    return self.transform(tree)


_Builder._shift = _shift


def parse_expr(text: str, file: str = "<expr>"):
    """Parse one expression (used by `--set` and tests); returns (expr or None, diags)."""
    program, diags = parse(f"meter __expr__ = {text}", file)
    if diags or not program.decls:
        return None, diags
    return program.decls[0].expr, []
