"""The lines of a decoupled certificate (joint.py) over atoms, per case setting: each line's
constant and its terms grouped by the one atom they read; each atom's range over a box.

Contract: `prepare(lines, knobs)` returns the lines' `Shape` (atoms.atomize over the
declared domains, then per case setting the lines' constants and per-atom terms, with
sub-terms that read no symbol folded to their exact values), or None when they are not
`<=` / `<` lines over atoms; `atoms_over(shape, box)` gives each atom's exact range
over a box of the free knobs (None when the box leaves the declared domains). What no
box changes is prepared once: boxsplit.py reuses one Shape for every box.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

import sympy as sp
from sympy.core.parameters import evaluate as unevaluated
from sympy.functions.elementary.piecewise import ExprCondPair

from kmr_dsl.verify.algebra import frac
from kmr_dsl.verify.atoms import NotAtomic, atomize
from kmr_dsl.verify.numeric import Unevaluable, evaluate


def _split(exprs: list, atoms):
    """(consts per line, {atom symbol: [{term: multiplicity} per line]}) of the lines at one
    case setting; NotAtomic when a term reads two atoms, or none and is no number."""
    n = len(exprs)
    consts = [Fraction(0)] * n
    parts: dict = {}
    for i, e in enumerate(exprs):
        for term in (e.args if isinstance(e, sp.Add) else (e,)):
            syms = term.free_symbols
            if not syms:
                consts[i] += frac(evaluate(term, {}))
                continue
            if len(syms) != 1 or not syms <= atoms:
                raise NotAtomic("a term with no atom or with two")
            bag = parts.setdefault(next(iter(syms)), [{} for _ in range(n)])[i]
            bag[term] = bag.get(term, 0) + 1
    return consts, parts


@dataclass
class Shape:
    """What a decoupled proof needs that no box changes: the lines atomized over the declared
    domains (each atom's monotonicity proved there, so it holds in every sub-box) and, per
    case setting, the lines' constants and per-atom terms. boxsplit.py prepares it once for
    every box instead of re-atomizing and re-substituting the lines per box."""
    at: object                   # atoms.Atomized over the declared domains
    cases: list                  # (case setting, consts per line, {atom symbol: bags per line})
    floats: dict                 # (case index, atom symbol) -> float functions per line (proposals only)


def prepare(lines, knobs) -> Shape | None:
    """The lines' Shape, or None when they are not `<=` / `<` lines over atoms."""
    exprs = [ln.expr for ln in lines]
    if not lines or not all(ln.op in ("<=", "<") and ln.expr is not None for ln in lines):
        return None
    at = atomize(exprs, knobs)
    if at is None:
        return None
    atoms = {a.symbol for a in at.atoms}
    out = []
    try:
        for c in at.case_settings(knobs):
            with unevaluated(False):     # evaluating would re-simplify every layer's Max and Piecewise
                subst = [e.xreplace(c) for e in at.exprs]
            memo: dict = {}
            consts, parts = _split([_fold(e, memo) for e in subst], atoms)
            out.append((c, consts, parts))
    except (NotAtomic, Unevaluable, ZeroDivisionError, RecursionError):
        return None
    return Shape(at, out, {})


def _fold(e, memo: dict):
    """`e` with each sub-expression that reads no symbol replaced by its exact value (a case
    setting leaves `Piecewise((2, Eq(4, 8)), (1, True))` in every layer's size term): the
    same value, evaluated once here instead of in every box's interval sums."""
    got = memo.get(e)
    if got is not None:
        return got
    out = e
    if e.args and not isinstance(e, sp.Rational):
        args = tuple(_fold(a, memo) for a in e.args)
        if args != e.args:
            with unevaluated(False):
                out = e.func(*args)
        if all(isinstance(a, sp.Rational) or a is sp.true or a is sp.false for a in args) \
                and not isinstance(out, ExprCondPair):
            try:
                v = evaluate(out, {})
            except (Unevaluable, ZeroDivisionError, TypeError):
                v = None
            if type(v) is bool:
                out = sp.true if v else sp.false
            elif isinstance(v, Fraction):
                out = sp.Rational(v.numerator, v.denominator)
    memo[e] = out
    return out


def atoms_over(shape: Shape, box: dict | None):
    """{atom symbol: (index, Atom)} with each atom's range over `box` ({free symbol: (lo, hi)}
    inside the declared ends; None when it is not): the atom's exact values at the box's two
    corners its proved directions pick (a knob that raises it: its low end gives the least)."""
    at = shape.at
    box = box or {}
    if not set(box) <= set(at.free):
        return None
    out = {}
    for j, a in enumerate(at.atoms):
        if box:
            lo_at, hi_at = [], []
            for (s, lv), (_, hv) in zip(a.lo_at, a.hi_at):
                if s not in box:
                    lo_at.append((s, lv))
                    hi_at.append((s, hv))
                    continue
                blo, bhi = box[s]
                if not min(lv, hv) <= blo <= bhi <= max(lv, hv):
                    return None
                up = lv <= hv                 # the declared corners say which way it moves
                lo_at.append((s, blo if up else bhi))
                hi_at.append((s, bhi if up else blo))
            a = replace(a, lo=frac(evaluate(a.expr, dict(lo_at))), hi=frac(evaluate(a.expr, dict(hi_at))),
                        lo_at=tuple(lo_at), hi_at=tuple(hi_at))
        out[a.symbol] = (j, a)
    return out


__all__ = ["Shape", "atoms_over", "prepare"]
