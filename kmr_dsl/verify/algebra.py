"""Fast, constant-folding construction of the sympy expressions the verifier works on.

Contract: every value built here is an ordinary sympy object — Integer, Rational,
Symbol, Add, Mul, Pow, Min, Max, Piecewise, the six relationals, And/Or/Not, true and
false — so sympy's printers, `free_symbols`, `xreplace`, `simplify` and `lambdify`
work on it. Constants are folded here, in Python, with exact rationals (never
floats: `0.05` becomes 1/20); symbolic nodes are created *unevaluated*.

Why unevaluated: sympy's automatic canonicalisation was measured (sympy 1.14, this
machine) at 50-100 us per symbolic Add/Mul, ~1 ms per relational over a real symbol,
and 37 ms to extend a 1000-argument And; a 1000-layer pipeline took tens of seconds.
Unevaluated nodes cost 1-5 us. The price is that expressions are not canonical
(`x + x` stays two terms); nothing downstream needs canonical form — the numeric
evaluator, the interval bounds and the Z3 lowering all walk the tree as it is.

The values these constructors take besides sympy objects (knob symbols by sort, enum
values, placeholders, opaque arguments) are verify/values.py's, named here too; an
expression built again over other knobs is verify/template.py's `Template`.
"""

from __future__ import annotations

import math
from fractions import Fraction

import sympy as sp
from sympy.core.basic import Basic
from sympy.core.relational import (Equality, GreaterThan, LessThan, Relational, StrictGreaterThan,
                                   StrictLessThan, Unequality)
from sympy.functions.elementary.piecewise import ExprCondPair
from sympy.logic.boolalg import And, BooleanAtom, BooleanFunction, Not, Or

from kmr_dsl.core.step import Ops
# the values expressions are built over (verify/values.py), named here for `algebra.X` callers
from kmr_dsl.verify.values import (BoolSymbol, EnumKnob, EnumSymbol, EnumValue, NotModelled, Opaque, Unmodelled,
                                   UnmodelledBool, placeholder)

TRUE = sp.true
FALSE = sp.false
ZERO = sp.S.Zero
ONE = sp.S.One

_new = Basic.__new__

RELATIONS = {"<=": LessThan, "<": StrictLessThan, ">=": GreaterThan, ">": StrictGreaterThan,
             "==": Equality, "!=": Unequality}
_PY_COMPARE = {
    "<=": lambda a, b: a <= b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}


# ---------------------------------------------------------------- numbers

def frac(value) -> Fraction:
    """An exact rational for a Python or sympy number (floats through their shortest repr)."""
    t = type(value)
    if t is Fraction:
        return value
    if t is int:
        return Fraction(value)
    if isinstance(value, sp.Rational):
        return Fraction(value.p, value.q)
    if isinstance(value, bool):
        raise NotModelled("a boolean used as a number")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise NotModelled(f"non-finite number {value}")
        return Fraction(repr(value))
    raise NotModelled(f"not a number: {value!r}")


def num(value):
    """A sympy constant for a Python value (bool -> true/false); sympy values pass through."""
    if isinstance(value, Basic):
        return value
    if isinstance(value, bool):
        return TRUE if value else FALSE
    return _sym(value if type(value) is int else frac(value))


def _sym(c):
    """sympy constant of an int or a (reduced) Fraction, without sympy re-normalising it."""
    if type(c) is int:
        return sp.Integer(c)
    if c.denominator == 1:
        return sp.Integer(c.numerator)
    return sp.Rational(c.numerator, c.denominator)


def _const(x):
    """The exact value of a constant (int or Fraction), or None for anything symbolic."""
    t = type(x)
    if t is int or t is Fraction:
        return x
    if isinstance(x, sp.Rational):
        return x.p if x.q == 1 else Fraction(x.p, x.q)
    if t is float:
        return frac(x)
    if t is bool:
        raise NotModelled("a boolean used as a number")
    return None


def is_number(e) -> bool:
    return isinstance(e, sp.Rational)


def is_boolean(e) -> bool:
    """Whether `e` is a proposition (relational, connective, constant or bool knob)."""
    return isinstance(e, (Relational, BooleanFunction, BooleanAtom, BoolSymbol))


# ---------------------------------------------------------------- arithmetic
# Constants are folded as Python ints (Fractions only when needed): both sympy's and
# Fraction's arithmetic cost microseconds, and a 1000-layer cost model does ~10^5 of them.

def _symbolic_part(x):
    if is_boolean(x) or not isinstance(x, Basic):
        raise NotModelled("a condition used as a number")
    return x


