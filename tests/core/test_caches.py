"""Every typed cache of the verifier is used: a second ask is a hit, not a rebuild."""

from __future__ import annotations

from kmr_dsl.core.memo import ByIdentity, Memo
from kmr_dsl.verify import stepping, sympy_eval
from kmr_dsl.verify.cost import layer_terms, meter_expr
from kmr_dsl.verify.lower import Encoding
from kmr_dsl.verify.obligations import pipeline_model
from kmr_dsl.verify.predict import predict
from tests.verify.build import kref, knob, line, meter, mlp_facts, program, step

FACTS = mlp_facts([16, 32, 32, 10])
LAYERS = ("fc0", "fc1", "fc2")


def _program(budget=()):
    ks = [knob("s", "float", lo=0.0, hi=0.9, step=0.1, default=0.5), knob("b", "int", values=(4, 8, 16), default=8)]
    return program(ks, [step("prune", LAYERS, amount=kref("s")), step("quantize", LAYERS, bits=kref("b"))],
                   budget, FACTS)


def test_memo_and_identity_memo_count_hits():
    m = Memo("squares", "int")
    assert m.get(3, lambda: 9) == 9 and m.get(3, lambda: 0) == 9
    assert (m.hits, m.misses) == (1, 1)
    b = ByIdentity("lengths", "list", limit=1)
    x, y = [1, 2], [1, 2]
    assert b.get(x, lambda: 2) == 2 and b.get(x, lambda: 0) == 2
    assert b.get(y, lambda: 5) == 5          # an equal but different object is a different key
    assert b.hits == 1 and len(b) == 1        # the limit cleared the table before storing y


def test_cost_terms_and_totals_hit():
    model = pipeline_model(_program(), "compress")
    meter_expr(model, "size", model.final)
    layer_terms(model, "size", model.final)
    meter_expr(model, "size", model.final)
    assert model.cost_terms.hits >= 1 and model.cost_totals.hits >= 1


def test_compiled_predictions_hit():
    prog = _program()
    predict(prog, "compress", {"s": 0.3, "b": 8})
    before = pipeline_model(prog, "compress").compiled.hits
    predict(prog, "compress", {"s": 0.5, "b": 4})
    assert pipeline_model(prog, "compress").compiled.hits > before


def test_rule_and_literal_caches_hit():
    stepping.PARAMS_READ.clear()
    hits = sympy_eval.CONSTANTS.hits
    stepping.build_model(_program(), _program().pipelines["compress"])
    assert stepping.PARAMS_READ.hits >= 1         # prune's contract read once for three layers
    assert sympy_eval.CONSTANTS.hits > hits        # prune's literals converted once


def test_feasibility_caches_hit():
    from kmr_dsl.verify import verify
    prog = _program([line(meter("size"), "<=", meter("size", baseline=True))])
    verify(prog)
    model = pipeline_model(prog, "compress")
    assert model.decompositions.misses >= 1
    assert model.decompositions.hits + model.line_bounds.hits + model.line_ranges.hits >= 1


def test_lowering_memo_hits():
    model = pipeline_model(_program(), "compress")
    enc = Encoding(model.knobs)
    enc.lower(meter_expr(model, "size", model.final))
    assert enc._sym_memo.hits >= 1
