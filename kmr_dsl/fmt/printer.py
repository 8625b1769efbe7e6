"""Print a surface AST (kmr_dsl.ast) as canonical KMR text, line by line.

Contract: `layout(program)` returns `Line`s whose texts, joined with newlines, re-parse
to an equal AST (spans aside) and are a fixed point: formatting the re-parsed program
gives the same lines. Every line carries an *anchor*, the source line of the node it
starts (or, for a closing `}`, the line its block ends on); `kmr_dsl.fmt.comments` uses
the anchors to put comments back. Nothing here reads the source text.

Canonical style: 4-space indent; one statement per line; imports, model/data
declarations, knobs and meters each grouped without blank lines, every other
declaration set off by a blank line; minimal parentheses by operator precedence;
numbers printed so that they parse back to the same value and type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kmr_dsl import ast

INDENT = 4
WIDTH = 88          # a rule header or an if-chain longer than this is broken up

# Binding strength of each expression form, loosest first (grammar/kmr.lark).
IF, OR, AND, NOT, CMP, SUM, PRODUCT, UNARY, POSTFIX, ATOM = range(10)
_BINARY = {"or": OR, "and": AND, "+": SUM, "-": SUM, "*": PRODUCT, "/": PRODUCT}


@dataclass(slots=True)
class Line:
    text: str            # the line without its indentation
    indent: int          # columns of indentation
    anchor: int          # source line of the node this line starts (0: unknown)
    inner: int           # indentation for comments placed just before this line
    blank: bool = False  # the layout asks for a blank line before this one
    opener: bool = False  # ends with `{`: no blank line directly after it

    def render(self) -> str:
        return " " * self.indent + self.text


# ---------------------------------------------------------------- atoms

def number(value: int | float) -> str:
    """A numeral that parses back to `value` (ints stay ints, floats stay floats)."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):               # `1e999` is how a source spells infinity
        return "-1e999" if value < 0 else "1e999"
    return repr(value)


def quantity(value: int | float, unit: str) -> str:
    return f"{number(value)}%" if unit == "%" else f"{number(value)} {unit}"


def string(value: str) -> str:
    return ast.quote(value)


# ---------------------------------------------------------------- expressions

def expr(e: ast.Expr, need: int = IF) -> str:
    """`e` as text, parenthesised when it binds more loosely than `need`."""
    text, level = _expr(e)
    return f"({text})" if level < need else text


def _expr(e) -> tuple[str, int]:
    match e:
        case ast.Number(value=v):
            return number(v), ATOM if v >= 0 else UNARY
        case ast.Quantity(value=v, unit=u):
            return quantity(v, u), ATOM if v >= 0 else UNARY
        case ast.String(value=v):
            return string(v), ATOM
        case ast.Bool(value=v):
            return ("true" if v else "false"), ATOM
        case ast.Name(id=name):
            return name, ATOM
        case ast.BaselineRef():
            return "baseline", ATOM
        case ast.LayerRef():
            return "layer", ATOM
        case ast.ModelRef():
            return "model", ATOM
        case ast.Attribute(obj=obj, name=name):
            # `3.x` would lex as the number `3.` then `x`: a numeric object needs parens.
            need = ATOM + 1 if isinstance(obj, (ast.Number, ast.Quantity)) else POSTFIX
            return f"{expr(obj, need)}.{name}", POSTFIX
        case ast.Call(func=func, args=args):
            return f"{expr(func, POSTFIX)}({arguments(args)})", POSTFIX
        case ast.Index(obj=obj, index=index):
            return f"{expr(obj, POSTFIX)}[{expr(index)}]", POSTFIX
        case ast.Unary(op="not", operand=operand):
            return f"not {expr(operand, NOT)}", NOT
        case ast.Unary(op=op, operand=operand):
            return f"{op}{expr(operand, UNARY)}", UNARY
        case ast.Binary(op=op, left=left, right=right):
            level = _BINARY[op]     # left-associative: the right operand binds tighter
            return f"{expr(left, level)} {op} {expr(right, level + 1)}", level
        case ast.Compare(op=op, left=left, right=right):
            return f"{expr(left, SUM)} {op} {expr(right, SUM)}", CMP
        case ast.IfExpr(cond=cond, then=then, orelse=orelse):
            return f"if {expr(cond)} then {expr(then)} else {expr(orelse)}", IF
        case ast.ListLit(items=items):
            return "[" + ", ".join(expr(i) for i in items) + "]", ATOM
    raise TypeError(f"not an expression node: {type(e).__name__}")


