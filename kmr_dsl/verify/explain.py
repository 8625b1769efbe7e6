"""`kmr check --explain METER`: an analytic meter's cost formula, layer by layer.

Contract: `explain(program, pipeline, meter) -> str` prints each layer's part of the
meter's cost model (kmr_dsl.verify.cost), the constant rest, the value at the default
setting and at the baseline. It sits above both the cost model and the pipeline models
(kmr_dsl.verify.obligations), so neither imports the other.
"""

from __future__ import annotations

from kmr_dsl.verify.cost import UNITS, layer_terms, meter_expr
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
        lines.append("an upper bound of the file: margins for packed bytes, header padding and the recipe")
    return "\n".join(lines)


__all__ = ["explain"]
