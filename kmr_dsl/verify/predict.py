"""Numeric predictions of the analytic meters, for the runtime and for search.

Contract:
- `predict(program, pipeline, setting) -> {meter: float}`: every analytic meter
  (params, nonzero, size, macs, trainable_params) of the pipeline's result at a
  setting (knob instance or family name -> value; missing knobs take their defaults),
  from the same cost model the proofs use; `baseline=True` gives the unmodified
  model's values instead. A meter the cost model cannot evaluate at that setting (one
  that a refuted step makes meaningless: head pruning that keeps no head leaves a layer
  of 0 weights, whose density is 0/0) is left out, as the other functions here leave
  out what they cannot evaluate: `kmr run --force` at such a setting runs on (and the
  step refuses) instead of failing in the prediction.
- `size_range(program, pipeline, setting) -> (low, high)`: the range the file's size
  lies in (`predict`'s `size` is its upper end; verify/cost.py says why a range);
  `meter_range(program, pipeline, meter, setting)` the same for `size` or `nonzero`
  (a range after a truncating `lowrank`, its low end equal to `predict`'s elsewhere).
- `is_feasible(program, pipeline, setting) -> bool`: whether the setting may meet every
  analytic budget line. Search calls it to skip settings, so it errs towards True: a
  tie within 1e-9 (relative) counts as met, a `size` line counts as met when some size
  in the range meets it, and a line the verifier cannot model counts as met (the run
  will measure it).
- `lines_met(program, pipeline, setting) -> {budget index: bool}`: per analytic line,
  whether the cost model says the setting surely meets it (at the worst end of
  `size`'s range, as feasibility proves; no tie allowance); lines the verifier cannot
  model are left out.
- `predict_layers(program, pipeline, setting) -> {layer: {field: float}}`: the numeric
  fields of every layer's final abstract state (density, bits, rank, in_features,
  out_features, adapter_rank) at a setting; a field the state cannot express at that
  setting is left out; `baseline=True` gives the loaded model's. Search's quality
  prior reads it (kmr_dsl.search.prior).
Both compile their expressions once per pipeline (float closures) and cache them.
"""

from __future__ import annotations

from kmr_dsl.core.program import CheckedProgram, Pipeline
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify.budget import budget_lines, holds_float
from kmr_dsl.core.state import ANALYTIC_METERS, LAYER_FIELDS
from kmr_dsl.verify.budget import holds
from kmr_dsl.verify.cost import LOW_ENDS, meter_expr
from kmr_dsl.verify.numeric import Unevaluable, compile_expr
from kmr_dsl.verify.obligations import pipeline_model

TIE = 1e-9


def _compiled(model, key, build):
    return model.compiled.get(key, build)


def predict(program: CheckedProgram, pipeline: Pipeline | str, setting: dict | None = None,
            baseline: bool = False) -> dict[str, float]:
    model = pipeline_model(program, pipeline)
    env = model.knobs.env(model.knobs.complete(setting))
    state = model.initial if baseline else model.final
    out = {}
    for meter in ANALYTIC_METERS:
        try:
            f = _compiled(model, ("predict", meter, baseline),
                          lambda m=meter: compile_expr(meter_expr(model, m, state), exact=False))
            out[meter] = float(f(env))
        except (Unevaluable, ZeroDivisionError, A.NotModelled):
            continue            # not modelled, or not evaluable at this setting: left out
    return out


def size_range(program: CheckedProgram, pipeline: Pipeline | str, setting: dict | None = None,
               baseline: bool = False) -> tuple[float, float]:
    return meter_range(program, pipeline, "size", setting, baseline)


def meter_range(program: CheckedProgram, pipeline: Pipeline | str, meter: str, setting: dict | None = None,
                baseline: bool = False) -> tuple[float, float]:
    """(low, high) of a ranged meter (`size`, `nonzero`; verify/cost.py LOW_ENDS)."""
    model = pipeline_model(program, pipeline)
    env = model.knobs.env(model.knobs.complete(setting))
    state = model.initial if baseline else model.final
    out = []
    for meter in (LOW_ENDS[meter], meter):
        f = _compiled(model, ("predict", meter, baseline),
                      lambda m=meter: compile_expr(meter_expr(model, m, state), exact=False))
        out.append(float(f(env)))
    return out[0], out[1]


def lines_met(program: CheckedProgram, pipeline: Pipeline | str, setting: dict | None = None) -> dict[int, bool]:
    model = pipeline_model(program, pipeline)
    env = model.knobs.env(model.knobs.complete(setting))
    lines = _compiled(model, ("lines",), lambda: [(ln.index, ln.op, compile_expr(ln.expr, exact=False))
                                                  for ln in budget_lines(model)[0] if not ln.problem])
    out = {}
    for index, op, f in lines:
        try:
            out[index] = bool(holds(op, float(f(env))))
        except (Unevaluable, ZeroDivisionError):
            continue
    return out


def is_feasible(program: CheckedProgram, pipeline: Pipeline | str, setting: dict | None = None) -> bool:
    model = pipeline_model(program, pipeline)
    env = model.knobs.env(model.knobs.complete(setting))
    checks = _compiled(model, ("feasible",), lambda: _line_checks(model))
    for op, f, scale in checks:
        try:
            g = float(f(env))
        except (Unevaluable, ZeroDivisionError):
            continue
        if not holds_float(op, g, TIE * max(1.0, scale(env))):
            return False
    return True


# the numeric fields of the state (params is a static fact)
LAYER_NUMBERS = tuple(f for f, t in LAYER_FIELDS.items() if t in ("int", "float") and f != "params")


def predict_layers(program: CheckedProgram, pipeline: Pipeline | str, setting: dict | None = None,
                   baseline: bool = False) -> dict[str, dict[str, float]]:
    model = pipeline_model(program, pipeline)
    env = model.knobs.env(model.knobs.complete(setting))
    state = model.initial if baseline else model.final
    fields = _compiled(model, ("layers", baseline), lambda: _layer_fields(state))
    out: dict[str, dict[str, float]] = {}
    for layer, compiled in fields.items():
        row = out[layer] = {}
        for name, f in compiled:
            try:
                row[name] = float(f(env))
            except (Unevaluable, ZeroDivisionError, TypeError, ValueError):
                continue
    return out


def _layer_fields(state) -> dict[str, list]:
    out = {}
    for layer, st in state.layers.items():
        out[layer] = []
        for name in LAYER_NUMBERS:
            try:
                out[layer].append((name, compile_expr(st[name], exact=False)))
            except (Unevaluable, KeyError, TypeError, ValueError):
                continue
    return out


def _line_checks(model):
    lines, _ = budget_lines(model)
    out = []
    for ln in lines:
        if ln.problem:
            continue
        ln = ln.optimistic or ln        # errs towards met: the small end of `size`'s range
        left, right = compile_expr(ln.left, exact=False), compile_expr(ln.right, exact=False)
        out.append((ln.op, compile_expr(ln.expr, exact=False),
                    lambda env, left=left, right=right: abs(float(left(env))) + abs(float(right(env)))))
    return out


__all__ = ["LAYER_NUMBERS", "is_feasible", "lines_met", "meter_range", "predict", "predict_layers", "size_range"]