def arguments(args) -> str:
    return ", ".join(expr(a.value) if a.name is None else f"{a.name} = {expr(a.value)}" for a in args)


literal = expr     # literals (domain bounds, steps, defaults) print like expressions


# ---------------------------------------------------------------- types, selectors

def domain(d: ast.Domain) -> str:
    if isinstance(d, ast.RangeDomain):
        lo, hi = "[" if d.lo_closed else "(", "]" if d.hi_closed else ")"
        return f"{lo}{literal(d.lo)}, {literal(d.hi)}{hi}"
    return "{" + ", ".join(literal(v) for v in d.values) + "}"


def type_(t: ast.Type) -> str:
    match t:
        case ast.ScalarType(kind=kind, domain=None):
            return kind
        case ast.ScalarType(kind=kind, domain=d):
            return f"{kind} in {domain(d)}"
        case ast.BoolType():
            return "bool"
        case ast.EnumType(members=members):
            return "{" + ", ".join(members) + "}"
        case ast.DataType():
            return "data"
        case ast.ModelType():
            return "model"
        case ast.StrType():
            return "str"
        case ast.ListType(elem=elem):
            return f"list[{elem}]"
    raise TypeError(f"not a type node: {type(t).__name__}")


def selector(s) -> str:
    if isinstance(s, ast.AllSelector):
        return "all"
    parts = list(s.kinds)
    for key, patterns in (("name", s.names), ("exclude", s.exclude)):
        if patterns is not None:
            shown = ", ".join(string(p.value) for p in patterns)
            parts.append(f"{key} = {shown if len(patterns) == 1 else '[' + shown + ']'}")
    return f"layers({', '.join(parts)})"


def param(p: ast.Param) -> str:
    text = f"{p.name} : {type_(p.type)}"
    return text if p.default is None else f"{text} = {literal(p.default)}"


# ---------------------------------------------------------------- statements

def _line(node) -> int:
    return node.span.line if node.span is not None else 0


def statement(prefix: str, e: ast.Expr, indent: int, anchor: int) -> list[Line]:
    """`prefix EXPR` on one line; an if-chain that would pass WIDTH breaks before each
    `else`, aligned under its `if` (newlines are whitespace, so this re-parses)."""
    one = prefix + expr(e)
    if indent + len(one) <= WIDTH or not isinstance(e, ast.IfExpr):
        return [Line(one, indent, anchor, indent)]
    col = indent + len(prefix)
    lines = [Line(f"{prefix}if {expr(e.cond)} then {expr(e.then)}", indent, anchor, indent)]
    rest = e.orelse
    while isinstance(rest, ast.IfExpr):
        lines.append(Line(f"else if {expr(rest.cond)} then {expr(rest.then)}", col, _line(rest), col))
        rest = rest.orelse
    lines.append(Line(f"else {expr(rest)}", col, _line(rest), col))
    return lines


def _block(header: str, node, body: list[Line], indent: int) -> list[Line]:
    """`header {`, the body, then `}` anchored at the line the block ends on."""
    end = node.span.end_line if node.span is not None else 0
    return ([Line(header + " {", indent, _line(node), indent, opener=True)] + body
            + [Line("}", indent, end, indent + INDENT)])


def _step(s: ast.Step, indent: int) -> Line:
    text = f"{s.rule}({arguments(s.args)})"
    if s.selector is not None:
        text += f" on {selector(s.selector)}"
    return Line(text, indent, _line(s), indent)


def _pipeline_item(item, indent: int) -> list[Line]:
    inner = indent + INDENT
    match item:
        case ast.Step():
            return [_step(item, indent)]
        case ast.ForBlock(var=var, selector=sel, steps=steps):
            return _block(f"for {var} in {selector(sel)}", item, [_step(s, inner) for s in steps], indent)
        case ast.BudgetBlock(constraints=constraints):
            body = [line for c in constraints for line in statement("", c, inner, _line(c))]
            return _block("budget", item, body, indent)
        case ast.Objective(direction=direction, expr=e):
            return statement(f"objective {direction} ", e, indent, _line(item))
        case ast.SearchClause(strategy=strategy, args=args):
            return [Line(f"search {strategy}({arguments(args)})", indent, _line(item), indent)]
        case ast.ReportClause(meters=meters):
            return [Line("report " + ", ".join(expr(m) for m in meters), indent, _line(item), indent)]
    raise TypeError(f"not a pipeline item: {type(item).__name__}")


