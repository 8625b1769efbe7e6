"""lark's parse tree of one declaration -> the surface AST (kmr_dsl.ast).

Contract: `AstBuilder(file, offset).transform(tree)` returns the declaration's AST nodes,
spans shifted by `offset` lines from the chunk to the whole file; what the grammar
admits but the AST does not is collected in `errors` (the declaration is then dropped),
e.g. a word glued to a number on a budget line (KMR107, unknown unit). The AST is built
without recursion (lark's Transformer_NonRecursive, v_args on the class).
"""

from __future__ import annotations

import re

from lark import Token, Transformer_NonRecursive, v_args

from kmr_dsl import ast
from kmr_dsl.diagnostics import Diagnostic, KmrError, Span, error
from kmr_dsl.parse.lalr import UNITS

def _unquote(tok: str) -> str:
    """The value of a STRING token: `\\"` is a quote, `\\\\` a backslash, and any other
    backslash stays as written, so a `re:` pattern reads as in Python (`\\.` is `\\.`).
    `ast.quote` is the inverse."""
    body = tok[1:-1]
    return re.sub(r'\\(["\\])', r"\1", body)


def _number(text: str) -> int | float:
    return int(text) if re.fullmatch(r"[0-9]+", text) else float(text)


_QUANTITY = re.compile(r"((?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)[ \t]*(\S+)")


def _rightmost(e):
    """The last operand of `e` as written (a chain is walked, not recursed)."""
    while isinstance(e, (ast.Binary, ast.Compare, ast.Unary)):
        e = e.operand if isinstance(e, ast.Unary) else e.right
    return e


def _glued_unit(prev, line) -> Diagnostic | None:
    """`size <= 16 kb` parses as a budget line `size <= 16` and a line `kb`, since
    newlines are whitespace. A bare name on the line where a number ends is a unit
    typo: reported here (KMR107, and the declaration dropped like a syntax error), so
    that no later stage, `kmr fmt` included, takes the two for separate lines."""
    end = _rightmost(prev)
    if (isinstance(line, ast.Name) and isinstance(end, ast.Number)
            and end.span.end_line == line.span.line and re.fullmatch(r"[A-Za-z]{1,5}", line.id)):
        unit = {u.lower(): u for u in UNITS}.get(line.id.lower())
        notes = [f"did you mean `{unit}`?"] if unit else []
        return error("KMR107", line.span, f"unknown unit `{line.id}`", *notes,
                     "units: bytes B KB MB GB KiB MiB GiB, time us ms s, ratio %, counts K M G",
                     hint="units are case-sensitive: `16 KB`, `2 ms`, `25%`")
    return None


def _nodes(children) -> tuple:
    """The AST nodes among `children` (placeholders and punctuation tokens dropped)."""
    return tuple(x for x in children if x is not None and not isinstance(x, Token))


