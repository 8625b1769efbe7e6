"""Budget lines over a many-knob group, rewritten over shared monotone *atoms*.

Contract: `atomize(exprs, knobs)` takes line expressions (`g_i`, budget lines as
`g_i op 0`) and returns an `Atomized`, or None when the lines do not have this shape:

- *case knobs*: the knobs a comparison reads directly (`bits <= 8`, `b == 16`): they
  pick branches, and there must be few of them (finite, at most CASE_CAP settings
  together) because a refutation enumerates their settings;
- every other knob (a *free* knob: a prune amount) is numeric with closed ends and
  occurs only inside *atoms*: maximal sub-expressions that read free knobs only and are
  built from + x ^ floor ceiling min max (a layer's surviving weight count after 25
  `prune` steps, `floor((1 - k24)*floor(... floor(4096*(1 - k0) + 1/2) ...) + 1/2)`);
- each atom is monotone in each free knob, which is *proved* by a structural analysis
  (`analyse`: exact rational intervals of every sub-expression and, per knob, the sign
  of its effect: a sum of same-signed effects, a product of factors of known sign,
  floor / ceiling / min / max preserve it) — so an atom's range over the knob box is
  exactly its values at two corners, evaluated with rationals.

`exprs` are the lines with each atom replaced by a fresh symbol; they read case knobs
and atom symbols only. The same atom object in two lines (a layer's weight count read
by `size` and by `nonzero`) becomes the same symbol: that is what couples the lines.

Why: with 25 scalar prune knobs acting on every layer the lines form one group of 26
knobs (11^25 x 4 points) that no table enumerates and whose terms are products of the
knobs; but the knobs reach every line only through a few counts per layer. Treating
each count as a variable of its own, inside its proved range, is a sound relaxation
(every real setting maps into the relaxed box) that is separable per layer: what
joint.py refutes with a checked certificate, and what descent.py evaluates once per
setting instead of once per occurrence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import sympy as sp
from sympy.core.parameters import evaluate
from sympy.core.relational import Relational

from kmr_dsl.verify import algebra as A
from kmr_dsl.verify.algebra import frac
from kmr_dsl.verify.numeric import Unevaluable, evaluate as value_at

CASE_CAP = 64        # settings of the case knobs a refutation enumerates
_ARITH = (sp.Add, sp.Mul, sp.Pow, sp.floor, sp.ceiling, sp.Min, sp.Max)


class NotAtomic(Exception):
    """The lines are not of the shape atomize handles (the caller moves on)."""


@dataclass(frozen=True)
class Atom:
    expr: object
    symbol: sp.Symbol
    lo: Fraction                 # its least value over the free knobs' box (attained at lo_at)
    hi: Fraction
    integer: bool                # a floor / ceiling: whole values only
    lo_at: tuple                 # ((free symbol, value), ...): the corner where it is least
    hi_at: tuple


@dataclass
class Atomized:
    cases: tuple                 # case knob symbols, declaration order
    free: tuple                  # free knob symbols
    atoms: list[Atom]
    exprs: list                  # the lines over case knobs and atom symbols

    def exact_values(self, env: dict) -> list:
        """The lines' exact values at a setting ({knob symbol: exact value}): each distinct
        atom computed once, then the lines over them — the same rationals as evaluating
        the lines themselves (the rewrite is a substitution), at a fraction of the work."""
        full = dict(env)
        for a in self.atoms:
            full[a.symbol] = value_at(a.expr, env)
        return [value_at(e, full) for e in self.exprs]

    def case_settings(self, knobs) -> list[dict]:
        """Every setting of the case knobs, as {symbol: sympy value}."""
        out = [{}]
        for s in self.cases:
            kv = knobs.by_symbol[s]
            vals = [_sym_value(kv, v) for v in kv.values]
            out = [{**o, s: v} for o in out for v in vals]
        return out


def _sym_value(kv, v):
    if kv.kind == "bool":
        return sp.true if v else sp.false
    return sp.Integer(v) if kv.kind == "enum" else sp.Rational(v.numerator, v.denominator)


def _ends(kv) -> tuple[Fraction, Fraction]:
    if kv.finite:
        return kv.values[0], kv.values[-1]
    if kv.lo is None or kv.hi is None or not (kv.lo_closed and kv.hi_closed):
        raise NotAtomic(f"`{kv.name}` has an open or missing end")
    return kv.lo, kv.hi


def atomize(exprs: list, knobs, case_cap: int = CASE_CAP, box: dict | None = None) -> Atomized | None:
    """`box` ({free knob symbol: (lo, hi)}, inside the declared ends) narrows the free knobs:
    the atoms' ranges are then proved over that box (boxsplit.py splits the knobs' domain)."""
    try:
        return _atomize(exprs, knobs, case_cap, box)
    except (NotAtomic, Unevaluable, ZeroDivisionError, RecursionError):
        return None


def _atomize(exprs, knobs, case_cap, narrow=None):
    reads: dict = {}
    compared: set = set()

    def knobs_of(e):
        # bottom-up, once per distinct node (shared sub-trees are met many times: a
        # layer shape's counts in every layer of that shape), so the lines' symbols come
        # from here too rather than from a walk of every occurrence
        got = reads.get(e)
        if got is None:
            if e.args:
                got = frozenset().union(*(knobs_of(a) for a in e.args))
                if isinstance(e, Relational):
                    compared.update(a for a in e.args if isinstance(a, sp.Symbol))
            else:
                got = frozenset({e}) if isinstance(e, sp.Symbol) else frozenset()
            reads[e] = got
        return got

    syms: set = set()
    for e in exprs:
        syms |= knobs_of(e)
    if any(s not in knobs.by_symbol for s in syms):
        raise NotAtomic("a symbol that is no knob")
    cases = {s for s in syms if s in compared or not knobs.by_symbol[s].numeric}
    if any(not knobs.by_symbol[s].finite for s in cases):
        raise NotAtomic("a case knob with an infinite domain")
    if math.prod(len(knobs.by_symbol[s].values) for s in cases) > case_cap:
        raise NotAtomic("too many case-knob settings")
    free = syms - cases
    box = {s: _ends(knobs.by_symbol[s]) for s in free}
    for s, (lo, hi) in (narrow or {}).items():
        if s not in box or not box[s][0] <= lo <= hi <= box[s][1]:
            raise NotAtomic("a narrowed box outside a free knob's domain")
        box[s] = (lo, hi)
    found: dict = {}
    seen: set = set()

    def walk(e):
        if e in seen:
            return
        seen.add(e)
        ks = reads[e]
        if not ks & free:
            return
        if ks <= free and not isinstance(e, sp.Add) and not (isinstance(e, sp.Mul) and e.args[0].is_Number):
            found.setdefault(e, None)
            return
        for a in e.args:
            walk(a)

    for e in exprs:
        walk(e)
    if not found:
        raise NotAtomic("no free knob")
    atoms, mapping, memo = [], {}, {}
    for j, e in enumerate(found):
        _, _, dirs = analyse(e, box, memo)
        lo_at = tuple((s, box[s][0] if dirs.get(s, 0) >= 0 else box[s][1]) for s in sorted(free, key=knobs.sort_key))
        hi_at = tuple((s, box[s][1] if dirs.get(s, 0) >= 0 else box[s][0]) for s in sorted(free, key=knobs.sort_key))
        sym = sp.Symbol(f"kmr_atom_{j}")
        atoms.append(Atom(e, sym, frac(value_at(e, dict(lo_at))), frac(value_at(e, dict(hi_at))),
                          isinstance(e, (sp.floor, sp.ceiling)), lo_at, hi_at))
        mapping[e] = sym
    with evaluate(False):       # rebuilding evaluated would re-simplify every layer's Max and Piecewise
        over = [_collect(e.xreplace(mapping)) for e in exprs]
    if any(A.knob_symbols(e) & free for e in over):
        raise NotAtomic("a free knob outside every atom")
    return Atomized(tuple(sorted(cases, key=knobs.sort_key)), tuple(sorted(free, key=knobs.sort_key)), atoms, over)


def _collect(e):
    """A sum with its equal terms gathered (`m * term`): equal layers read the same atom and
    give the same term, evaluated once instead of once per layer."""
    if not isinstance(e, sp.Add):
        return e
    bag: dict = {}
    for t in e.args:
        bag[t] = bag.get(t, 0) + 1
    if len(bag) == len(e.args):
        return e
    return sp.Add(*[t if m == 1 else sp.Mul(sp.Integer(m), t) for t, m in bag.items()])


# ---------------------------------------------------------------- monotonicity, proved

def _sign(lo: Fraction, hi: Fraction):
    if lo == hi == 0:
        return 0
    if lo >= 0:
        return 1
    if hi <= 0:
        return -1
    return None


def _plus(d1: dict, d2: dict) -> dict:
    """Directions of a sum: each knob's effects must agree in sign (0: no effect)."""
    if not d1:
        return d2
    if not d2:
        return d1
    out = dict(d1)
    for s, d in d2.items():
        c = out.get(s, 0)
        if c == 0 or d == 0 or c == d:
            out[s] = d or c
        else:
            raise NotAtomic(f"`{s}` moves an atom both ways")
    return out


