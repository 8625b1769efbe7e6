"""Budget lines as sympy conditions `g op 0` over knob symbols.

Contract: `budget_lines(model)` turns every analytic budget line of the pipeline into a
`Line` whose `expr` g satisfies "the line holds iff g op 0", with op one of `<=`, `<`,
`==`, `!=` (`a >= b` becomes `b - a <= 0`). Analytic meters are replaced by their cost
model on the final state; `baseline.METER` by the cost model on the initial state,
which is a constant. Lines that read an empirical meter are returned separately: they
are checked when the pipeline runs (KMR313). An analytic line the cost models cannot
express (a meter without a cost model) is kept with `problem` set; it makes
feasibility UNKNOWN rather than being skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import sympy as sp

from kmr_dsl.core.program import Constraint, MeterRef
from kmr_dsl.verify import algebra as A
from kmr_dsl.core.state import ANALYTIC_METERS
from kmr_dsl.verify.cost import meter_expr
from kmr_dsl.verify.render import render_constraint
from kmr_dsl.verify.state import Ctx, PipelineModel, eval_ir

_FLIP = {">=": "<=", ">": "<"}


@dataclass(frozen=True)
class Line:
    index: int                  # position in the pipeline's budget block
    constraint: Constraint
    text: str                   # KMR text of the line
    op: str                     # <=, <, ==, !=
    expr: object                # g
    left: object                # the two sides, for messages ("at best, size = ...")
    right: object
    problem: str | None = None  # why the line could not be modelled
    undefined: bool = False     # a divisor can be 0 (KMR305 already says so)

    @property
    def span(self):
        return self.constraint.span


def holds(op: str, g) -> bool:
    """Whether `g op 0` (exact values)."""
    return {"<=": g <= 0, "<": g < 0, "==": g == 0, "!=": g != 0}[op]


def holds_float(op: str, g: float, tol: float) -> bool:
    """`g op 0` on a float, giving ties within `tol` the benefit of the doubt."""
    return {"<=": g <= tol, "<": g < tol, "==": abs(g) <= tol, "!=": True}[op]


def _meter(model: PipelineModel):
    def value(ref: MeterRef):
        if not ref.analytic:
            raise A.NotModelled(f"`{ref.name}` is measured at run time")
        if ref.name not in ANALYTIC_METERS or ref.args:
            raise A.NotModelled(f"analytic meter `{ref.name}` has no cost model in the verifier")
        return meter_expr(model, ref.name, model.initial if ref.baseline else model.final)
    return value


def budget_lines(model: PipelineModel) -> tuple[list[Line], list[Constraint]]:
    """(analytic lines, lines checked at run time), in budget order."""
    sources = model.program.sources
    lines, runtime = [], []
    ctx = Ctx(model.knobs, meter=_meter(model))
    for i, c in enumerate(model.pipeline.budget):
        if not c.analytic:
            runtime.append(c)
            continue
        text = render_constraint(c, sources)
        try:
            left, right = eval_ir(c.left, ctx), eval_ir(c.right, ctx)
            # isinstance, not hasattr(.., "free_symbols"): that property walks the whole
            # expression (a 1000-layer meter: ~0.1 s per side)
            if A.is_boolean(left) or A.is_boolean(right) or not isinstance(left, sp.Basic) \
                    or not isinstance(right, sp.Basic):
                raise A.NotModelled("a budget line must compare two numbers")
            op = _FLIP.get(c.op, c.op)
            g = flatten(A.sub(right, left) if c.op in _FLIP else A.sub(left, right))
            lines.append(Line(i, c, text, op, g, left, right))
        except A.NotModelled as exc:
            lines.append(Line(i, c, text, _FLIP.get(c.op, c.op), None, None, None, str(exc)))
    return lines, runtime


def flatten(e):
    """`e` with constant factors distributed over sums: `-(a + b)` becomes `-a - b`.

    Why: the bounds and the knapsack split a line into per-layer terms; a `>=` line (or a
    weighted sum of lines) negates or scales a whole sum, and left as one `Mul(c, Add)`
    that sum would be one term holding every knob of every layer.
    """
    t = type(e)
    if t is sp.Add:
        return A.add(*(flatten(x) for x in e.args))
    if t is sp.Mul:
        consts = [x for x in e.args if isinstance(x, sp.Rational)]
        rest = [x for x in e.args if not isinstance(x, sp.Rational)]
        if len(rest) == 1 and type(rest[0]) is sp.Add:
            c = A.mul(*consts) if consts else 1
            return A.add(*(flatten(A.mul(c, x)) for x in rest[0].args))
    return e


def scaled(c, e):
    """c * e, distributed over e's terms (see `flatten`)."""
    return flatten(A.mul(c, e))


def line_value(line: Line, env: dict) -> Fraction:
    from kmr_dsl.verify.numeric import evaluate
    return evaluate(line.expr, env)


__all__ = ["Line", "budget_lines", "flatten", "scaled", "holds", "holds_float", "line_value"]