@v_args(meta=True)
class AstBuilder(Transformer_NonRecursive):
    """Builds AST nodes from lark's tree without recursion (so nesting depth costs no
    Python stack here). Every method gets lark's meta, for the span, and the children;
    `offset` shifts line numbers from the declaration's chunk to the whole file."""

    def __init__(self, file: str, offset: int = 0):
        super().__init__()
        self.file = file
        self.offset = offset
        self.errors: list[Diagnostic] = []     # reported while building; the chunk is then dropped

    def _span(self, meta) -> Span:
        if getattr(meta, "empty", True):
            return Span.unknown(self.file)
        return Span(self.file, meta.line + self.offset, meta.column, meta.end_line + self.offset, meta.end_column)

    def _tspan(self, tok: Token) -> Span:
        return Span(self.file, tok.line + self.offset, tok.column, tok.end_line + self.offset, tok.end_column)

    # -- top level
    def start(self, meta, ch):
        return list(ch)

    def import_decl(self, meta, ch):
        return ast.ImportDecl(_unquote(ch[0]), self._span(meta))

    def loader_call(self, meta, ch):
        return ast.LoaderCall(str(ch[0]), _nodes(ch[1:]), self._span(meta))

    def model_decl(self, meta, ch):
        return ast.ModelDecl(str(ch[0]), ch[1], self._span(meta))

    def data_decl(self, meta, ch):
        return ast.DataDecl(str(ch[0]), ch[1], self._span(meta))

    # -- knobs, types, domains, literals
    def knob_decl(self, meta, ch):
        name, family, typ, step, default = ch
        return ast.KnobDecl(str(name), family, typ, step, default, self._span(meta))

    def family(self, meta, ch):
        return ast.Family(str(ch[0]), ch[1], self._span(meta))

    def ranged_type(self, meta, ch):
        return ast.ScalarType(ch[0], ch[1], self._span(meta))

    scalar_param_type = ranged_type

    def bool_type(self, meta, ch):
        return ast.BoolType(self._span(meta))

    def enum_type(self, meta, ch):
        members, span = ch[0]
        return ast.EnumType(members, span)

    def enum_set(self, meta, ch):
        return tuple(str(t) for t in ch if t is not None), self._span(meta)

    def data_type(self, meta, ch):
        return ast.DataType(self._span(meta))

    def model_type(self, meta, ch):
        return ast.ModelType(self._span(meta))

    def str_type(self, meta, ch):
        return ast.StrType(self._span(meta))

    def list_type(self, meta, ch):
        return ast.ListType(ch[1], self._span(meta))

    def _first(self, meta, ch):
        return ch[0]

    step_clause = default = constraint = check = _first

    def _first_text(self, meta, ch):
        return str(ch[0])

    scalar_type = elem_type = lo_bracket = hi_bracket = _first_text

    def range_domain(self, meta, ch):
        lo_b, lo, hi, hi_b = ch
        return ast.RangeDomain(lo, hi, lo_b == "[", hi_b == "]", self._span(meta))

    def set_domain(self, meta, ch):
        return ast.SetDomain(tuple(c for c in ch if c is not None), self._span(meta))

    def signed_number(self, meta, ch):
        toks = [c for c in ch if c is not None]
        node = self._numeric(toks[-1], self._span(meta))
        if len(toks) == 1:
            return node
        if isinstance(node, ast.Quantity):
            return ast.Quantity(-node.value, node.unit, node.span)
        return ast.Number(-node.value, node.span)

    def _numeric(self, tok: Token, span: Span):
        if tok.type == "QUANTITY":
            m = _QUANTITY.fullmatch(str(tok))
            return ast.Quantity(_number(m.group(1)), m.group(2), span)
        return ast.Number(_number(str(tok)), span)

    def name_lit(self, meta, ch):
        return ast.Name(str(ch[0]), self._tspan(ch[0]))

    # -- meters
    def derived_meter(self, meta, ch):
        return ast.DerivedMeter(str(ch[0]), ch[1], self._span(meta))

    def builtin_meter(self, meta, ch):
        name, params, dim, kind, impl = ch
        return ast.BuiltinMeter(str(name), params or (), str(dim), str(kind), _unquote(impl), self._span(meta))

    # -- rules
    def params(self, meta, ch):
        return tuple(p for p in ch if p is not None)

    def param(self, meta, ch):
        return ast.Param(str(ch[0]), ch[1], ch[2], self._span(meta))

    def rule_decl(self, meta, ch):
        return ast.RuleDecl(str(ch[0]), ch[1], tuple(ch[2:]), self._span(meta))

    def accepts_clause(self, meta, ch):
        return ast.AcceptsClause(tuple(str(t) for t in ch), self._span(meta))

    def requires_clause(self, meta, ch):
        return ast.RequiresClause(ch[0], self._span(meta))

    def effect_clause(self, meta, ch):
        return ast.EffectClause(ch[0], ch[1], self._span(meta))

    def impl_clause(self, meta, ch):
        return ast.ImplClause(_unquote(ch[0]), self._span(meta))

    def target(self, meta, ch):
        return ast.Target(str(ch[0]), str(ch[1]), self._span(meta))

    # -- pipelines
    def pipeline_decl(self, meta, ch):
        return ast.PipelineDecl(str(ch[0]), str(ch[1]), tuple(ch[2:]), self._span(meta))

    def step(self, meta, ch):
        return ast.Step(str(ch[0]), _nodes(ch[1:-1]), ch[-1], self._span(meta))

    def for_block(self, meta, ch):
        return ast.ForBlock(str(ch[0]), ch[1], tuple(ch[2:]), self._span(meta))

    def all_selector(self, meta, ch):
        return ast.AllSelector(self._span(meta))

    def selector_call(self, meta, ch):
        opts = [c for c in ch if c is not None]
        kinds = tuple(k for key, v in opts if key == "kind" for k in v)
        names = [v for key, v in opts if key == "name"]
        exclude = [v for key, v in opts if key == "exclude"]
        return ast.Selector(kinds, names[-1] if names else None, exclude[-1] if exclude else None, self._span(meta))

    def kind_arg(self, meta, ch):
        return ("kind", (str(ch[0]),))

    def kind_list_arg(self, meta, ch):
        return ("kind", tuple(str(t) for t in ch if t is not None))

    def name_arg(self, meta, ch):
        key, patterns = ch
        if str(key) not in ("name", "exclude"):
            raise KmrError(error("KMR104", self._tspan(key), f"unknown selector option `{key}`",
                                 hint='a selector lists layer kinds, then `name = PATTERN` and `exclude = PATTERN`'))
        return (str(key), patterns)

    def pattern(self, meta, ch):
        return tuple(ast.String(_unquote(t), self._tspan(t)) for t in ch if t is not None)

    def list_lit(self, meta, ch):
        return ast.ListLit(tuple(c for c in ch if c is not None), self._span(meta))

    def report_clause(self, meta, ch):
        return ast.ReportClause(tuple(ch), self._span(meta))

    def budget_block(self, meta, ch):
        self.errors += filter(None, (_glued_unit(prev, line) for prev, line in zip(ch, ch[1:])))
        return ast.BudgetBlock(tuple(ch), self._span(meta))

    def objective(self, meta, ch):
        return ast.Objective(str(ch[0]), ch[1], self._span(meta))

    def search_clause(self, meta, ch):
        return ast.SearchClause(str(ch[0]), _nodes(ch[1:]), self._span(meta))

    def named_arg(self, meta, ch):
        return ast.Arg(str(ch[0]), ch[1], self._span(meta))

    def positional_arg(self, meta, ch):
        return ast.Arg(None, ch[0], self._span(meta))

    # -- properties
    def property_decl(self, meta, ch):
        name, pipe, forall, *checks = ch
        return ast.PropertyDecl(str(name), str(pipe), forall or (), tuple(checks), self._span(meta))

    def forall(self, meta, ch):
        return tuple(str(t) for t in ch)

    # -- expressions
    def if_expr(self, meta, ch):
        return ast.IfExpr(ch[0], ch[1], ch[2], self._span(meta))

    def compare(self, meta, ch):
        return ast.Compare(str(ch[1]), ch[0], ch[2], self._span(meta))

    def _binary(op):
        def method(self, meta, ch):
            return ast.Binary(op, ch[0], ch[1], self._span(meta))
        return method

    or_op, and_op = _binary("or"), _binary("and")
    add, sub, mul, div = _binary("+"), _binary("-"), _binary("*"), _binary("/")

    def _unary(op):
        def method(self, meta, ch):
            return ast.Unary(op, ch[0], self._span(meta))
        return method

    not_op, neg = _unary("not"), _unary("-")

    def attribute(self, meta, ch):
        return ast.Attribute(ch[0], str(ch[1]), self._span(meta))

    def call(self, meta, ch):
        return ast.Call(ch[0], _nodes(ch[1:]), self._span(meta))

    def index(self, meta, ch):
        return ast.Index(ch[0], ch[1], self._span(meta))

    # -- atoms: spans come from the token
    def number(self, meta, ch):
        return self._numeric(ch[0], self._tspan(ch[0]))

    quantity = number

    def string(self, meta, ch):
        return ast.String(_unquote(ch[0]), self._tspan(ch[0]))

    def true_lit(self, meta, ch):
        return ast.Bool(True, self._tspan(ch[0]))

    def false_lit(self, meta, ch):
        return ast.Bool(False, self._tspan(ch[0]))

    def name(self, meta, ch):
        return ast.Name(str(ch[0]), self._tspan(ch[0]))

    def baseline_ref(self, meta, ch):
        return ast.BaselineRef(self._tspan(ch[0]))

    def layer_ref(self, meta, ch):
        return ast.LayerRef(self._tspan(ch[0]))

    def model_ref(self, meta, ch):
        return ast.ModelRef(self._tspan(ch[0]))

    del _binary, _unary