def _clause(c, indent: int) -> list[Line]:
    match c:
        case ast.AcceptsClause(kinds=kinds):
            return [Line("accepts " + ", ".join(kinds), indent, _line(c), indent)]
        case ast.RequiresClause(expr=e):
            return statement("requires ", e, indent, _line(c))
        case ast.EffectClause(target=t, expr=e):
            return statement(f"effect {t.scope}.{t.field} = ", e, indent, _line(c))
        case ast.ImplClause(path=path):
            return [Line(f"impl {string(path)}", indent, _line(c), indent)]
    raise TypeError(f"not a rule clause: {type(c).__name__}")


def _rule(d: ast.RuleDecl) -> list[Line]:
    head = f"rule {d.name}("
    one = head + ", ".join(param(p) for p in d.params) + ")"
    if len(one) <= WIDTH or len(d.params) < 2:
        lines = [Line(one, 0, _line(d), 0)]
    else:  # one parameter per line, aligned after the opening parenthesis
        col, last = len(head), len(d.params) - 1
        lines = [Line(head + param(d.params[0]) + ",", 0, _line(d), 0)]
        lines += [Line(param(p) + (")" if i == last else ","), col, _line(p), col)
                  for i, p in enumerate(d.params[1:], start=1)]
    return lines + [line for c in d.clauses for line in _clause(c, INDENT)]


def _property(d: ast.PropertyDecl, forall_line: int | None) -> list[Line]:
    body = []
    if d.forall:
        anchor = forall_line if forall_line is not None else _line(d)
        body.append(Line("forall " + ", ".join(d.forall), INDENT, anchor, INDENT))
    body += [line for c in d.checks for line in statement("check ", c, INDENT, _line(c))]
    return _block(f"property {d.name}({d.pipeline})", d, body, 0)


def declaration(d: ast.Decl, forall_line: int | None = None) -> list[Line]:
    match d:
        case ast.ImportDecl(path=path):
            return [Line(f"import {string(path)}", 0, _line(d), 0)]
        case ast.ModelDecl(name=name, loader=loader) | ast.DataDecl(name=name, loader=loader):
            kw = "model" if isinstance(d, ast.ModelDecl) else "data"
            return [Line(f"{kw} {name} = {loader.name}({arguments(loader.args)})", 0, _line(d), 0)]
        case ast.KnobDecl():
            text = f"knob {d.name}"
            if d.family is not None:
                text += f"[{d.family.var} in {selector(d.family.selector)}]"
            text += f" : {type_(d.type)}"
            if d.step is not None:
                text += f" step {literal(d.step)}"
            if d.default is not None:
                text += f" = {literal(d.default)}"
            return [Line(text, 0, _line(d), 0)]
        case ast.DerivedMeter(name=name, expr=e):
            return statement(f"meter {name} = ", e, 0, _line(d))
        case ast.BuiltinMeter():
            params = f"({', '.join(param(p) for p in d.params)})" if d.params else ""
            return [Line(f"meter {d.name}{params} : {d.dimension} {d.kind} impl {string(d.impl)}",
                         0, _line(d), 0)]
        case ast.RuleDecl():
            return _rule(d)
        case ast.PipelineDecl(name=name, model=model, items=items):
            body: list[Line] = []
            for i, item in enumerate(items):
                lines = _pipeline_item(item, INDENT)
                # the budget is set off from the steps before it, as in the spec's example
                lines[0].blank = i > 0 and isinstance(item, ast.BudgetBlock)
                body += lines
            return _block(f"pipeline {name}({model})", d, body, 0)
        case ast.PropertyDecl():
            return _property(d, forall_line)
    raise TypeError(f"not a declaration: {type(d).__name__}")


def _group(d: ast.Decl) -> str | None:
    """Consecutive declarations of one group share a block (no blank line between)."""
    match d:
        case ast.ImportDecl():
            return "import"
        case ast.ModelDecl() | ast.DataDecl():
            return "source"
        case ast.KnobDecl():
            return "knob"
        case ast.DerivedMeter() | ast.BuiltinMeter():
            return "meter"
    return None


def layout(program: ast.Program, forall_lines: dict[int, int] | None = None) -> list[Line]:
    """The canonical lines of `program`. `forall_lines` maps a property's index in
    `program.decls` to the source line of its `forall` (the AST keeps no span for it)."""
    lines: list[Line] = []
    previous = None
    for i, d in enumerate(program.decls):
        block = declaration(d, (forall_lines or {}).get(i))
        group = _group(d)
        block[0].blank = bool(lines) and (group is None or group != previous)
        previous = group
        lines += block
    return lines


def render(lines: list[Line]) -> str:
    out: list[str] = []
    for line in lines:
        if line.blank and out:
            out.append("")
        out.append(line.render())
    return "\n".join(out) + "\n" if out else ""
