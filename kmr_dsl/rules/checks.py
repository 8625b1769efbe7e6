"""Argument and precondition checks shared by the standard rules.

Contract: the checker proves a rule's `requires` statically, but an impl can be called
directly (tests, other runners) or with values the checker could not see, so each rule
re-checks its arguments and preconditions here and raises KmrError KMR405 naming the
rule, the failing condition and the layer. (How a rule rounds the counts it keeps is
`kmr_dsl.core.step`, shared with the verifier.)
"""

from __future__ import annotations

import math

from kmr_dsl.diagnostics import KmrError, error
from kmr_dsl.runtime import context
from kmr_dsl.runtime import layers as kl


def fail(rule: str, message: str, *notes: str, hint: str | None = None):
    raise KmrError(error("KMR405", context.span(), f"{rule}: {message}", *notes, hint=hint))


def number(rule: str, name: str, value, lo: float, hi: float, lo_open=False, hi_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        fail(rule, f"`{name}` must be a number, got {value!r}")
    ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        fail(rule, f"`{name}` = {value} is outside {left}{lo}, {hi}{right}")
    return float(value)


def integer(rule: str, name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        fail(rule, f"`{name}` must be an integer, got {value!r}")
    if not lo <= value <= hi:
        fail(rule, f"`{name}` = {value} is outside [{lo}, {hi}]")
    return int(value)


def choice(rule: str, name: str, value, options) -> object:
    if value not in options:
        fail(rule, f"`{name}` = {value!r} is not one of {', '.join(map(str, options))}")
    return value


def kinds(rule: str, name: str, layer, accepted) -> str:
    kind = kl.kind_of(layer)
    if kind not in accepted:
        fail(rule, f"layer `{name}` is a {kind}; the rule accepts {', '.join(accepted)}")
    return kind


def float_weights(rule: str, name: str, layer) -> None:
    """The `layer.bits >= 16` precondition of prune, lowrank and lora."""
    bits = kl.layer_bits(layer, name)
    if bits < 16:
        fail(rule, f"precondition `layer.bits >= 16` fails on `{name}` (bits = {bits})",
             hint="apply this rule before integer quantization")


def not_tied(rule: str, model, name: str, layer) -> None:
    """lowrank and lora cannot transform a weight an embedding also reads (KMR245 at check time)."""
    aliases = kl.tied_aliases(model, layer)
    if aliases:
        fail(rule, f"`{name}` is tied to the embedding {', '.join(f'`{a}`' for a in aliases)}",
             hint="leave tied layers out of the selector; quantize or prune them instead")


def no_adapter(rule: str, name: str, layer) -> None:
    from kmr_dsl.runtime.modules import LoRALinear
    if isinstance(layer, LoRALinear):
        fail(rule, f"precondition `layer.adapter_rank == 0` fails on `{name}` (an unmerged LoRA adapter)",
             hint="use lora(merge = true) before this step")


def no_input_scale(rule: str, name: str, layer) -> None:
    from kmr_dsl.runtime.modules import ScaledLinear
    if isinstance(layer, ScaledLinear):
        fail(rule, f"precondition `not layer.input_scale` fails on `{name}` (an explicit input scale from "
                   "smoothquant or awq)", hint=f"apply `{rule}` before smoothquant or awq")


__all__ = ["choice", "fail", "float_weights", "integer", "kinds", "no_adapter", "no_input_scale", "not_tied",
           "number"]