def add(*xs):
    const = 0
    terms = []
    for x in xs:
        c = _const(x)
        if c is not None:
            const += c
            continue
        if type(x) is sp.Add:
            for part in x.args:
                c = _const(part)
                if c is None:
                    terms.append(part)
                else:
                    const += c
            continue
        terms.append(_symbolic_part(x))
    if not terms:
        return _sym(const)
    if const:
        terms.insert(0, _sym(const))
    return terms[0] if len(terms) == 1 else sp.Add._from_args(tuple(terms), True)


def mul(*xs):
    const = 1
    factors = []
    for x in xs:
        c = _const(x)
        if c is not None:
            const *= c
            continue
        if type(x) is sp.Mul:
            for part in x.args:
                c = _const(part)
                if c is None:
                    factors.append(part)
                else:
                    const *= c
            continue
        factors.append(_symbolic_part(x))
    if const == 0 or not factors:
        return _sym(const)
    if const != 1:
        factors.insert(0, _sym(const))
    return factors[0] if len(factors) == 1 else sp.Mul._from_args(tuple(factors), True)


def neg(a):
    return mul(-1, a)


def sub(a, b):
    return add(a, neg(b))


def div(a, b):
    c = _const(b)
    if c is not None:
        if c == 0:
            raise NotModelled("division by zero")
        return mul(a, Fraction(1) / c)
    b = num(b)
    # a symbolic denominator: Pow(b, -1), which the Z3 lowering case-splits or reports
    return mul(a, sp.Pow(b, -1, evaluate=False))


def min_(a, b):
    ca, cb = _const(a), _const(b)
    if ca is not None and cb is not None:
        return _sym(min(ca, cb))
    a, b = num(a), num(b)
    if a == b:
        return a
    return _lattice(sp.Min, a, b)


def max_(a, b):
    ca, cb = _const(a), _const(b)
    if ca is not None and cb is not None:
        return _sym(max(ca, cb))
    a, b = num(a), num(b)
    if a == b:
        return a
    return _lattice(sp.Max, a, b)


def floor_(a):
    """floor(a): folded for a constant; else sympy's floor (integer-valued by construction)."""
    c = _const(a)
    if c is not None:
        return _sym(math.floor(c))
    return _apply(sp.floor, _symbolic_part(a))


def ceil_(a):
    c = _const(a)
    if c is not None:
        return _sym(math.ceil(c))
    return _apply(sp.ceiling, _symbolic_part(a))


_NARGS1 = sp.floor(sp.Symbol("x"), evaluate=False).nargs


def _apply(cls, arg):
    """`cls(arg, evaluate=False)` for floor and ceiling, the same object: sympy's own path
    through Function.__new__ (its cache, nargs as a FiniteSet) costs ~20 us a call, and
    a 3000-layer cost model makes thousands (kept weights are floors)."""
    obj = _new(cls, arg)
    obj.nargs = _NARGS1
    return obj


def _lattice(cls, *args, argset=None):
    obj = _new(cls, *args)
    # sympy's LatticeOp methods read it; copying a set reuses its stored hashes
    obj._argset = frozenset(argset if argset is not None else args)
    return obj


# ---------------------------------------------------------------- comparisons and logic

def compare(op: str, a, b):
    if not isinstance(a, bool) and not isinstance(b, bool):
        ca, cb = _const(a), _const(b)
        if ca is not None and cb is not None:
            return TRUE if _PY_COMPARE[op](ca, cb) else FALSE
    a, b = num(a), num(b)
    if op in ("==", "!=") and (is_boolean(a) or is_boolean(b)):
        same = or_(and_(a, b), and_(not_(a), not_(b)))
        return same if op == "==" else not_(same)
    if a == b and op in ("<=", ">=", "=="):
        return TRUE
    if a == b and op in ("<", ">", "!="):
        return FALSE
    return _new(RELATIONS[op], a, b)


def _connective(cls, absorbing, neutral, xs):
    """And/Or: fold constants, flatten, drop duplicates (a set: sympy's == is slow)."""
    out: list = []
    seen: set = set()          # parts added beyond the chain the result extends
    base = frozenset()         # the parts of that chain (its own set: copied once, by
                               # frozenset.union: ~15x faster than `|` or set() measured here)
    head = ()                  # that chain's arguments
    chain = None               # that chain, while nothing is added to it
    for x in xs:
        x = num(x)
        if x is absorbing:
            return absorbing
        if x is neutral:
            continue
        parts = x._args if type(x) is cls else (x,)
        if not head and not out and type(x) is cls:
            head, base, chain = parts, x._argset, x      # extend an existing chain in O(new)
            continue
        for part in parts:
            if part not in base and part not in seen:
                seen.add(part)
                out.append(part)
                chain = None
    if chain is not None:
        # nothing added to the chain (`model.trainable and ...` starts from TRUE): the
        # chain itself, not a copy (a per-layer step would copy it once per layer)
        return chain
    if not head:
        if not out:
            return neutral
        return out[0] if len(out) == 1 else _lattice(cls, *out, argset=seen)
    # the chain's arguments, then the new ones: the node `_lattice(cls, *head, *out)`
    # builds, its tuple made once. Why: a per-layer step extends `model.trainable` by one
    # condition per layer, so this runs once per layer on a chain as long as the layers
    # before it; passing the arguments through calls copied them three times more (a
    # 3,000-layer chain: 0.21 s -> 0.09 s measured)
    obj = _new(cls)
    obj._args = head + tuple(out)
    obj._argset = base.union(seen)
    return obj


