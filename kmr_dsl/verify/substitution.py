"""Substitution into the verifier's expressions without sympy's evaluation.

Contract: `substitute(expr, mapping)` is `expr.xreplace(mapping)` rebuilt with the
constructors of verify/algebra.py: the same function of the remaining symbols, its
constants folded, its other nodes unevaluated, each shared subtree visited once, no
recursion (deep trees). Used where a state value is put into another (the lower ends'
old density, verify/lowend.py; one branch of a choice, verify/rounding.py).
"""

from __future__ import annotations

import sympy as sp
from sympy.core.relational import Relational
from sympy.functions.elementary.piecewise import ExprCondPair
from sympy.logic.boolalg import And, Not, Or

from kmr_dsl.verify import algebra as A

_OPS = {cls: op for op, cls in A.RELATIONS.items()}
_new = sp.Basic.__new__


def substitute(expr, mapping: dict):
    """`expr` with the subexpressions of `mapping` (symbols, or a Piecewise to take one
    branch of) replaced, rebuilt with verify/algebra.py's folding constructors (constants
    folded, nodes unevaluated), each shared subtree once.

    Why not sympy's `xreplace`: it rebuilds every node with its class's evaluation, and
    a Piecewise's evaluation folds its conditions by distributing them over the pieces
    (a lower end of a large piecewise effect took longer than any check may: the lower
    ends gave such a value the trivial one instead). Here a piece whose condition folds to false is dropped, the pieces
    after one that folds to true too, and nothing else is simplified: the result is the
    same function of the remaining symbols."""
    if not isinstance(expr, sp.Basic) or not mapping:
        return expr
    memo: dict = {}
    todo = [(expr, False)]
    while todo:                           # post-order, without recursion (deep trees)
        e, ready = todo.pop()
        if e in memo:
            continue
        args = e.args
        if not args or e in mapping:
            memo[e] = mapping.get(e, e)
            continue
        if not ready:
            todo.append((e, True))
            todo.extend((a, False) for a in args if a not in memo)
            continue
        new = [memo[a] for a in args]
        memo[e] = e if all(n is a for n, a in zip(new, args)) else _rebuild(e, new)
    return memo[expr]


def _rebuild(e, args: list):
    """The node `e` over new arguments, folded as verify/algebra.py builds it."""
    t = type(e)
    if t is sp.Add or isinstance(e, sp.Add):
        return A.add(*args)
    if isinstance(e, sp.Mul):
        return A.mul(*args)
    if isinstance(e, (sp.Min, sp.Max)):
        fold = A.min_ if isinstance(e, sp.Min) else A.max_
        out = args[0]
        for a in args[1:]:
            out = fold(out, a)
        return out
    if isinstance(e, And):
        return A.and_(*args)
    if isinstance(e, Or):
        return A.or_(*args)
    if isinstance(e, Not):
        return A.not_(args[0])
    if isinstance(e, Relational) and t in _OPS:
        return A.compare(_OPS[t], args[0], args[1])
    if isinstance(e, sp.Piecewise):
        return _piecewise(args)
    if isinstance(e, ExprCondPair):
        return _new(ExprCondPair, *args)
    if isinstance(e, sp.floor):
        return A.floor_(args[0])
    if isinstance(e, sp.ceiling):
        return A.ceil_(args[0])
    if isinstance(e, sp.Pow) and isinstance(args[1], sp.Integer):
        base, power = args[0], int(args[1])
        if A.is_number(base) and (base != 0 or power >= 0):
            return A.num(A.frac(base) ** power)
        return sp.Pow(args[0], args[1], evaluate=False)
    return e.func(*args)                  # a node algebra never builds: sympy's own


def _piecewise(pairs: list):
    """A Piecewise over substituted (expression, condition) pairs: false pieces dropped,
    the first true one ends it (an ite chain, as `algebra.ite` builds it)."""
    kept = []
    for p in pairs:
        expr, cond = p.args
        if cond is A.FALSE:
            continue
        kept.append((expr, cond))
        if cond is A.TRUE:
            break
    if not kept:
        raise A.NotModelled("a piecewise value with no piece left")
    if kept[-1][1] is not A.TRUE:
        return _new(sp.Piecewise, *(_new(ExprCondPair, x, c) for x, c in kept))
    out = kept[-1][0]
    for expr, cond in reversed(kept[:-1]):
        out = A.ite(cond, expr, out)
    return out


__all__ = ["substitute"]
