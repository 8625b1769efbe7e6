"""The checker's public API and the checked program it builds (kmr_dsl.check)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kmr_dsl.check import check_file, check_source, check_with_sources
from kmr_dsl.core import program as P
from kmr_dsl.diagnostics import KmrError, error, has_errors, render_all

from . import fakes

DATA = Path(__file__).resolve().parent.parent / "data" / "check"
SPEC = DATA / "ok" / "spec_example.kmr"


def _check(text, provider=fakes.provider, tmp=None, **kw):
    file = str((tmp or DATA / "ok") / "inline.kmr")
    return check_source(text, file, provider, **kw)


def _ok(text, **kw):
    program, diags = _check(text, **kw)
    assert program is not None and not has_errors(diags), render_all(diags)
    return program


MLP = 'import "std"\nmodel net = factory("fake:mlp")\n'


# ---------------------------------------------------------------- the spec program

def test_spec_example_checked_program():
    program, diags = check_file(SPEC, fakes.provider)
    assert diags == [] and program is not None
    pipe = program.pipelines["compress"]
    assert pipe.knobs == ("sparsity", "bits")
    assert [s.rule.name for s in pipe.steps] == ["prune", "finetune", "quantize"]
    prune, finetune, quantize = pipe.steps
    assert prune.layers == ("fc1", "fc2", "fc3") and quantize.layers == ("fc1", "fc2", "fc3")
    assert finetune.layers == ()
    # every parameter is present, defaults filled in, knobs as KnobRef, enums as EnumLit
    assert [k for k, _ in prune.args] == ["amount", "method", "n", "m"]
    assert prune.arg("amount") == P.KnobRef("sparsity", "sparsity")
    assert prune.arg("method") == P.EnumLit("magnitude")
    assert prune.arg("n") == P.Const(2, "number")
    assert finetune.arg("data") == P.DataRef("train")
    assert finetune.arg("lr") == P.Const(0.001, "number")
    assert quantize.arg("bits") == P.KnobRef("bits", "bits")
    size, rel, acc = pipe.budget
    assert size.op == "<=" and size.left == P.MeterRef("size", (), False, True) and size.right == P.Const(16000, "bytes")
    assert rel.right == P.Op("*", (P.Const(0.25, "number"), P.MeterRef("size", (), True, True)))
    test = (("data", P.DataRef("test")),)
    assert acc.left == P.MeterRef("accuracy", test, False, False)
    assert acc.right == P.Op("-", (P.MeterRef("accuracy", test, True, False), P.Const(0.02, "number")))
    assert (size.analytic, rel.analytic, acc.analytic) == (True, True, False)
    assert pipe.objective == P.Objective("maximize", P.MeterRef("accuracy", test, False, False))
    assert pipe.search == P.Search("budgeted", (("max_steps", 20),))
    assert pipe.model.facts is fakes.DIGITS and program.models["student"].facts is fakes.DIGITS
    assert program.default_setting(pipe) == {"sparsity": 0.5, "bits": 8}
    assert program.knobs["sparsity"].domain.finite()[:3] == (0.0, 0.05, 0.1)
    loader = program.models["student"].loader
    assert loader.kind == "factory" and loader.args == ("digits_model:make_mlp",)
    assert loader.kwargs == (("weights", "mlp.safetensors"),) and loader.base_dir == str(SPEC.parent)
    assert program.data["test"].loader.kwargs == (("split", "test"),)
    assert set(program.rules) >= {"prune", "quantize", "finetune", "distill", "lowrank", "lora"}
    assert program.meters["size"].dim == "bytes" and program.meters["accuracy"].dim == "number"
    assert str(SPEC) in program.sources


def test_stdlib_checks_cleanly():
    from kmr_dsl.resources import stdlib_dir

    for name in ("std.kmr", "rules.kmr", "meters.kmr"):
        program, diags = check_file(stdlib_dir() / name)
        assert diags == [] and program is not None, render_all(diags)
    program, _ = check_file(stdlib_dir() / "std.kmr")
    prune = program.rules["prune"]
    assert prune.accepts == ("Linear", "Conv2d") and prune.impl == "kmr_dsl.rules.prune:apply"
    assert prune.param("amount").domain == P.Domain(lo=0.0, hi=1.0, lo_closed=True, hi_closed=False)
    assert program.rules["finetune"].accepts is None
    assert program.rules["distill"].param("teacher").default == "baseline"
    assert program.meters["latency"].params[0].default == 1 and not program.meters["latency"].analytic


def test_examples_check_cleanly_without_a_model():
    root = Path(__file__).resolve().parents[2] / "examples"
    for path in sorted(root.rglob("*.kmr")):
        program, diags = check_file(path)          # no provider: selectors unchecked
        assert not has_errors(diags), render_all(diags)


# ---------------------------------------------------------------- facts provider

def test_without_provider_selectors_are_not_resolved():
    program = _ok(MLP + 'pipeline p(net) { prune(amount = 0.5) on layers(Conv9d, name = "x") }\n'
                  .replace("Conv9d", "Linear"), provider=None)
    pipe = program.pipelines["p"]
    assert pipe.steps[0].layers == () and pipe.model.facts is None


def test_without_provider_kinds_are_still_checked():
    _, diags = _check(MLP + "pipeline p(net) { lowrank() on layers(Conv2d) }\n", provider=None)
    assert [d.code for d in diags] == ["KMR215"]


def test_provider_called_once_per_used_model_with_trust():
    calls = []

    def provider(spec, trust, span):
        calls.append((spec.args[0], trust, span.line))
        return fakes.MLP

    text = ('import "std"\nmodel a = factory("fake:mlp")\nmodel b = torch_module("m.pt", trust = true)\n'
            'model unused = factory("fake:broken")\n'
            "pipeline p(a) { prune(amount = 0.1) }\npipeline q(a) { prune(amount = 0.2) }\n"
            "pipeline r(b) { prune(amount = 0.3) }\n")
    program, diags = _check(text, provider)
    assert diags == []
    assert calls == [("fake:mlp", False, 2), ("m.pt", True, 3)]
    assert program.models["unused"].facts is None
    calls.clear()
    _check(text, provider, trust=True)
    assert [c[1] for c in calls] == [True, True]


def test_provider_errors_become_diagnostics():
    def raising(exc):
        def provider(spec, trust, span):
            raise exc(span)
        return provider

    text = MLP + "pipeline p(net) { prune(amount = 0.1) on layers(Conv2d) }\n"
    _, diags = _check(text, raising(lambda span: KmrError(error("KMR402", span, "bad file"))))
    assert [(d.code, d.message, d.span.line) for d in diags] == [("KMR402", "bad file", 2)]
    program, diags = _check(text, raising(lambda span: ZeroDivisionError("boom")))
    assert program is None and [d.code for d in diags] == ["KMR216"]
    assert diags[0].notes == ("ZeroDivisionError: boom",) and diags[0].span.line == 2
    _, diags = _check(text, lambda spec, trust, span: {"not": "facts"})
    assert [d.code for d in diags] == ["KMR216"]


# ---------------------------------------------------------------- selectors and families

def test_for_block_expands_per_layer_in_order():
    program = _ok(MLP + 'knob s[l in layers(Linear, name = "fc*")] : float in [0.0, 0.5] step 0.1 = 0.2\n'
                  'knob q : int in {8, 16} = 8\n'
                  'pipeline p(net) {\n  for l in layers(name = "fc*", Linear) {\n'
                  '    prune(amount = s[l] / 2)\n    quantize(bits = q)\n  }\n}\n')
    pipe = program.pipelines["p"]
    assert [(s.rule.name, s.layers) for s in pipe.steps] == [
        ("prune", ("fc1",)), ("quantize", ("fc1",)), ("prune", ("fc2",)), ("quantize", ("fc2",)),
        ("prune", ("fc3",)), ("quantize", ("fc3",))]
    assert pipe.steps[2].arg("amount") == P.Op("/", (P.KnobRef("s[fc2]", "s"), P.Const(2, "number")))
    assert pipe.knobs == ("s", "q")
    assert program.knobs["s"].layers == ("fc1", "fc2", "fc3")
    assert [name for name, _ in program.knob_instances(pipe)] == ["s[fc1]", "s[fc2]", "s[fc3]", "q"]


def test_selector_globs_and_all():
    text = ('import "std"\nmodel bert = factory("fake:bert")\npipeline p(bert) {\n'
            '  quantize(bits = 8)\n'
            '  prune(amount = 0.1) on layers(Linear, name = "encoder.layer.?.output.dense")\n'
            '  quantize(bits = 8) on layers(name = "embeddings.*")\n'
            '  prune(amount = 0.1) on layers(Linear, name = "encoder.layer.*.output.dense")\n}\n')
    steps = _ok(text).pipelines["p"].steps
    assert len(steps[0].layers) == 15 and steps[0].layers[0] == "embeddings.word_embeddings"
    assert steps[1].layers == ("encoder.layer.0.output.dense", "encoder.layer.1.output.dense")
    # no kinds listed: the rule's accepted kinds (the LayerNorm under embeddings is skipped)
    assert steps[2].layers == ("embeddings.word_embeddings", "embeddings.position_embeddings")
    # fnmatch: `*` also crosses dots, so this reaches the attention output too
    assert len(steps[3].layers) == 4 and "encoder.layer.0.attention.output.dense" in steps[3].layers


def test_nothing_matched_lists_layers_truncated():
    text = ('import "std"\nmodel w = factory("fake:wide")\n'
            "pipeline p(w) { prune(amount = 0.1) on layers(Conv2d) }\n")
    _, diags = _check(text)
    (d,) = diags
    assert d.code == "KMR214" and d.span.line == 3
    assert d.notes[0] == "model `w` has 60 layer(s) of 1 kind(s):"
    assert d.notes[1] == "  Linear x60: block.0, block.1, block.2, block.3, … (56 more)"


def test_nothing_matched_on_bert_groups_kinds_and_prefixes():
    text = ('import "std"\nmodel b = factory("fake:bert")\n'
            'pipeline p(b) { prune(amount = 0.1) on layers(Linaer, name = "decoder.*") }\n')
    _, diags = _check(text)
    codes = sorted(d.code for d in diags)
    assert codes == ["KMR215"]          # the kind is not one prune accepts: reported first
    _, diags = _check(text.replace("Linaer", "Linear"))
    notes = diags[0].notes
    assert any(n.startswith("  Linear x13: encoder.layer.0.attention.self.query") for n in notes)
    assert any("LayerNorm x5" in n for n in notes) and any("Embedding x2" in n for n in notes)
    assert notes[-1].startswith("names start with: embeddings.*, encoder.*, pooler.*")


def test_family_knob_of_two_pipelines_unions_layers():
    text = ('import "std"\nmodel a = factory("fake:mlp")\nmodel c = factory("fake:cnn")\n'
            "knob s[l in layers(Linear)] : float in [0.0, 0.5] = 0.1\n"
            "pipeline p(a) { for l in layers(Linear) { prune(amount = s[l]) } }\n"
            "pipeline q(c) { for l in layers(Linear) { prune(amount = s[l]) } }\n")
    assert _ok(text).knobs["s"].layers == ("fc1", "fc2", "fc3", "fc")


# ---------------------------------------------------------------- expressions

def test_derived_meters_expand_in_place():
    program = _ok(MLP + "meter ratio = baseline.size / size\nmeter twice = 2 * ratio\n"
                  "pipeline p(net) { budget { twice >= 4  baseline.ratio == 1 } }\n")
    twice, base = program.pipelines["p"].budget
    size, bsize = P.MeterRef("size", (), False, True), P.MeterRef("size", (), True, True)
    assert twice.left == P.Op("*", (P.Const(2, "number"), P.Op("/", (bsize, size))))
    assert base.left == P.Op("/", (bsize, bsize))


def test_units_in_base_units_and_meter_defaults():
    program = _ok(MLP + "knob mem : int in [1 KiB, 1 MiB] = 64 KiB\n"
                  "pipeline p(net) { budget {\n  latency <= 1.5 ms\n  size <= mem\n  macs <= 2 K + 1.5 M\n} }\n")
    lat, mem, macs = program.pipelines["p"].budget
    assert lat.left == P.MeterRef("latency", (("batch", 1),), False, False)
    assert lat.right == P.Const(0.0015, "time")
    assert program.knobs["mem"].domain.lo == 1024 and program.knobs["mem"].default == 65536
    assert program.knobs["mem"].dim == "bytes"
    assert macs.right == P.Op("+", (P.Const(2000, "number"), P.Const(1500000, "number")))


def test_enum_knobs_compare_by_member_and_feed_enum_params():
    program = _ok(MLP + "knob how : {magnitude, nm} = nm\nknob keep : bool = true\n"
                  "pipeline p(net) {\n  prune(method = how, amount = if keep then 0.1 else 0.2)\n"
                  "  budget { how == nm  keep == true }\n}\n")
    pipe = program.pipelines["p"]
    assert pipe.steps[0].arg("method") == P.KnobRef("how", "how")
    assert pipe.budget[0].right == P.EnumLit("nm")
    assert pipe.knobs == ("how", "keep")


def test_rule_ir():
    program = _ok('rule r(mode : {a, b} = a, k : int in [1, 4] = 2)\n  accepts Linear\n'
                  '  requires mode == b or layer.bits > k\n  effect layer.rank = min(layer.rank, k)\n'
                  '  effect model.trainable = not layer.frozen\n  impl "m:f"\n')
    rule = program.rules["r"]
    assert rule.requires == (P.Op("or", (P.Op("==", (P.ParamRef("mode"), P.EnumLit("b"))),
                                          P.Op(">", (P.FieldRef("layer", "bits"), P.ParamRef("k"))))),)
    assert rule.effects[0] == P.Effect("layer", "rank", P.Op("min", (P.FieldRef("layer", "rank"), P.ParamRef("k"))))
    assert rule.param("k").domain == P.Domain(lo=1, hi=4)      # an int range: every integer, no step


def test_property_checked():
    program = _ok(MLP + "knob a : float in [0.0, 0.5] = 0.1\npipeline p(net) { prune(amount = a) }\n"
                  "property law(p) { forall a  check size <= baseline.size }\n")
    prop = program.properties["law"]
    assert prop.pipeline == "p" and prop.forall == ("a",) and prop.checks[0].analytic


# ---------------------------------------------------------------- files, imports, robustness

def test_relative_imports_and_diamonds(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.kmr").write_text('import "std"\nimport "b.kmr"\nknob x : float in [0.0, 0.5] = 0.1\n')
    (tmp_path / "lib" / "b.kmr").write_text('import "std"\nknob y : float in [0.0, 0.5] = 0.2\n')
    main = tmp_path / "main.kmr"
    main.write_text('import "std"\nimport "lib/a"\nmodel m = factory("fake:mlp")\n'
                    "pipeline p(m) { prune(amount = y) }\n")
    program, diags = check_file(main, fakes.provider)
    assert diags == [] and program.pipelines["p"].knobs == ("y",)
    assert list(program.knobs) == ["y", "x"]     # dependency order: b before a
    assert program.models["m"].loader.base_dir == str(tmp_path.resolve())


def test_a_missing_std_import_is_suggested():
    _, diags = _check('model m = factory("fake:mlp")\npipeline p(m) { prune(amount = 0.5) }\n')
    assert [d.code for d in diags] == ["KMR201"]
    assert diags[0].notes == ('`prune` is declared in the standard library: add `import "std"`',)


def test_missing_main_file_is_kmr501(tmp_path):
    program, diags = check_file(tmp_path / "nope.kmr")
    assert program is None and [d.code for d in diags] == ["KMR501"]


def test_diagnostics_of_the_main_file_come_first(tmp_path):
    (tmp_path / "lib.kmr").write_text("knob broken : int in [3, 1]\n")
    main = tmp_path / "main.kmr"
    main.write_text('knob bad : float in [0.0, 1.0] = 9.0\nimport "lib.kmr"\n')
    _, diags = check_file(main)
    assert [(Path(d.span.file).name, d.code) for d in diags] == [("main.kmr", "KMR206"), ("lib.kmr", "KMR205")]


def test_check_with_sources_returns_every_file():
    program, diags, sources = check_with_sources(SPEC.read_text(), str(SPEC), fakes.provider)
    assert program is not None and str(SPEC) in sources
    assert any(name.endswith("rules.kmr") for name in sources)


def test_internal_error_is_a_diagnostic(monkeypatch):
    import kmr_dsl.check as check

    def boom(*a, **k):
        raise RuntimeError("bug")

    monkeypatch.setattr(check, "check_pipeline", boom)
    program, diags = check.check_source(MLP + "pipeline p(net) { }\n", "x.kmr", fakes.provider)
    assert program is None and [d.code for d in diags] == ["KMR500"] and "bug" in diags[0].notes[0]


def test_warnings_do_not_prevent_the_program():
    program, diags = _check(MLP + "pipeline p(net) { budget { 1 KB <= 2 KB } }\n")
    assert program is not None and [d.code for d in diags] == ["KMR224"]


@pytest.mark.parametrize("text", ["", "# only a comment\n", 'import "std"\n'])
def test_trivial_programs(text):
    program, diags = _check(text)
    assert diags == [] and program is not None and program.pipelines == {}
