"""Lowering of the verifier's sympy expressions to Z3, through one table.

Contract: an `Encoding` (the knob variables of variables.py, plus this) lowers
expressions over knob symbols (`lower(expr)`) with the handler table `_TABLE` below —
the only sympy -> Z3 translation in KMR. `planned_splits(expr)` says which knobs that
lowering would case-split, without building any Z3 term.

Case splitting keeps the arithmetic linear: when a product has two non-constant
factors, the summand that contains it (of the expression lowered, or of either side
of a comparison) is split over the finite knob with the fewest values among those
involved:
If(sel_v1, term[k:=v1], If(sel_v2, term[k:=v2], ...)). Such a knob's bounds become
hard constraints (a split enumerates exactly its values). Z3 is never handed the
product of two knob variables unless no finite knob is involved (two continuous
knobs, or domains larger than MAX_SPLIT): then the product goes in as is, and
`nonlinear` is set (the answer may well be UNKNOWN). `naive=True` is the encoding the
benchmark compares against: no indicators and no splitting, sets as a disjunction of
equalities, stepped float knobs relaxed to a real interval.

Semantic gaps, all deliberate:
- every number is an exact rational (Z3 Real); int knobs are Int lattices mapped to
  Real, so there is no integer division anywhere (the IR has none: `/` is exact);
- floor / ceiling (the runtime's whole counts, kmr_dsl.core.step.settle) become Z3's
  `to_int` (floor) of the real value: exact, and integer-valued;
- Min/Max become If(a <= b, a, b); Piecewise becomes an If chain whose last branch is
  taken when no earlier condition holds (our Piecewise always ends in `True`);
- a power must have an integer exponent; a symbolic denominator x**-1 is split like a
  product (after the split it is a constant) or, when it cannot be, lowered as Z3
  division, whose value at x = 0 Z3 leaves unspecified;
- an `Unmodelled` placeholder cannot be lowered: `NotModelled` is raised and the
  obligation is UNKNOWN.
"""

from __future__ import annotations

from fractions import Fraction

import sympy as sp
import z3
from sympy.core.relational import (Equality, GreaterThan, LessThan, StrictGreaterThan, StrictLessThan,
                                   Unequality)
from sympy.logic.boolalg import And, BooleanFalse, BooleanTrue, Not, Or

from kmr_dsl.core.memo import ByIdentity
from kmr_dsl.verify.algebra import (EnumSymbol, NotModelled, Unmodelled, UnmodelledBool, knob_symbols,
                                    table_handler)
from kmr_dsl.verify.knobs import KnobTable, KnobVar
from kmr_dsl.verify.variables import KnobVariables, _fraction, _is_const, _z

MAX_SPLIT = 64        # never enumerate a finite domain larger than this inside one term
MAX_CASES = 256       # split cases of one term (nested splits multiply: 25 knobs of 11 values)


class NonLinear(Exception):
    def __init__(self, symbols):
        super().__init__("nonlinear term")
        self.symbols = symbols


