"""`verify`: every proof obligation of a checked program, in the order of spec section 7.

Contract: `verify(program, pipeline=None, rlimit=..., timeout_s=...)` verifies one
pipeline (or all, in declaration order): composability of every step, then budget
feasibility, then the warnings, and returns a `VerifyReport` (results, diagnostics,
exit code 0/1/3). The same program gives the same verdicts, witnesses, cores and
messages every time: knobs, layers and core members are visited in declaration order,
every solver is fresh with a fixed seed, and limits are Z3 resource limits (the
wall-clock `timeout_s` is only a safety net: a run that hits it may differ from one
that does not, which is why the default rlimit is reached first).

`pipeline_model(program, pipeline)` builds (and caches, per program object) the
symbolic state of a pipeline; predict/explain share it.
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import replace

from kmr_dsl.core.program import CheckedProgram, MeterRef, Pipeline
from kmr_dsl.core.walk import nodes
from kmr_dsl.diagnostics import error
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify.budget import budget_lines
from kmr_dsl.verify.composability import check_composability
from kmr_dsl.verify.definedness import undefined_lines
from kmr_dsl.verify.feasibility import check_feasibility
from kmr_dsl.verify.report import (DEFAULT_RLIMIT, DEFAULT_TIMEOUT_S, Limits, ObligationResult, Verdict,
                                   VerifyReport, merge_diagnostics, own_context)
from kmr_dsl.verify.state import PipelineModel
from kmr_dsl.verify.stepping import build_model
from kmr_dsl.verify.warnings import check_warnings, unused_declarations

_CACHE_SIZE = 8
# id(program) -> (program, {pipeline name: model}); the program is held so its id stays unique
_MODELS: OrderedDict[int, tuple[CheckedProgram, dict[str, PipelineModel]]] = OrderedDict()


def clear_caches() -> None:
    """Forget every cached model, compiled expression and encoding constant (benchmarks)."""
    from kmr_dsl.verify import bounds, numeric, variables
    _MODELS.clear()
    numeric.compile_expr.cache_clear()
    bounds._DOMAINS.clear()
    variables._NUMERALS.clear()


def pipeline_model(program: CheckedProgram, pipeline: Pipeline | str) -> PipelineModel:
    pipe = program.pipelines[pipeline] if isinstance(pipeline, str) else pipeline
    entry = _MODELS.get(id(program))
    if entry is None or entry[0] is not program:
        entry = (program, {})
        _MODELS[id(program)] = entry
        while len(_MODELS) > _CACHE_SIZE:
            _MODELS.popitem(last=False)
    _MODELS.move_to_end(id(program))
    models = entry[1]
    if pipe.name not in models or models[pipe.name].pipeline is not pipe:
        models[pipe.name] = build_model(program, pipe)
    return models[pipe.name]


@contextmanager
def _no_cycle_collection():
    """Pause the cyclic garbage collector while verifying.

    Why: a 1000-layer model builds millions of small, acyclic sympy nodes, and every
    one of them is traversed again by each full collection the allocations trigger:
    measured at 20-25% of `verify`'s CPU time (benchmarks/bench_verify_scale.py).
    Reference counting still frees everything that is not in a cycle. On the way out,
    what verify built and keeps (its caches: about 800,000 objects at 3,000 layers) goes
    straight to the oldest generation (gc.freeze, then gc.unfreeze): else the first
    young collection after verify traverses all of it (measured: about 0.4 s at 3,000
    layers, 8% of `verify`), only to promote it there. Nothing is exempt from collection:
    cycles made meanwhile (and the caller's young objects, promoted with them) are
    collected by the next full collection instead of a young one.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.freeze()          # every tracked object to the permanent generation,
            gc.unfreeze()        # and back into the oldest
            gc.enable()


def verify(program: CheckedProgram, pipeline: str | None = None, rlimit: int = DEFAULT_RLIMIT,
           timeout_s: float = DEFAULT_TIMEOUT_S, use_bounds: bool = True) -> VerifyReport:
    """Prove composability and budget feasibility of a pipeline (all pipelines when None).

    use_bounds=False skips the cheap bounds and asks Z3 directly (for benchmarks and tests).
    """
    with _no_cycle_collection(), own_context():
        return _verify(program, pipeline, rlimit, timeout_s, use_bounds)


def _verify(program: CheckedProgram, pipeline: str | None, rlimit: int, timeout_s: float,
            use_bounds: bool) -> VerifyReport:
    limits = Limits(rlimit, timeout_s)
    report = VerifyReport()
    if pipeline is not None:
        pipes = [program.pipelines[pipeline]]
    else:
        pipes = list(program.pipelines.values())
    for pipe in pipes:
        try:
            _verify_pipeline(program, pipe, limits, use_bounds, report)
        except Exception as exc:  # noqa: BLE001 - a verifier bug must reach the user as UNKNOWN, not a traceback
            reason = f"internal error in the verifier: {type(exc).__name__}: {exc}"
            report.results.append(ObligationResult("feasibility", Verdict.UNKNOWN, pipe.span,
                                                   f"pipeline `{pipe.name}`: unknown", pipe.name, reason=reason,
                                                   method="internal"))
            report.diagnostics.append(error("KMR303", pipe.span, f"cannot verify pipeline `{pipe.name}`", reason,
                                            hint="this is a bug in KMR; please report it with the program"))
    if pipeline is None:
        report.diagnostics.extend(unused_declarations(program))
    report.diagnostics = merge_diagnostics(report.diagnostics)
    return report


def _verify_pipeline(program, pipe: Pipeline, limits: Limits, use_bounds: bool, report: VerifyReport) -> None:
    try:
        model = pipeline_model(program, pipe)
    except A.NotModelled as exc:
        reason = str(exc)
        report.results.append(ObligationResult("feasibility", Verdict.UNKNOWN, pipe.span,
                                               f"pipeline `{pipe.name}` could not be modelled", pipe.name,
                                               reason=reason, method="model"))
        report.diagnostics.append(error("KMR303", pipe.span, f"cannot verify pipeline `{pipe.name}`", reason))
        return
    results, diags = check_composability(model, limits)
    report.results.extend(results)
    report.diagnostics.extend(diags)
    lines, runtime = budget_lines(model)
    for pos, (setting, divisor) in undefined_lines(model, lines, limits).items():
        ln = lines[pos]
        where = f"`{divisor}` is 0 at {setting}" if setting else f"`{divisor}` may be 0 (the solver could not rule it out)"
        report.diagnostics.append(error(
            "KMR305", ln.span, f"budget line `{ln.text}` divides by zero for some knob setting", where,
            hint="exclude 0 from the divisor's range, e.g. `knob k : int in [1, 4]` or `float in (0.0, 1.0]`"))
        lines[pos] = replace(ln, problem=f"undefined where {where}", undefined=True)
    lines = _pooled_lines(model, lines)
    feas, fdiags = check_feasibility(model, lines, limits, use_bounds)
    report.results.append(feas)
    report.diagnostics.extend(fdiags)
    report.diagnostics.extend(check_warnings(model, lines, runtime, limits,
                                             feasible=feas.verdict is not Verdict.REFUTED, use_bounds=use_bounds))


# meters whose cost model does not read a layer's density
_DENSITY_FREE = ("params", "macs", "trainable_params")


def _pooled_lines(model: PipelineModel, lines: list) -> list:
    """Lines over a density-reading meter are unknown when a step changed densities that
    a global pruning fixed only in total (verify/pools.py; the step itself is KMR303)."""
    pooled = [r for r in model.requirements if r.kind == "pooled"]
    if not pooled:
        return lines
    layers = ", ".join(sorted({f"`{r.layer}`" for r in pooled}))
    why = f"the density of {layers} after step {pooled[0].step_index + 1} `{pooled[0].step.rule.name}` is not known"
    out = []
    for ln in lines:
        meters = {n.name for n in nodes(ln.constraint) if isinstance(n, MeterRef)}
        if not ln.problem and not meters <= set(_DENSITY_FREE):
            ln = replace(ln, problem=why)
        out.append(ln)
    return out


__all__ = ["clear_caches", "pipeline_model", "verify"]
