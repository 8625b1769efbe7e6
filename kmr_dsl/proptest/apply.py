"""One rule-contract case on a real (generated) model: build, apply, measure, compare.

Contract: `run_case(rule, fn, case, seed, bounds)` builds the case's model
(`models.build`), reads its state (`runtime.state.measure_state`) and evaluates the
rule's `requires` there; if one is false it returns at once with `unmet` set (the
rule never runs where its precondition fails). Otherwise it measures the model's
facts and artifact size, calls `fn(model, layers, **arguments)` inside a RunContext
(seed, baseline = an untouched copy, span = the rule), and returns a `CaseOutcome`:
`refused` when the implementation raised a KMR diagnostic (a deliberate refusal), else
`problems`, one line per disagreement: an exception from the implementation, a result
that is not a model or no longer runs on its example input, each state mismatch
(`expected.compare`), each meter mismatch (`costcheck.meter_mismatches`).
`impl_of(rule)` imports the implementation as the runtime does (the rule's folder
first, then the Python path; KMR407 when it cannot).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn

from kmr_dsl.core.program import Rule
from kmr_dsl.diagnostics import KmrError
from kmr_dsl.proptest import costcheck, expected, models
from kmr_dsl.runtime import context, forward, introspect, meters, state
from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime.user_code import import_impl


@dataclass
class CaseOutcome:
    unmet: object = None                      # the requires clause that was false
    refused: str | None = None                # the implementation's own refusal
    problems: list[str] = field(default_factory=list)
    mismatches: list[expected.Mismatch] = field(default_factory=list)


def rule_base_dir(rule: Rule) -> str:
    """The folder a rule's impl module is imported from first: its declaring file's."""
    return str(Path(rule.span.file).parent) if rule.span.line > 0 else "."


def impl_of(rule: Rule, trust: bool = False):
    return import_impl(rule.impl, rule_base_dir(rule), rule.span, trust)


def _weights(model: nn.Module, after: dict) -> dict[str, tuple[int, int]]:
    """layer -> (output rows, weight elements), for the density tolerance."""
    out = {}
    for name, layer in kl.logical_layers(model):
        numel = sum(kl.leaf_nonzero(leaf)[1] for _, leaf in kl.leaves(name, layer))
        out[name] = (int(after["layers"].get(name, {}).get("out_features", 1)), int(numel) or 1)
    return out


def _measure(model: nn.Module, arch: models.Arch, recipe: dict) -> dict[str, float]:
    return {
        "params": float(meters.params(model)),
        "nonzero": float(meters.nonzero(model)),
        "macs": float(meters.macs(model, arch.input_shape, arch.input_dtype)),
        "trainable_params": float(meters.trainable_params(model)),
        "size": float(meters.size(model, recipe)),
    }


def _arguments(rule: Rule, case, baseline: nn.Module) -> dict:
    args = dict(case.args)
    data = models.dataset(case.arch, case.data_size, case.arch.seed) if case.data_size else None
    for p in rule.params:
        if p.type == "data":
            args[p.name] = data
        elif p.type == "model":
            args[p.name] = baseline
    return args


def run_case(rule: Rule, fn, case, seed: int, bounds: dict) -> CaseOutcome:
    # one thread: on models this small, waking a thread pool costs more than the work
    # (10-30x slower on a loaded 2-core machine); the caller's setting is restored after
    with meters.fixed_threads(1):
        return _run_case(rule, fn, case, seed, bounds)


def _run_case(rule: Rule, fn, case, seed: int, bounds: dict) -> CaseOutcome:
    out = CaseOutcome()
    model = models.build(case.arch)
    example = forward.example_input(case.arch.input_shape, case.arch.input_dtype)
    before = state.measure_state(model, example)
    params = dict(case.args)
    # the cases always pass data (`_arguments`), so a `requires P != none` holds
    params.update({p.name: "data" for p in rule.params if p.type == "data"})
    try:
        out.unmet = expected.requires_failing(rule, before, case.layer, params)
    except Exception as exc:  # noqa: BLE001 - a contract that cannot be evaluated is a broken contract
        out.problems.append(f"its requires cannot be evaluated here: {type(exc).__name__}: {exc}")
        return out
    if out.unmet is not None:
        return out
    baseline = copy.deepcopy(model)
    facts = introspect.model_facts_from_module(model, case.arch.input_shape, case.arch.input_dtype)
    recipe = {"pipeline": "contract", "rule": rule.name}
    size_before = float(meters.size(model, recipe))
    cost_before = costcheck.cost_at(facts, before)["size"]
    layers = [(case.layer, model.get_submodule(case.layer))] if case.layer is not None else []
    ctx = context.RunContext(seed=seed, baseline=baseline, span=rule.span, threads=1)
    with context.use(ctx):
        try:
            result = fn(model, layers, **_arguments(rule, case, baseline))
        except KmrError as exc:
            out.refused = exc.diagnostic.message
            return out
        except Exception as exc:  # noqa: BLE001 - the implementation's bug is the finding
            out.problems.append(f"the implementation raised {type(exc).__name__}: {exc}")
            return out
    model = model if result is None else result
    if not isinstance(model, nn.Module):
        out.problems.append(f"the implementation returned {type(model).__name__}, not a model")
        return out
    try:
        after = state.measure_state(model, example)
        measured = _measure(model, case.arch, recipe)
    except Exception as exc:  # noqa: BLE001
        out.problems.append(f"the result no longer runs on its example input: {type(exc).__name__}: {exc}")
        return out
    try:
        predicted = expected.predict(rule, before, case.layer, params)
    except Exception as exc:  # noqa: BLE001
        out.problems.append(f"its effects cannot be evaluated here: {type(exc).__name__}: {exc}")
        return out
    upper = frozenset(f for f, spec in bounds.items() if spec is None or params.get(spec[0], spec[1]) != spec[1])
    consumers = {f.name: tuple(f.consumers) for f in facts.layers}
    coupled = {f.name: tuple(f.coupled) for f in facts.layers}
    depthwise = frozenset(f.name for f in facts.layers if f.depthwise)
    out.mismatches, rank_set = expected.compare(before, after, case.layer, predicted, consumers,
                                                _weights(model, after), upper, coupled, depthwise)
    out.problems += [m.text() for m in out.mismatches]
    if not out.mismatches:
        # meters are compared only on a state that matches: otherwise they repeat the mismatch
        cost = costcheck.cost_at(facts, after, rank_set)
        out.problems += costcheck.meter_mismatches(measured, cost, (size_before, cost_before))
    return out


__all__ = ["CaseOutcome", "impl_of", "rule_base_dir", "run_case"]
