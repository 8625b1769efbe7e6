"""template.Template: an expression built once and instantiated over other symbols is the
expression algebra builds over those symbols, node for node, whether the plan is walked
(the first instantiations) or compiled to a function (after GENERATE_AFTER)."""

from __future__ import annotations

import sympy as sp

from kmr_dsl.verify import algebra as A
from kmr_dsl.verify.template import GENERATE_AFTER, Template


def _cost(s, b):
    """A layer's cost in the shapes the cost model builds: sums, products, a floor and a
    ceiling, min/max, a piecewise over comparisons, a power and connectives."""
    kept = A.floor_(A.add(A.mul(12288, A.sub(1, s)), sp.Rational(1, 2)))
    dense = A.add(A.mul(1536, b), A.ite(A.compare("<=", b, 8), 78, 77))
    packed = A.add(A.div(A.mul(b, kept), 8), A.ceil_(A.div(b, 3)))
    size = A.add(A.min_(dense, packed), A.max_(b, 4), A.ite(A.compare("==", b, 16), 2, 4), 77)
    cond = A.and_(A.compare(">=", b, 16), A.or_(A.compare("<", s, sp.Rational(1, 2)), A.not_(A.compare("==", b, 32))))
    return A.add(size, A.mul(s, s), A.ite(cond, 1, 0))


def _same(a, b) -> bool:
    """Equal node for node: the same classes, the same arguments in the same order."""
    if type(a) is not type(b):
        return False
    if not a.args:
        return a == b
    return len(a.args) == len(b.args) and all(_same(x, y) for x, y in zip(a.args, b.args))


def test_instances_are_what_algebra_builds_over_the_new_symbols_walked_and_compiled():
    s0, b0 = sp.Symbol("s0"), sp.Symbol("b0")
    template = Template(_cost(s0, b0), (s0, b0))
    for i in range(GENERATE_AFTER + 5):
        s, b = sp.Symbol(f"s{i + 1}"), sp.Symbol(f"b{i + 1}")
        compiled = template._build is not None
        got = template((s, b))
        assert _same(got, _cost(s, b)), (i, compiled)
        assert got == _cost(s, b) and hash(got) == hash(_cost(s, b))
    assert template._build is not None          # the later ones went through the compiled plan


def test_the_template_symbols_give_the_expression_itself_and_constants_are_shared():
    s0, b0 = sp.Symbol("s0"), sp.Symbol("b0")
    expr = _cost(s0, b0)
    template = Template(expr, (s0, b0))
    assert template((s0, b0)) is expr
    const = Template(A.num(7), (s0,))
    assert const((sp.Symbol("x"),)) is A.num(7)
    bare = Template(b0, (s0, b0))
    y = sp.Symbol("y")
    assert bare((sp.Symbol("x"), y)) is y
