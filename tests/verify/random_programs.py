"""Hypothesis strategies: small random pipelines and settings for the differential tests.

A program is a 2-4 layer MLP with a few knobs (a sparsity — stepped or real — a bit
width set, sometimes a per-layer sparsity family, an enum pruning method, a low-rank
ratio), a random sequence of prune / quantize / lowrank / finetune steps over random
layers, and 1-3 random analytic budget lines (meter <= fraction * baseline, or a
constant). Settings draw one value per knob instance from its domain.
"""

from __future__ import annotations

from fractions import Fraction

from hypothesis import strategies as st

from tests.verify.build import c, kref, knob, line, linears, meter, mlp_facts, op, program, step

METERS = ("size", "params", "nonzero", "macs", "trainable_params")


@st.composite
def programs(draw):
    widths = draw(st.lists(st.sampled_from([4, 8, 16, 24, 40]), min_size=3, max_size=5))
    facts = mlp_facts(widths)
    names = linears(facts)
    knobs = []
    if draw(st.booleans()):
        step_ = draw(st.sampled_from([0.1, 0.15, 0.3, 0.45]))
        knobs.append(knob("s", "float", lo=0.0, hi=0.9, step=step_, default=0.0 if draw(st.booleans()) else 0.9))
    else:
        knobs.append(knob("s", "float", lo=0.0, hi=0.9, default=0.5))
    bits = draw(st.lists(st.sampled_from([2, 4, 8, 16, 32]), min_size=1, max_size=4, unique=True))
    knobs.append(knob("b", "int", values=tuple(sorted(bits)), default=max(bits)))
    family = draw(st.booleans())
    if family:
        knobs.append(knob("f", "float", lo=0.0, hi=0.8, step=0.2, default=0.0, layers=names))
    use_method = draw(st.booleans())
    if use_method:
        knobs.append(knob("meth", "enum", members=("magnitude", "nm", "channel"), default="magnitude"))
    use_rank = draw(st.booleans())
    if use_rank:
        knobs.append(knob("r", "float", lo=0.25, hi=1.0, step=0.25, default=1.0))

    steps = []
    for i in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["prune", "quantize", "lowrank", "finetune", "prune_family"]))
        chosen = draw(st.lists(st.sampled_from(names[:-1] or names), min_size=1, max_size=len(names), unique=True))
        chosen = tuple(n for n in names if n in chosen)
        if kind == "prune":
            args = {"amount": kref("s")}
            if use_method:
                args["method"] = kref("meth")
            steps.append(step("prune", chosen, line=10 + i, **args))
        elif kind == "prune_family" and family:
            for n in chosen:
                steps.append(step("prune", (n,), line=10 + i, amount=kref("f", n)))
        elif kind == "quantize":
            steps.append(step("quantize", chosen, line=10 + i, bits=kref("b")))
        elif kind == "lowrank" and use_rank:
            steps.append(step("lowrank", chosen, line=10 + i, ratio=kref("r")))
        elif kind == "finetune":
            steps.append(step("finetune", line=10 + i))
    budget = []
    for j in range(draw(st.integers(1, 3))):
        m = draw(st.sampled_from(METERS))
        frac = draw(st.sampled_from([0.02, 0.1, 0.3, 0.6, 0.9, 1.0, 1.5]))
        if draw(st.booleans()):
            right = op("*", c(frac), meter(m, baseline=True))
        else:
            right = c(int(frac * 4 * sum(f.params for f in facts.layers)))
        o = draw(st.sampled_from(["<=", "<", "<=", ">="]))
        budget.append(line(meter(m), o, right, at=30 + j))
    return program(knobs, steps, budget, facts)


def settings(model):
    """A strategy of exact settings (instance name -> value) for a PipelineModel's knobs."""
    parts = {}
    for kv in model.knobs:
        if kv.finite:
            parts[kv.name] = st.sampled_from(kv.values)
        else:
            parts[kv.name] = st.integers(0, 1000).map(
                lambda k, kv=kv: kv.lo + (kv.hi - kv.lo) * Fraction(k, 1000))
    return st.fixed_dictionaries(parts)


__all__ = ["METERS", "programs", "settings"]


def describe(prog) -> str:
    """A short text of a generated program, for failure reports."""
    from kmr_dsl.verify.render import render_ir
    pipe = next(iter(prog.pipelines.values()))
    out = []
    for k in prog.knobs.values():
        dom = k.members if k.type == "enum" else k.domain
        out.append(f"knob {k.name}{'[l]' if k.is_family else ''} : {k.type} {dom} = {k.default}")
    out.append("widths " + " ".join(f"{f.in_features}->{f.out_features}" for f in pipe.model.facts.layers))
    for s in pipe.steps:
        args = ", ".join(f"{n} = {render_ir(v)}" for n, v in s.args if n in ("amount", "bits", "method", "ratio"))
        out.append(f"{s.rule.name}({args}) on {','.join(s.layers)}")
    for bound in pipe.budget:
        out.append(f"budget {render_ir(bound.left)} {bound.op} {render_ir(bound.right)}")
    return "\n".join(out)
