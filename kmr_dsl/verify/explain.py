"""`kmr check --explain METER`: an analytic meter's cost formula, layer by layer.

Contract: `explain(program, pipeline, meter) -> str` prints each layer's part of the
meter's cost model (kmr_dsl.verify.cost), the constant rest, the value at the default
setting and at the baseline. It sits above both the cost model and the pipeline models
(kmr_dsl.verify.obligations), so neither imports the other.
"""

from __future__ import annotations

from kmr_dsl.verify.cost import SIZE_LOW, UNITS, layer_terms, meter_expr
from kmr_dsl.verify.numeric import as_number, evaluate
from kmr_dsl.verify.obligations import pipeline_model


def explain(program, pipeline, meter: str) -> str:
    """The meter's cost model for a pipeline: each layer's formula, the constant, the total."""
    pipe = program.pipelines[pipeline] if isinstance(pipeline, str) else pipeline
    model = pipeline_model(program, pipe)
    parts, rest = layer_terms(model, meter, model.final)
    unit = UNITS[meter]
    env = model.knobs.env(model.knobs.defaults())
    lines = [f"{meter} ({unit}) of pipeline `{pipe.name}` = sum over layers + constant"]
    if meter == "trainable_params":
        lines[0] += f", and 0 unless model.trainable = {model.final.model['trainable']}"
    width = max((len(n) for n, _ in parts), default=0)
    for name, expr in parts:
        lines.append(f"  {name.ljust(width)} : {expr}")
    lines.append(f"  {'constant'.ljust(width)} : {rest}")
    total = meter_expr(model, meter, model.final)
    base = meter_expr(model, meter, model.initial)
    lines.append(f"at the default setting: {as_number(evaluate(total, env))} {unit}")
    lines.append(f"baseline (the unmodified model): {as_number(evaluate(base, {}))} {unit}")
    if meter == "size":
        low, base_low = (as_number(evaluate(meter_expr(model, SIZE_LOW, st), env))
                         for st in (model.final, model.initial))
        lines.append("the upper end of a range: the file lies in [low, high]; a `size <=` line reads the high end, "
                     "`size >=` and a relative line's baseline the low end (docs/artifact.md)")
        lines.append(f"low end at the default setting: {low} {unit}; at the baseline: {base_low} {unit}")
    return "\n".join(lines)


__all__ = ["explain"]
