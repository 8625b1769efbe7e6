"""What a standard rule cannot do to the real model's structure, refused at check time.

Contract: `refuse(cx, rule, args, layers, facts, span)` runs after a step's layers are
resolved and reports, located at the step's selector:
- KMR245: `lowrank`, `lora`, `smoothquant` or `awq` on a layer whose weight is tied to
  an embedding (`LayerFact.tied`): the embedding reads the layer's weight as its table,
  and factors or an adapter would make it compute a second matmul the cost model does
  not see (or untie it), a migrated scale would multiply the table's columns;
  quantization and unstructured pruning are fine (one table, changed once).
(Channel pruning of a layer without consumers, such as a residual stream, is refused
by the verifier at exactly the settings that shrink it: KMR304.)
Rules are recognised by their implementation (`kmr_dsl.rules.*`), so a user rule of the
same name is not affected.
"""

from __future__ import annotations

from kmr_dsl.core import program as P
from kmr_dsl.diagnostics import error

MAX_LISTED = 6


def _listed(names: list[str]) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:MAX_LISTED])
    return shown + (f", … ({len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else "")


def refuse(cx, rule: P.Rule, args, layers, facts, span) -> None:
    if facts is None or not layers or args is None:
        return
    impl = rule.impl.partition(":")[0]
    if impl in ("kmr_dsl.rules.lowrank", "kmr_dsl.rules.lora", "kmr_dsl.rules.smoothquant", "kmr_dsl.rules.awq"):
        tied = [facts.layer(n) for n in layers if facts.layer(n).tied]
        verb = "scale" if impl in ("kmr_dsl.rules.smoothquant", "kmr_dsl.rules.awq") else "factor"
        if tied:
            cx.report(error("KMR245", span, f"`{rule.name}` cannot {verb} {_listed([f.name for f in tied])}: "
                            "its weight is tied to an embedding",
                            *(f"`{f.name}` is also the table of {', '.join(f'`{a}`' for a in f.tied)}" for f in tied),
                            hint="leave tied layers out of the selector (e.g. name = \"model.layers.*\"); "
                                 "quantize or prune them instead"))


__all__ = ["refuse"]