def _times(a, b):
    """(lo, hi, dirs) of a product: x(t)y(t) - x(u)y(u) = dx*y(t) + x(u)*dy, each term of
    known sign when the other factor's sign over the whole box is known."""
    (alo, ahi, ad), (blo, bhi, bd) = a, b
    corners = (alo * blo, alo * bhi, ahi * blo, ahi * bhi)
    sa, sb = _sign(alo, ahi), _sign(blo, bhi)
    t1, t2 = {}, {}
    for s, d in ad.items():
        if d:
            if sb is None:
                raise NotAtomic("a factor of unknown sign")
            t1[s] = d * sb
    for s, d in bd.items():
        if d:
            if sa is None:
                raise NotAtomic("a factor of unknown sign")
            t2[s] = d * sa
    return min(corners), max(corners), _plus(t1, t2)


def analyse(e, box: dict, memo: dict):
    """(lo, hi, {free knob: +1 | -1 | 0}) of an arithmetic expression over `box`
    ({symbol: (lo, hi)}): an exact rational enclosure and, per knob, the proved
    direction of its effect. Raises NotAtomic when either cannot be established."""
    got = memo.get(e)
    if got is not None:
        return got
    if isinstance(e, sp.Rational):
        v = frac(e)
        got = (v, v, {})
    elif isinstance(e, sp.Symbol):
        if e not in box:
            raise NotAtomic(f"`{e}` is no free knob")
        got = (box[e][0], box[e][1], {e: 1})
    elif isinstance(e, sp.Add):
        parts = [analyse(a, box, memo) for a in e.args]
        d: dict = {}
        for p in parts:
            d = _plus(d, p[2])
        got = (sum((p[0] for p in parts), Fraction(0)), sum((p[1] for p in parts), Fraction(0)), d)
    elif isinstance(e, sp.Mul):
        acc = (Fraction(1), Fraction(1), {})
        for a in e.args:
            acc = _times(acc, analyse(a, box, memo))
        got = acc
    elif isinstance(e, sp.Pow) and e.exp.is_Integer and 0 < int(e.exp) <= 4:
        base = analyse(e.base, box, memo)
        acc = base
        for _ in range(int(e.exp) - 1):
            acc = _times(acc, base)
        got = acc
    elif isinstance(e, sp.Pow) and e.exp == -1:
        lo, hi, d = analyse(e.base, box, memo)
        if _sign(lo, hi) is None or lo == 0 or hi == 0:
            raise NotAtomic("a reciprocal of a value that may be 0")
        got = (1 / hi, 1 / lo, {s: -v for s, v in d.items()})
    elif isinstance(e, (sp.floor, sp.ceiling)):
        lo, hi, d = analyse(e.args[0], box, memo)
        r = math.floor if isinstance(e, sp.floor) else math.ceil
        got = (Fraction(r(lo)), Fraction(r(hi)), d)
    elif isinstance(e, (sp.Min, sp.Max)):
        parts = [analyse(a, box, memo) for a in e.args]
        pick = min if isinstance(e, sp.Min) else max
        d = {}
        for p in parts:
            d = _plus(d, p[2])
        got = (pick(p[0] for p in parts), pick(p[1] for p in parts), d)
    else:
        raise NotAtomic(f"{type(e).__name__} inside an atom")
    memo[e] = got
    return got


