"""The shortcuts stepping and composability take at 3,000 layers give what the plain
constructions give.

- algebra's And/Or extends a chain with one tuple copy: the node must be the one
  `_lattice(cls, *parts)` builds (same class, arguments in the same order, the same
  `_argset`, equal and equally hashed), for every mix of chains, duplicates and constants;
- `Requirement` sets its fields in one dict update: still a frozen dataclass with the
  generated equality, repr and `replace`;
- `lowend.reads` is `symbol in value.free_symbols` on the verifier's trees, and
  `state.changed` is `old != new` on the state's values;
- composability's one-layer proved result is the general path's (family, summary,
  layers, method), and the per-layer `model.trainable` chain reaches the final state as
  the flat And of every layer's condition, in layer order.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
import sympy as sp
from sympy.logic.boolalg import And, Or

from kmr_dsl.check import check_source
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify import verify
from kmr_dsl.verify.algebra import _lattice
from kmr_dsl.verify.lowend import RHO, reads
from kmr_dsl.verify.obligations import pipeline_model
from kmr_dsl.verify.requirements import Requirement
from kmr_dsl.verify.state import changed

from tests.check.fakes import chain, per_layer_program

SYMS = [sp.Symbol(f"b{i}", integer=True) for i in range(12)]
CONDS = [A.compare(">=", s, 16) for s in SYMS]


def _plain(cls, absorbing, neutral, xs):
    """The reference: fold constants, flatten, keep first occurrences, `_lattice` of the rest."""
    parts: list = []
    for x in xs:
        x = A.num(x)
        if x is absorbing:
            return absorbing
        if x is neutral:
            continue
        for p in (x.args if type(x) is cls else (x,)):
            if p not in parts:
                parts.append(p)
    if not parts:
        return neutral
    return parts[0] if len(parts) == 1 else _lattice(cls, *parts)


def _same_node(a, b):
    assert type(a) is type(b)
    if type(a) in (And, Or):
        assert a.args == b.args and a._args == b._args
        assert a._argset == frozenset(a.args) == b._argset
    assert a == b and hash(a) == hash(b)


@pytest.mark.parametrize("cls,op,absorbing,neutral", [(And, A.and_, A.FALSE, A.TRUE), (Or, A.or_, A.TRUE, A.FALSE)])
def test_connective_is_the_plain_construction(cls, op, absorbing, neutral):
    rng = random.Random(7)
    chains = [op(*CONDS[:k]) for k in range(2, 6)] + [op(CONDS[3], CONDS[7], CONDS[1])]
    atoms = CONDS + [neutral, True, False] + chains
    for _ in range(600):
        xs = [rng.choice(atoms) for _ in range(rng.randint(0, 5))]
        _same_node(op(*xs), _plain(cls, absorbing, neutral, xs))


def test_a_chain_extended_layer_by_layer():
    """`model.trainable = model.trainable and bits >= 16`, once per layer."""
    value = A.TRUE
    for k, cond in enumerate(CONDS):
        before = value
        value = A.and_(value, cond)
        _same_node(value, _plain(And, A.FALSE, A.TRUE, CONDS[:k + 1]))
        assert A.and_(value, cond) is value            # nothing new: the chain itself
        if type(before) is And:
            assert before.args == tuple(CONDS[:k])   # the old chain is left as it was


def test_requirement_stays_a_frozen_dataclass():
    r = Requirement(3, None, "fc0", 1, None, A.TRUE, (("layer.bits", A.num(32), None),), template=("k",))
    assert (r.step_index, r.layer, r.clause_index, r.implicit, r.kind, r.template) == (3, "fc0", 1, None,
                                                                                       "consumer", ("k",))
    assert r == Requirement(3, None, "fc0", 1, None, A.TRUE, (("layer.bits", A.num(32), None),), None, "consumer",
                            ("k",))
    assert dataclasses.replace(r, layer="fc1").layer == "fc1"
    assert [f.name for f in dataclasses.fields(r)] == list(vars(r))
    assert repr(r).startswith("Requirement(step_index=3, step=None, layer='fc0'")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.layer = "fc2"


def test_reads_is_free_symbols_membership():
    x, y = SYMS[0], SYMS[1]
    values = [A.ZERO, x, RHO, A.min_(RHO, A.num(0.5)), A.mul(A.floor_(A.add(A.mul(RHO, 6144), 0.5)), A.div(1, 6144)),
              A.ite(A.compare(">=", y, 16), RHO, A.ONE), A.ite(A.compare("<", x, 1), A.ONE, A.ZERO),
              A.min_(A.max_(x, y), A.add(RHO, x)), A.and_(A.compare("<", RHO, x), A.compare(">", y, 2))]
    for v in values:
        for s in (RHO, x, y, sp.Dummy("rho")):
            assert reads(v, s) == (s in v.free_symbols)


PER_LAYER = per_layer_program(["size <= 50% * baseline.size"])


def test_one_layer_results_and_the_trainable_chain():
    facts = chain(6, (64, 96, 128, 80))
    program, diags = check_source(PER_LAYER, "t.kmr", facts_provider=lambda s, t, sp_: facts)
    assert not [d for d in diags if d.severity == "error"]
    report = verify(program)
    composed = [r for r in report.results if r.kind == "composability"]
    assert composed and all(len(r.layers) == 1 for r in composed)
    for r in composed:
        assert r.summary == f"{r.family}: holds for every setting"
        assert r.family.startswith(("`prune` requires `", "`quantize` requires `")) and r.method
    model = pipeline_model(program, "compress")
    trainable = model.final.model["trainable"]
    bits = [model.knobs.by_name[f"b[{f.name}]"].symbol for f in facts.layers if f.kind == "Linear"]
    _same_node(trainable, _lattice(And, *(A.compare(">=", b, 16) for b in bits)))


def test_changed_is_inequality():
    chains = [A.and_(*CONDS[:k]) for k in range(0, 6)] + [A.or_(*CONDS[:k]) for k in range(2, 5)]
    chains.append(_lattice(And, *CONDS[1:4]))
    others = [None, A.ZERO, A.num(32), SYMS[0], A.EnumValue("dynamic"), A.FALSE]
    for old in chains + others:
        for new in chains + others:
            assert changed(old, new) == (old != new)


def test_initial_state_shares_nothing_it_should_not():
    """Layers of one shape get equal fields in dicts of their own; a fact equal as a
    Python number but not as a value (0.1 and the float's exact fraction) is its own."""
    from fractions import Fraction

    from kmr_dsl.verify.state import initial_state

    facts = chain(9, (64, 96, 128))
    state = initial_state(facts)
    assert len({id(d) for d in state.layers.values()}) == 9
    assert state.layers["fc0"] == state.layers["fc3"] and state.layers["fc0"] != state.layers["fc1"]
    odd = [dataclasses.replace(facts.layers[0], name="a", density=0.1),
           dataclasses.replace(facts.layers[0], name="b", density=Fraction(0.1)),
           dataclasses.replace(facts.layers[0], name="c", density=0.1)]
    state = initial_state(dataclasses.replace(facts, layers=tuple(odd)))
    assert state.layers["a"]["density"] == sp.Rational(1, 10) == state.layers["c"]["density"]
    assert state.layers["b"]["density"] == sp.Rational(Fraction(0.1).numerator, Fraction(0.1).denominator)
