"""The cost models against the artifact layout and against hand-computed values."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings, strategies as st

from kmr_dsl import artifact_layout as layout
from kmr_dsl.verify import explain, predict, predict_layers
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify.cost import meter_expr
from kmr_dsl.verify.file_bytes import entry_bytes, tensor_data_bytes
from kmr_dsl.verify.numeric import evaluate
from kmr_dsl.verify.obligations import pipeline_model
from tests.verify.build import c, knob, kref, line, linears, meter, mlp_facts, op, program, step


@settings(max_examples=100, deadline=None)
@given(numel=st.integers(1, 10 ** 6), rows=st.integers(1, 4096), bits=st.sampled_from(layout.STORAGE_BITS),
       density=st.fractions(0, 1))
def test_tensor_bytes_matches_the_layout_within_the_ceilings(numel, rows, bits, density):
    rows = min(rows, numel)
    nnz = int(density * numel)
    ours = evaluate(tensor_data_bytes(A.num(numel), A.num(rows), A.num(bits), A.num(Fraction(nnz, numel))), {})
    theirs = layout.tensor_bytes(numel, rows, bits, nnz)
    # ceil(numel*bits/8) and ceil(numel/8) + ceil(nnz*bits/8): at most 2 bytes dropped
    assert 0 <= theirs - ours < 2 + 1e-9


def test_header_at_baseline_matches_the_layout_estimate():
    facts = mlp_facts([64, 256, 256, 10])
    prog = program([], [], [], facts)
    model = pipeline_model(prog, "compress")
    tensors = [(f"{f.name}.{n}", nd) for f in facts.layers for n, nd in (("weight", 2), ("bias", 1))]
    data = sum(f.weight_params * 4 + f.bias_params * 4 for f in facts.layers)
    estimate = layout.header_bytes_estimate(tensors, [f.name for f in facts.layers], data)
    ours = evaluate(meter_expr(model, "size", model.initial), {}) - data
    # the cost model is an upper bound: the estimate plus its per-layer margins and the padding
    margins = len(facts.layers) * (layout.CONFIG_MARGIN + layout.CEIL_BYTES) + layout.PADDING_BYTES
    assert 0 <= ours - estimate <= margins


def test_entry_bytes_is_the_layout_formula():
    digits = 6
    one = layout.header_bytes_estimate([("fc.weight", 2)], (), 10 ** 5, recipe_chars=0)
    none = layout.header_bytes_estimate([], (), 10 ** 5, recipe_chars=0)
    assert abs((one - none) - entry_bytes("fc.weight", 2, digits)) <= 8


def test_hand_computed_meters():
    facts = mlp_facts([8, 16, 4])                 # fc0 8->16 (128 + 16), fc1 16->4 (64 + 4)
    ks = [knob("s", "float", lo=0.0, hi=0.9, step=0.1, default=0.5), knob("b", "int", values=(8, 16, 32), default=32)]
    prog = program(ks, [step("prune", linears(facts), amount=kref("s")),
                        step("quantize", ("fc0",), bits=kref("b"))], [], facts)
    p = predict(prog, "compress", {"s": 0.5, "b": 16})
    assert p["params"] == 212
    assert p["nonzero"] == 0.5 * 192 + 20
    assert p["macs"] == 128 + 64
    assert p["trainable_params"] == 212          # 16 bits stays float: trainable
    assert predict(prog, "compress", {"s": 0.5, "b": 8})["trainable_params"] == 0
    base = predict(prog, "compress", baseline=True)
    assert base["params"] == base["nonzero"] == 212


def test_lowrank_factorizes_only_when_smaller():
    facts = mlp_facts([64, 256, 10])
    ks = [knob("r", "float", values=(0.1, 0.9), default=0.1)]
    prog = program(ks, [step("lowrank", ("fc0",), ratio=kref("r"))], [], facts)
    small = predict(prog, "compress", {"r": 0.1})
    big = predict(prog, "compress", {"r": 0.9})
    rank = 7                # ceil(64 * 0.1): lowrank keeps whole ranks, rounded up
    assert small["params"] == float(rank * (64 + 256) + 256 + 256 * 10 + 10)
    assert big["params"] == 64 * 256 + 256 + 256 * 10 + 10          # rank 58: dense is smaller
    assert small["macs"] == float(rank * (64 + 256) + 2560)


def test_predict_layers_gives_each_layers_final_state():
    facts = mlp_facts([64, 256, 10])
    ks = [knob("s", "float", values=(0.0, 0.5), default=0.0), knob("r", "float", values=(0.1, 0.9), default=0.9)]
    prog = program(ks, [step("prune", ("fc1",), amount=kref("s")), step("lowrank", ("fc0",), ratio=kref("r"))], [],
                   facts)
    got = predict_layers(prog, "compress", {"s": 0.5, "r": 0.1})
    assert got["fc1"]["density"] == 0.5 and got["fc0"]["density"] == 1.0
    assert got["fc0"]["rank"] == 7.0 and got["fc1"]["rank"] == 10.0     # ceil(64 * 0.1): whole ranks
    assert got["fc0"]["bits"] == 32.0 and got["fc1"]["out_features"] == 10.0
    base = predict_layers(prog, "compress", {"s": 0.5, "r": 0.1}, baseline=True)
    assert base["fc1"]["density"] == 1.0 and base["fc0"]["rank"] == 64.0


def test_lora_adapters_count_and_freeze():
    facts = mlp_facts([16, 32, 4])
    ks = [knob("merge", "bool", default=False)]
    prog = program(ks, [step("lora", ("fc0",), rank=4, merge=kref("merge"))], [], facts)
    kept = predict(prog, "compress", {"merge": False})
    merged = predict(prog, "compress", {"merge": True})
    adapters = 4 * (16 + 32)
    assert kept["params"] == merged["params"] + adapters
    # unmerged: fc0's own weights are frozen, its adapters train
    assert kept["trainable_params"] == merged["trainable_params"] - (16 * 32 + 32) + adapters


def test_explain_lists_every_layer():
    facts = mlp_facts([8, 16, 4])
    ks = [knob("s", "float", lo=0.0, hi=0.9, step=0.1, default=0.5)]
    prog = program(ks, [step("prune", linears(facts), amount=kref("s"))],
                   [line(meter("size"), "<=", op("*", c(0.5), meter("size", baseline=True)))], facts)
    text = explain(prog, "compress", "size")
    assert "fc0" in text and "fc1" in text and "s" in text and "baseline" in text


def test_baseline_counts_match_the_facts_for_every_layer_kind():
    """Embeddings, norms and convolutions: the cost model's baseline is the facts' totals."""
    from tests.check import fakes
    for facts in (fakes.bert(), fakes.cnn(), fakes.mlp((32, 64, 64, 10))):
        prog = program([], [], [], facts)
        base = predict(prog, "compress", baseline=True)
        assert base["params"] == facts.total_params
        assert base["nonzero"] == facts.total_params
        assert base["macs"] == facts.total_macs
        assert base["trainable_params"] == facts.total_params
        assert base["size"] > 4 * facts.total_params


def test_quantizing_embeddings_and_convs():
    from tests.check import fakes
    facts = fakes.cnn()
    ks = [knob("b", "int", values=(4, 8, 32), default=32)]
    prog = program(ks, [step("quantize", ("conv1", "conv2"), bits=kref("b"))], [], facts)
    full, small = predict(prog, "compress", {"b": 32}), predict(prog, "compress", {"b": 4})
    assert small["size"] < full["size"] and small["params"] == full["params"]