# ---------------------------------------------------------------- exact interval evaluation

def ival(e, env: dict):
    """An exact rational enclosure (lo, hi) of `e` where each symbol of `env` ranges over
    its (lo, hi); conditions give (can be true, can be false)."""
    if isinstance(e, sp.Rational):
        v = frac(e)
        return v, v
    if e is sp.true:
        return True, False
    if e is sp.false:
        return False, True
    if isinstance(e, sp.Symbol):
        try:
            return env[e]
        except KeyError:
            raise NotAtomic(f"no range for `{e}`") from None
    t = type(e)
    if t is sp.Add:
        lo = hi = Fraction(0)
        for a in e.args:
            alo, ahi = ival(a, env)
            lo, hi = lo + alo, hi + ahi
        return lo, hi
    if t is sp.Mul:
        lo = hi = Fraction(1)
        for a in e.args:
            alo, ahi = ival(a, env)
            c = (lo * alo, lo * ahi, hi * alo, hi * ahi)
            lo, hi = min(c), max(c)
        return lo, hi
    if t is sp.Pow and e.exp.is_Integer and int(e.exp) > 0:
        blo, bhi = ival(e.base, env)
        n = int(e.exp)
        c = (blo ** n, bhi ** n)
        lo, hi = min(c), max(c)
        if n % 2 == 0 and blo <= 0 <= bhi:
            lo = Fraction(0)
        return lo, hi
    if t is sp.Pow and e.exp == -1:
        blo, bhi = ival(e.base, env)
        if blo <= 0 <= bhi:
            raise NotAtomic("a reciprocal of a value that may be 0")
        return 1 / bhi, 1 / blo
    if t is sp.floor or t is sp.ceiling:
        lo, hi = ival(e.args[0], env)
        r = math.floor if t is sp.floor else math.ceil
        return Fraction(r(lo)), Fraction(r(hi))
    if t is sp.Min or t is sp.Max:
        parts = [ival(a, env) for a in e.args]
        pick = min if t is sp.Min else max
        return pick(p[0] for p in parts), pick(p[1] for p in parts)
    if t is sp.Piecewise:
        lo = hi = None
        for branch, cond in e.args:
            can_true, can_false = ival(cond, env)
            if can_true:
                blo, bhi = ival(branch, env)
                lo = blo if lo is None else min(lo, blo)
                hi = bhi if hi is None else max(hi, bhi)
            if not can_false:
                break
        if lo is None:
            raise NotAtomic("a piecewise with no branch")
        return lo, hi
    if isinstance(e, Relational):
        a, b = (ival(x, env) for x in e.args)
        op = e.rel_op
        if op in (">=", ">"):
            a, b, op = b, a, "<=" if op == ">=" else "<"
        if op == "<=":
            return a[0] <= b[1], a[1] > b[0]
        if op == "<":
            return a[0] < b[1], a[1] >= b[0]
        overlap = a[0] <= b[1] and b[0] <= a[1]
        point = a[0] == a[1] == b[0] == b[1]
        return (overlap, not point) if op == "==" else (not point, overlap)
    if t is sp.And or t is sp.Or:
        parts = [ival(a, env) for a in e.args]
        if t is sp.And:
            return all(p[0] for p in parts), any(p[1] for p in parts)
        return any(p[0] for p in parts), all(p[1] for p in parts)
    if t is sp.Not:
        ct, cf = ival(e.args[0], env)
        return cf, ct
    raise NotAtomic(f"cannot bound {t.__name__}")


__all__ = ["Atom", "Atomized", "NotAtomic", "analyse", "atomize", "ival"]