class Encoding(KnobVariables):
    """Knob variables (variables.py) plus the lowering of expressions over them."""

    def __init__(self, knobs: KnobTable, naive: bool = False):
        super().__init__(knobs, naive)
        self.split: set[str] = set()          # instance names some term case-split
        self.nonlinear = False
        self._allow_nonlinear = naive
        self._sym_memo = ByIdentity("knob symbols under a node", "sympy node")
        self._plan_memo = ByIdentity("first nonlinear product", "(sympy node, split knobs)")

    # ------------------------------------------------------------ lowering

    def lower(self, expr):
        """A Z3 term for `expr` (a number or a condition)."""
        return _z(self._lower_sum(expr, {}))

    def _lower_sum(self, e, env):
        """Split points: the summands of a sum (the sides of a comparison, a budget line),
        grouped by the knobs they share, are split group by group — 1000 per-layer groups
        are 1000 small case splits, and one layer's summands share one split."""
        if type(e) is not sp.Add:
            return self._split(e, env)
        return _sum([self._split(g, env) for g in self._groups(e.args, env)])

    def _groups(self, summands, env) -> list:
        """Summands joined (as an Add) when they share a knob not fixed by `env`, in order."""
        owner: dict = {}
        groups: list[list] = []
        for a in summands:
            syms = self._syms(a).difference(env)
            hit = sorted({owner[s] for s in syms if s in owner})
            if not hit:
                target = len(groups)
                groups.append([a])
            else:
                target = hit[0]
                groups[target].append(a)
                for other in hit[1:]:          # a summand that bridges groups merges them
                    groups[target].extend(groups[other])
                    groups[other] = []
                    for s, g in owner.items():
                        if g == other:
                            owner[s] = target
            for s in syms:
                owner[s] = target
        return [g[0] if len(g) == 1 else sp.Add._from_args(tuple(g), True) for g in groups if g]

    def _split(self, e, env: dict, cases: int = 1):
        """Lower a summand, case-splitting it first as `plan` says (no trial and error).

        `cases` is how many cases the splits above this one already made; past MAX_CASES
        the rest of the term goes to Z3 as a nonlinear product (maybe UNKNOWN, never an
        exponential encoding)."""
        kv = self._plan(e, env)
        if kv is not None and cases * len(kv.values) > MAX_CASES:
            kv = None
        if kv is None:
            try:
                return self._lower(e, env)
            except NonLinear:
                # nothing finite to split on: hand Z3 the product (documented; may be UNKNOWN)
                self.nonlinear = True
                previous, self._allow_nonlinear = self._allow_nonlinear, True
                try:
                    return self._lower(e, env)
                finally:
                    self._allow_nonlinear = previous
        self.split.add(kv.name)
        n = cases * len(kv.values)
        cases = [(self._selector(kv, i), self._split(e, {**env, kv.symbol: v}, n)) for i, v in enumerate(kv.values)]
        out = _z(cases[-1][1])
        for sel, value in reversed(cases[:-1]):
            out = z3.If(sel, _z(value), out)
        return out

    def _plan(self, e, env) -> KnobVar | None:
        """The knob to split `e` on next: the smallest finite knob of the first product of
        two non-constant factors (given the knobs already fixed in `env`), or None."""
        if self.naive:
            return None
        syms = self._first_nonlinear(e, env)
        return None if syms is None else self._choose(syms, env)

    def _first_nonlinear(self, e, env):
        return self._plan_memo.get(e, lambda: self._find_nonlinear(e, env), frozenset(env))

    def _find_nonlinear(self, e, env):
        args = e.args
        if not args or isinstance(e, _RELATIONS):
            return None           # a comparison's sides are split points of their own
        t = type(e)
        if t is sp.Mul:
            live = [a for a in args if self._syms(a).difference(env)]
            if len(live) > 1:
                return self._syms(e).difference(env)
        elif t is sp.Pow and args[1] != 1 and self._syms(args[0]).difference(env):
            return self._syms(e).difference(env)
        for a in args:
            found = self._find_nonlinear(a, env)
            if found is not None:
                return found
        return None

    def _syms(self, e) -> frozenset:
        """Knob symbols under a node (memoised per node: plans revisit subtrees)."""
        out = self._sym_memo.find(e)
        if out is not None:
            return out
        if isinstance(e, sp.Symbol):
            out = frozenset((e,))
        else:
            out = frozenset().union(*(self._syms(a) for a in e.args)) if e.args else frozenset()
        return self._sym_memo.put(e, out)

    def planned_splits(self, expr) -> set[str]:
        """Knob instances `lower(expr)` would case-split, without building any Z3 term."""
        out: set[str] = set()

        def visit(term, env):
            kv = self._plan(term, env)
            while kv is not None:
                out.add(kv.name)
                env = {**env, kv.symbol: kv.values[0]}
                kv = self._plan(term, env)
            for rel in _comparisons_in(term):
                for side in rel.args:
                    for piece in (self._groups(side.args, env) if type(side) is sp.Add else (side,)):
                        visit(piece, env)

        for piece in (self._groups(expr.args, {}) if type(expr) is sp.Add else (expr,)):
            visit(piece, {})
        return out


    def _choose(self, symbols, env) -> KnobVar | None:
        cands = [self.knobs.by_symbol[s] for s in symbols if s in self.knobs.by_symbol and s not in env]
        cands = [kv for kv in cands if kv.finite and len(kv.values) <= MAX_SPLIT]
        if not cands:
            return None
        return min(cands, key=lambda kv: (len(kv.values), kv.order))

    def _selector(self, kv: KnobVar, i: int):
        var = self._var(kv)
        if "bool" in var:
            return var["bool"] if kv.values[i] else z3.Not(var["bool"])
        if "inds" in var:
            return var["inds"][i]
        return var["k"] == i

    def _lower(self, e, env):
        handler = table_handler(_TABLE, _RESOLVED, type(e))
        if handler is None:
            raise NotModelled(f"cannot lower {type(e).__name__} to Z3")
        return handler(self, e, env)

    def _symbol(self, e, env):
        if isinstance(e, (Unmodelled, UnmodelledBool)):
            raise NotModelled(f"not modelled: {e.name[1:]}")
        if e in env:
            return env[e]
        kv = self.knobs.by_symbol.get(e)
        if kv is None:
            raise NotModelled(f"`{e}` is not a knob of this pipeline")
        return self._var(kv)["value"]


_RELATIONS = (LessThan, StrictLessThan, GreaterThan, StrictGreaterThan, Equality, Unequality)


def _comparisons_in(term):
    """The outermost comparisons inside a term (a comparison itself, if it is one)."""
    if isinstance(term, _RELATIONS):
        return [term]
    return [r for a in term.args for r in _comparisons_in(a)]


def _sum(parts):
    const = 0
    terms = []
    for p in parts:
        if _is_const(p):
            const += p
        else:
            terms.append(p)
    if not terms:
        return const
    total = terms[0] if len(terms) == 1 else z3.Sum(terms)
    return total + _z(const) if const else total


# ---------------------------------------------------------------- the table

def _l_number(enc, e, env):
    return e.p if e.q == 1 else Fraction(e.p, e.q)