def and_(*xs):
    return _connective(And, FALSE, TRUE, xs)


def or_(*xs):
    return _connective(Or, TRUE, FALSE, xs)


def not_(a):
    a = num(a)
    if a is TRUE:
        return FALSE
    if a is FALSE:
        return TRUE
    if type(a) is Not:
        return a.args[0]
    return _new(Not, a)


def ite(cond, then, orelse):
    """`if cond then a else b`: a Piecewise for numbers, a formula for conditions."""
    cond, then, orelse = num(cond), num(then), num(orelse)
    if cond is TRUE:
        return then
    if cond is FALSE:
        return orelse
    if then == orelse:
        return then
    if is_boolean(then) or is_boolean(orelse):
        return or_(and_(cond, then), and_(not_(cond), orelse))
    pairs = [_new(ExprCondPair, then, cond)]
    if type(orelse) is sp.Piecewise:
        pairs.extend(orelse.args)     # flatten else-if chains
    else:
        pairs.append(_new(ExprCondPair, orelse, TRUE))
    return _new(sp.Piecewise, *pairs)


def enum_equal(a, b):
    """`a == b` where either side is an EnumValue or EnumKnob (folded when constant)."""
    if isinstance(a, EnumValue) and isinstance(b, EnumValue):
        return num(a.member == b.member)
    if isinstance(a, EnumValue):
        a, b = b, a
    if isinstance(a, EnumKnob) and isinstance(b, EnumValue):
        if b.member not in a.members:
            return FALSE
        return compare("==", a.symbol, a.members.index(b.member))
    if isinstance(a, EnumKnob) and isinstance(b, EnumKnob):
        if a.symbol == b.symbol:
            return TRUE
        common = [m for m in a.members if m in b.members]
        return or_(*(and_(compare("==", a.symbol, a.members.index(m)),
                          compare("==", b.symbol, b.members.index(m))) for m in common))
    raise NotModelled("an enum compared with a number")


def knob_symbols(expr) -> set:
    """Symbols of an expression (knob symbols and Unmodelled placeholders).

    An explicit stack instead of sympy's recursive `free_symbols`, which builds a set
    per node (8x slower on 1000-layer cost models); our trees bind no variables.
    """
    if not isinstance(expr, Basic):
        return set()
    out, stack = set(), [expr]
    while stack:
        e = stack.pop()
        if isinstance(e, sp.Symbol):
            out.add(e)
        else:
            stack.extend(e.args)
    return out


def quotient(a, b):
    """a / b, without a symbolic division when `a` is `b` times something (a channel
    ratio new/old whose old count is itself symbolic)."""
    if not is_number(num(b)) and isinstance(a, sp.Mul) and b in a.args:
        rest = list(a.args)
        rest.remove(b)
        return mul(*rest)
    return div(a, b)

# the step semantics of kmr_dsl.core.step, evaluated over sympy
SYMBOLS = Ops(add=lambda a, b: add(a, b), sub=sub, mul=lambda a, b: mul(a, b), div=quotient, min=min_, max=max_,
              floor=floor_, ceil=ceil_, eq=lambda a, b: compare("==", a, b))


__all__ = [
    "BoolSymbol", "Unmodelled", "UnmodelledBool", "EnumKnob", "EnumSymbol", "EnumValue", "FALSE", "NotModelled", "ONE", "RELATIONS", "TRUE",
    "SYMBOLS", "ZERO", "add", "and_", "ceil_", "compare", "div", "enum_equal", "floor_", "frac", "is_boolean",
    "is_number", "ite", "knob_symbols", "max_", "min_", "mul", "neg", "not_", "num", "or_", "quotient", "sub",
    "Opaque", "placeholder",
]


def table_handler(table: dict, cache: dict, cls: type):
    """The handler `table` holds for `cls` or its nearest base class (sympy builds many
    subclasses of Add, Mul, ...), memoised in `cache`; None when there is none. The one
    dispatch of the sympy-to-Z3 table (lower.py) and the numeric evaluator (numeric.py)."""
    handler = cache.get(cls)
    if handler is None:
        for base in cls.__mro__:
            if base in table:
                handler = cache[cls] = table[base]
                break
    return handler
