"""A budget line at a setting: cached per-model views of its expression and exact checks.

Contract: `decomposition(model, expr)` (decomposition.decompose, or None), `line_bound` (its
bound over the declared domains) and `line_range` (its float enclosure at a setting) are
cached in the model's typed caches; `line_holds` and `meets_all` decide lines at a
setting, by a float enclosure only when its margin is clear (bounds.MARGIN), exactly
with rationals otherwise; `separable(model, lines)` is the lines' separable form
(separable.py) or None; `approx_value` is a value for a message. The feasibility
decision (feasibility.py) and the warnings (warnings.py) read them.
"""

from __future__ import annotations

from fractions import Fraction

from kmr_dsl.verify import algebra as A
from kmr_dsl.verify.bounds import MARGIN, bound_line, point_range
from kmr_dsl.verify.decomposition import decompose
from kmr_dsl.verify.budget import Line, holds
from kmr_dsl.verify.numeric import Unevaluable, as_number, evaluate
from kmr_dsl.verify.separable import separate
from kmr_dsl.verify.state import PipelineModel


def decomposition(model: PipelineModel, expr):
    """decompose(expr), cached per expression in the model (None when it cannot be decomposed)."""
    def build():
        try:
            return decompose(expr, model.knobs, model.decomposed_terms)
        except A.NotModelled:
            return None
    return model.decompositions.get(expr, build)


def line_bound(model: PipelineModel, dec):
    """bound_line(dec) over the declared domains, cached per decomposition."""
    return model.line_bounds.get(dec, lambda: bound_line(dec, model.knobs))


def line_range(model: PipelineModel, dec, env: dict) -> tuple[float, float, float]:
    """point_range, remembered per (expression, setting): the defaults are asked for twice.

    The setting's key: its symbols' identities, in order (the entry keeps them alive, so
    no other object can take those ids while it exists), and its values exactly (a
    Fraction as its numerator and denominator). Why: hashing 3,000 layers' symbols and
    Fractions in Python for the key cost ~5 ms a look-up, about a third of a miss."""
    key = (tuple(map(id, env)), tuple(map(_exact, env.values())))
    hit = model.line_ranges.find(dec, key)
    if hit is None:
        hit = model.line_ranges.put(dec, (point_range(dec, model.knobs, env), tuple(env)), key)
    return hit[0]


def _exact(v):
    return v.as_integer_ratio() if type(v) is Fraction else v


def line_holds(line: Line, model: PipelineModel, env: dict) -> bool:
    """Does the line hold at a setting? Decided by a float enclosure when its margin is
    clear by MARGIN (bounds.py), exactly with rationals otherwise."""
    dec = decomposition(model, line.expr)
    if dec is not None and line.op in ("<=", "<"):
        lo, hi, scale = line_range(model, dec, env)
        margin = MARGIN * max(scale, 1.0)
        if hi < -margin:
            return True
        if lo > margin:
            return False
    try:
        return holds(line.op, evaluate(line.expr, env))
    except Unevaluable:
        return False


def meets_all(lines: list[Line], model: PipelineModel, setting: dict) -> bool:
    """Check every line at a (possibly relaxed) exact setting."""
    env = model.knobs.env(setting)
    return all(line_holds(ln, model, env) for ln in lines)


def separable(model: PipelineModel, lines: list[Line]):
    """The lines as a separable sum (separable.py); None when they are not one."""
    if not all(ln.op in ("<=", "<") and ln.expr is not None for ln in lines):
        return None
    decs = [decomposition(model, ln.expr) for ln in lines]
    if any(d is None for d in decs):
        return None
    try:
        return separate(model, lines, decs)
    except (A.NotModelled, Unevaluable, ZeroDivisionError):
        return None


def approx_value(model, expr, env):
    """A value for a message: the float enclosure's midpoint, rounded (exact when it cannot)."""
    dec = decomposition(model, expr)
    if dec is None:
        return as_number(evaluate(expr, env))
    lo, hi, _ = line_range(model, dec, env)
    v = (lo + hi) / 2
    return int(round(v)) if abs(v - round(v)) <= 1e-6 * max(1.0, abs(v)) else round(v, 6)


__all__ = ["approx_value", "decomposition", "line_bound", "line_holds", "line_range", "meets_all", "separable"]