def _l_add(enc, e, env):
    return _sum([enc._lower(a, env) for a in e.args])


def _l_mul(enc, e, env):
    const = 1
    terms = []
    for a in e.args:
        v = enc._lower(a, env)
        if _is_const(v):
            const *= v
        else:
            terms.append(v)
    if const == 0 or not terms:
        return const
    if len(terms) > 1 and not enc._allow_nonlinear:
        raise NonLinear(knob_symbols(e))
    out = terms[0]
    for t in terms[1:]:
        out = out * t
    return out if const == 1 else _z(const) * out


def _l_pow(enc, e, env):
    base, expo = e.args
    if not isinstance(expo, sp.Integer):
        raise NotModelled(f"non-integer power {expo}")
    n = int(expo)
    b = enc._lower(base, env)
    if _is_const(b):
        try:
            return Fraction(b) ** n
        except ZeroDivisionError:
            raise NotModelled("division by zero") from None
    if n == 1:
        return b
    if not enc._allow_nonlinear:
        raise NonLinear(knob_symbols(e))
    out = b
    for _ in range(abs(n) - 1):
        out = out * b
    return out if n > 0 else 1 / out


def _l_lattice(pick_first):
    def handler(enc, e, env):
        vals = [enc._lower(a, env) for a in e.args]
        out = vals[0]
        for v in vals[1:]:
            if _is_const(out) and _is_const(v):
                out = out if pick_first(out, v) else v
            else:
                a, b = _z(out), _z(v)
                out = z3.If(pick_first(a, b), a, b)
        return out
    return handler


def _l_piecewise(enc, e, env):
    out = None
    for pair in reversed(e.args):
        value, cond = pair.args
        c = enc._lower(cond, env)
        v = enc._lower(value, env)
        if out is None or c is True:
            out = v
        elif c is False:
            continue
        else:
            out = z3.If(c, _z(v), _z(out))
    return out


def _l_relation(op):
    def handler(enc, e, env):
        lhs, rhs = e.args
        if isinstance(lhs, EnumSymbol) and isinstance(rhs, sp.Integer) and op in ("==", "!=") \
                and lhs not in env and not enc.naive:
            inds = enc._var(enc.knobs.by_symbol[lhs])["inds"]
            i = int(rhs)
            hit = inds[i] if 0 <= i < len(inds) else z3.BoolVal(False)
            return hit if op == "==" else z3.Not(hit)
        a, b = enc._lower_sum(lhs, env), enc._lower_sum(rhs, env)
        if _is_const(a) and _is_const(b):
            a, b = Fraction(a), Fraction(b)
        else:
            a, b = _z(a), _z(b)
        return {"<=": lambda: a <= b, "<": lambda: a < b, ">=": lambda: a >= b, ">": lambda: a > b,
                "==": lambda: a == b, "!=": lambda: a != b}[op]()
    return handler


def _l_and(enc, e, env):
    vals = [enc._lower(a, env) for a in e.args]
    if any(v is False for v in vals):
        return False
    rest = [v for v in vals if v is not True]
    return True if not rest else (rest[0] if len(rest) == 1 else z3.And(rest))


def _l_or(enc, e, env):
    vals = [enc._lower(a, env) for a in e.args]
    if any(v is True for v in vals):
        return True
    rest = [v for v in vals if v is not False]
    return False if not rest else (rest[0] if len(rest) == 1 else z3.Or(rest))


def _l_not(enc, e, env):
    v = enc._lower(e.args[0], env)
    return (not v) if isinstance(v, bool) else z3.Not(v)


def _l_round(down: bool):
    """floor / ceiling: exact on a constant, else Z3's to_int (floor) on the real value."""
    def handler(enc, e, env):
        v = enc._lower(e.args[0], env)
        if _is_const(v):
            f = Fraction(v)
            return (f.numerator // f.denominator) if down else -(-f.numerator // f.denominator)
        x = v if down else -v
        out = z3.ToReal(z3.ToInt(x))
        return out if down else -out
    return handler


_TABLE = {
    sp.Rational: _l_number,
    sp.Symbol: lambda enc, e, env: enc._symbol(e, env),
    sp.Add: _l_add,
    sp.Mul: _l_mul,
    sp.Pow: _l_pow,
    sp.Min: _l_lattice(lambda a, b: a <= b),
    sp.Max: _l_lattice(lambda a, b: a >= b),
    sp.Piecewise: _l_piecewise,
    sp.floor: _l_round(True),
    sp.ceiling: _l_round(False),
    LessThan: _l_relation("<="),
    StrictLessThan: _l_relation("<"),
    GreaterThan: _l_relation(">="),
    StrictGreaterThan: _l_relation(">"),
    Equality: _l_relation("=="),
    Unequality: _l_relation("!="),
    And: _l_and,
    Or: _l_or,
    Not: _l_not,
    BooleanTrue: lambda enc, e, env: True,
    BooleanFalse: lambda enc, e, env: False,
}
_RESOLVED: dict[type, object] = {}


__all__ = ["Encoding", "MAX_SPLIT", "NonLinear", "_fraction"]
