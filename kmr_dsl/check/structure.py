"""What a standard rule cannot do to the real model's structure, refused at check time.

Contract: `refuse(cx, rule, args, layers, facts, span)` runs after a step's layers are
resolved and reports, located at the step's selector:
- KMR240: `lowrank` or `lora` on a layer whose weight is tied to an embedding
  (`LayerFact.tied`): the embedding reads the layer's weight as its table, and factors
  or an adapter would make it compute a second matmul the cost model does not see (or
  untie it); quantization and unstructured pruning are fine (one table, changed once).
- KMR241: `prune` with `method = channel` (a literal, or an enum knob that can take
  `channel`) on a layer with no consumer link (`LayerFact.consumers` is empty: the
  model's output layer, or a layer whose output feeds something the runtime cannot
  shrink with it, such as a residual addition): `kmr run` could not remove its channels.
  A constant `amount` that removes no channel of the layer is not refused.
Rules are recognised by their implementation (`kmr_dsl.rules.*`), so a user rule of the
same name is not affected.
"""

from __future__ import annotations

import math

from kmr_dsl.check import program as P
from kmr_dsl.diagnostics import error

MAX_LISTED = 6


def _may_be(cx, value, member: str) -> bool:
    """Can this enum argument take `member` at some setting?"""
    if isinstance(value, P.EnumLit):
        return value.member == member
    if isinstance(value, P.KnobRef):
        knob = cx.knobs.get(value.knob)
        return knob is not None and member in knob.members
    if isinstance(value, P.If):
        return any(_may_be(cx, v, member) for v in (value.then, value.orelse))
    return False


def _removes_channels(amount, out_features: int) -> bool:
    if isinstance(amount, P.Const) and isinstance(amount.value, (int, float)):
        keep = max(1, int(math.floor(out_features * (1.0 - float(amount.value)) + 0.5)))
        return keep < out_features
    return True


def _listed(names: list[str]) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:MAX_LISTED])
    return shown + (f", … ({len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else "")


def refuse(cx, rule: P.Rule, args, layers, facts, span) -> None:
    if facts is None or not layers or args is None:
        return
    impl = rule.impl.partition(":")[0]
    values = dict(args)
    if impl in ("kmr_dsl.rules.lowrank", "kmr_dsl.rules.lora"):
        tied = [facts.layer(n) for n in layers if facts.layer(n).tied]
        if tied:
            cx.report(error("KMR240", span, f"`{rule.name}` cannot factor {_listed([f.name for f in tied])}: "
                            "its weight is tied to an embedding",
                            *(f"`{f.name}` is also the table of {', '.join(f'`{a}`' for a in f.tied)}" for f in tied),
                            hint="leave tied layers out of the selector (e.g. name = \"model.layers.*\"); "
                                 "quantize or prune them instead"))
    if impl == "kmr_dsl.rules.prune" and _may_be(cx, values.get("method"), "channel"):
        amount = values.get("amount")
        bad = [n for n in layers
               if not facts.layer(n).consumers and _removes_channels(amount, facts.layer(n).out_features)]
        if bad:
            cx.report(error("KMR241", span, f"channel pruning cannot shrink {_listed(bad)}: "
                            "no layer that consumes its output channels can shrink with it",
                            "channels can be removed where the output feeds the next Linear/Conv of a "
                            "chain (through activations, pooling, BatchNorm); the model's output layer, "
                            "and outputs that meet a residual addition, cannot lose channels",
                            hint="select hidden layers of a chain only, or use method = magnitude"))


__all__ = ["refuse"]
