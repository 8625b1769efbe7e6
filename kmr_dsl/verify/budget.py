"""Budget lines as sympy conditions `g op 0` over knob symbols.

Contract: `budget_lines(model)` turns every analytic budget line of the pipeline into a
`Line` whose `expr` g satisfies "the line holds iff g op 0", with op one of `<=`, `<`,
`==`, `!=` (`a >= b` becomes `b - a <= 0`). Analytic meters are replaced by their cost
model on the final state; `baseline.METER` by the cost model on the initial state,
which is a constant. Lines that read an empirical meter are returned separately: they
are checked when the pipeline runs (KMR313). An analytic line the cost models cannot
express (a meter without a cost model) is kept with `problem` set; it makes
feasibility UNKNOWN rather than being skipped.

`size` is modelled as a range [`size_low`, `size`] (verify/cost.py: the header's
offsets, padding and layer configs are bounded, not predicted), and so are the counts
where a layer's density or rank is known only from above (after `lowrank`,
verify/lowend.py); everything below says `size` for any of them. A line reads the end
that is worst for it: `expr` holds only if the line holds for every size in the
range (`size >= X` reads the lower end; `size <= k * baseline.size` the upper end of
the result and the lower end of the baseline), so a witness that meets `expr` meets
the line when run. `optimistic` reads the other ends: where it cannot be met, no run
can meet the line, so only it may refute (verify/feasibility.py). A line in which
`size`'s direction is not fixed (`==`, `!=`, a sign that depends on a knob) cannot be
read either way: `problem` is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import sympy as sp

from kmr_dsl.core.program import Constraint, MeterRef
from kmr_dsl.verify import algebra as A
from kmr_dsl.core.state import ANALYTIC_METERS
from kmr_dsl.verify.cost import LOW_ENDS, meter_expr
from kmr_dsl.verify.render import render_constraint
from kmr_dsl.verify.state import PipelineModel
from kmr_dsl.verify.sympy_eval import Ctx, eval_ir

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
    # the same line at the other ends of `size`'s range (None: no `size` in it): some
    # size in the range meets the line iff its `expr op 0`; only it may refute the line
    optimistic: "Line | None" = None

    @property
    def span(self):
        return self.constraint.span


def holds(op: str, g) -> bool:
    """Whether `g op 0` (exact values)."""
    return {"<=": g <= 0, "<": g < 0, "==": g == 0, "!=": g != 0}[op]


def holds_float(op: str, g: float, tol: float) -> bool:
    """`g op 0` on a float, giving ties within `tol` the benefit of the doubt."""
    return {"<=": g <= tol, "<": g < tol, "==": abs(g) <= tol, "!=": True}[op]


def _meter(model: PipelineModel, ends: dict | None = None):
    """The meters' cost models; `ends` maps a `size` reference ((name, baseline)) to
    "low" or "high" (the upper end when absent), or to a placeholder symbol."""
    def value(ref: MeterRef):
        if not ref.analytic:
            raise A.NotModelled(f"`{ref.name}` is measured at run time")
        if ref.name not in ANALYTIC_METERS or ref.args:
            raise A.NotModelled(f"analytic meter `{ref.name}` has no cost model in the verifier")
        end = (ends or {}).get((ref.name, ref.baseline), "high")
        if not isinstance(end, str):
            return end
        name = LOW_ENDS[ref.name] if end == "low" else ref.name
        return meter_expr(model, name, model.initial if ref.baseline else model.final)
    return value


def _sign(d, knobs):
    """+1 / -1 where `d` is >= 0 / <= 0 at every knob setting (and not always 0), 0 where
    it is 0, None where that is not evident: a knob whose domain is on one side of 0 is
    a symbol of that sign; a Piecewise counts when every branch agrees."""
    if d == 0:
        return 0
    if isinstance(d, sp.Piecewise):
        signs = {_sign(branch, knobs) for branch, _ in d.args}
        return signs.pop() if len(signs) == 1 and None not in signs else None
    signed = {}
    for sym in d.free_symbols:
        kv = knobs.by_symbol.get(sym)
        lo = kv.lo if kv is not None and kv.lo is not None else (min(kv.values) if kv is not None and kv.values
                                                                  and kv.numeric else None)
        hi = kv.hi if kv is not None and kv.hi is not None else (max(kv.values) if kv is not None and kv.values
                                                                  and kv.numeric else None)
        if lo is not None and lo >= 0:
            signed[sym] = sp.Dummy(positive=True) if lo > 0 else sp.Dummy(nonnegative=True)
        elif hi is not None and hi <= 0:
            signed[sym] = -(sp.Dummy(positive=True) if hi < 0 else sp.Dummy(nonnegative=True))
    d = d.xreplace(signed) if signed else d
    if d.is_nonnegative:
        return 1
    if d.is_nonpositive:
        return -1
    return None


def is_ranged(model: PipelineModel, m: MeterRef) -> bool:
    """Whether reference `m` is to a range: `size` always; `nonzero` where a layer of the
    state it reads has a density or rank known only as a range, the other counts where a
    rank is (verify/lowend.py)."""
    if m.name not in LOW_ENDS or not m.analytic or m.args:
        return False
    if m.name == "size":
        return True
    low = (model.initial if m.baseline else model.final).low
    return any(m.name == "nonzero" or "rank" in fields for fields in low.values())


def _why(meter: str) -> str:
    if meter == "size":
        return "`size` is modelled as a range (the header is bounded, not predicted)"
    return (f"`{meter}` is modelled as a range here (`lowrank` computes new weights, some of which may be "
            "exactly 0, and with `energy < 1` keeps a rank the check does not know)")


def _size_ends(model: PipelineModel, c: Constraint, ctx: Ctx):
    """(worst corners, best corners) of the ranged meters' references in line `c` (`size`,
    and `nonzero` where it is a range), each a list of {reference: end} (None: none in
    it). Each reference is a positive placeholder; the sign of the line's g in it says
    which end of the range is worst for the line. Where no sign is evident, g is affine
    in the reference at any one setting, so the worst is the larger of its two ends: both
    are listed."""
    refs = {(m.name, m.baseline): sp.Symbol(f"kmr_{m.name}_{'base' if m.baseline else 'now'}", positive=True)
            for m in meter_refs(c) if is_ranged(model, m)}
    if not refs:
        return None
    probe = Ctx(ctx.knobs, meter=_meter(model, refs))
    left, right = eval_ir(c.left, probe), eval_ir(c.right, probe)
    g = A.sub(right, left) if c.op in _FLIP else A.sub(left, right)
    placeholders = set(refs.values())
    if hasattr(g, "atoms") and any(cond.free_symbols & placeholders
                                   for pw in g.atoms(sp.Piecewise) for _, cond in pw.args):
        # a condition on `size` (`if size > X then ...`) can make g jump: no end is surely worst
        meter = next(k[0] for k, sym in refs.items() if any(sym in cond.free_symbols for pw in g.atoms(sp.Piecewise)
                                                            for _, cond in pw.args))
        raise A.NotModelled(f"{_why(meter)}: a condition on it cannot be decided at either end; compare "
                            f"`{meter}` with `<=` or `>=` instead")
    worst, best = [{}], [{}]
    for key, sym in refs.items():
        d = sp.diff(g, sym) if hasattr(g, "free_symbols") else None
        sign = None if d is None else _sign(d, model.knobs)
        if sign == 0:
            continue
        corners_ok = d is not None and not (d.free_symbols & placeholders)   # g affine in this one
        if c.op in ("==", "!=") or d is None or (sign is None and not corners_ok):
            raise A.NotModelled(f"{_why(key[0])}: this line holds at neither end of it for sure; compare "
                                f"`{key[0]}` once, with `<=` or `>=`")
        if sign is None:
            worst = [{**w, key: end} for w in worst for end in ("high", "low")]
            best = [{**b, key: end} for b in best for end in ("high", "low")]
            continue
        w, b = ("high", "low") if sign > 0 else ("low", "high")
        worst = [{**x, key: w} for x in worst]
        best = [{**x, key: b} for x in best]
    return (worst, best) if worst != [{}] else None


def meter_refs(e):
    """Every MeterRef in an IR expression (a line's sides, or the constraint itself)."""
    if isinstance(e, MeterRef):
        yield e
        return
    for name in getattr(type(e), "__slots__", ()):
        child = getattr(e, name, None)
        for x in (child if isinstance(child, tuple) else (child,)):
            if hasattr(type(x), "__slots__") and not isinstance(x, (str, int, float, tuple)):
                yield from meter_refs(x)


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
            ends = _size_ends(model, c, ctx)
            op = _FLIP.get(c.op, c.op)
            left, right, g = _sides(model, c, ends[0] if ends else [{}], A.max_)
            optimistic = None
            if ends:
                bl, br, bg = _sides(model, c, ends[1], A.min_)
                optimistic = Line(i, c, text, op, bg, bl, br)
            lines.append(Line(i, c, text, op, g, left, right, optimistic=optimistic))
        except A.NotModelled as exc:
            lines.append(Line(i, c, text, _FLIP.get(c.op, c.op), None, None, None, str(exc)))
    return lines, runtime


def _sides(model: PipelineModel, c: Constraint, corners: list[dict], pick):
    """(left, right, g) of line `c` with `size` at the given ends; over several corners,
    g is `pick` (max: the worst, min: the best) of theirs."""
    values = []
    for ends in corners:
        ctx = Ctx(model.knobs, meter=_meter(model, ends))
        left, right = eval_ir(c.left, ctx), eval_ir(c.right, ctx)
        # isinstance, not hasattr(.., "free_symbols"): that property walks the whole
        # expression (a 1000-layer meter: ~0.1 s per side)
        if A.is_boolean(left) or A.is_boolean(right) or not isinstance(left, sp.Basic) \
                or not isinstance(right, sp.Basic):
            raise A.NotModelled("a budget line must compare two numbers")
        values.append((left, right, flatten(A.sub(right, left) if c.op in _FLIP else A.sub(left, right))))
    left, right, g = values[0]
    for _, _, other in values[1:]:
        g = pick(g, other)
    return left, right, g


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


__all__ = ["Line", "budget_lines", "flatten", "is_ranged", "meter_refs", "scaled", "holds", "holds_float", "line_value"]
