"""One step's meaning on the abstract state, written once for numbers and symbols.

Contract: every function takes an arithmetic `ops` (an `Ops`): `NUMBERS` computes with
exact Python numbers (ints and Fractions; a float counts as the decimal its shortest
repr shows, so `0.3` is 3/10 everywhere), and the verifier passes its sympy `Ops`
(`kmr_dsl.verify.algebra.SYMBOLS`), so one definition serves the runtime's rules,
the property tests' expectations and the verifier's symbolic state (einops'
`_product` works the same way on ints and symbols).

What a step does besides the effects a rule states (docs/design.md, "State"):
- `settle(field, value, numel, ops)`: the whole numbers the runtime keeps when an
  effect makes a count fractional. Channels (`in_features`, `out_features`):
  round half up, at least 1. `rank`: ceil, at least 1 (lowrank keeps ceil(ratio *
  rank)). `density`: whole weights, `round_half_up(density * numel) / numel` of the
  layer's `numel` weight elements (magnitude pruning keeps round_half_up(nnz * (1 -
  amount)) weights). The runtime's rules call the same functions (kmr_dsl/rules/), so
  a prediction and a measurement round alike.
- `shrink_consumer(...)`: when a step changes a layer's `out_features`, every layer in
  its `consumers` has `in_features` scaled by new/old (a norm in between is sliced:
  its `out_features` too).
- `follow_rank(...)`: a layer whose shape changed has rank min(in, out) of its new
  shape, or min(rank, in, out) when a rule set its rank.
- heads (`prune(method = head)`): `heads` settles to round_half_up (the rule requires
  at least one head kept); `follow_heads(...)`: a projection (and the other projections
  of its attention) whose heads go from old to new has `out_features` scaled by new/old
  (whole heads: exact), and the output projection's `in_features` likewise
  (`shrink_consumer`).
- `shrink_condition(...)`: a layer whose output channels shrink needs a matrix
  consumer to shrink with it (the runtime refuses otherwise): the condition
  `new == old` when it has none, else None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

from kmr_dsl.core.state import MATRIX_KINDS

HALF = Fraction(1, 2)


@dataclass(frozen=True)
class Ops:
    """The arithmetic a step is evaluated in."""
    add: Callable
    sub: Callable
    mul: Callable
    div: Callable
    min: Callable
    max: Callable
    floor: Callable
    ceil: Callable
    eq: Callable            # a condition: a bool for numbers, a sympy relation for symbols


def exact(x):
    """An exact number: ints and Fractions as they are, a float as the decimal it shows."""
    if isinstance(x, float):
        return Fraction(repr(x))
    return x


def _num(f):
    return lambda *xs: f(*(exact(x) for x in xs))


NUMBERS = Ops(
    add=_num(lambda a, b: a + b), sub=_num(lambda a, b: a - b), mul=_num(lambda a, b: a * b),
    div=_num(lambda a, b: Fraction(a) / b), min=_num(min), max=_num(max),
    floor=_num(math.floor), ceil=_num(math.ceil), eq=_num(lambda a, b: a == b),
)


def round_half_up(x, ops: Ops = NUMBERS):
    """floor(x + 1/2): how the runtime rounds every count it keeps."""
    return ops.floor(ops.add(x, HALF))


def settle(field: str, value, numel=None, ops: Ops = NUMBERS):
    """The value the runtime ends up with when an effect sets `field` to `value`."""
    if field in ("in_features", "out_features"):
        return ops.max(1, round_half_up(value, ops))
    if field == "heads":
        return round_half_up(value, ops)
    if field == "rank":
        return ops.max(1, ops.ceil(value))
    if field == "density" and numel is not None:
        return ops.div(round_half_up(ops.mul(value, numel), ops), numel)
    return value


def dense_numel(weight_params: int, in0: int, out0: int, in_features, out_features, ops: Ops = NUMBERS,
                depthwise: bool = False):
    """Weight elements of a (never factorized) matrix layer at its current shape (a
    depthwise conv has one filter per channel: its in and out channels are one count)."""
    scale_in = ops.div(in_features, in0) if in0 and not depthwise else 1
    scale_out = ops.div(out_features, out0) if out0 else 1
    return ops.mul(ops.mul(weight_params, scale_in), scale_out)


def shrink_consumer(consumer: dict, old_out, new_out, ops: Ops = NUMBERS) -> dict:
    """The fields of a consumer of a layer whose out_features went from old to new."""
    ratio = ops.div(new_out, old_out)
    out = {"in_features": ops.mul(consumer["in_features"], ratio)}
    if _kind(consumer["kind"]) not in MATRIX_KINDS:
        out["out_features"] = ops.mul(consumer["out_features"], ratio)
    return out


def follow_heads(layer: dict, old_heads, new_heads, ops: Ops = NUMBERS) -> dict:
    """The fields of an attention projection whose head units went from old to new."""
    return {"heads": new_heads, "out_features": ops.mul(layer["out_features"], ops.div(new_heads, old_heads))}


def follow_rank(rank, in_features, out_features, rank_set: bool, ops: Ops = NUMBERS):
    """The rank of a layer after its shape changed (no rule set it in this step)."""
    side = ops.min(in_features, out_features)
    return ops.min(rank, side) if rank_set else side


def shrink_condition(old_out, new_out, consumer_kinds, ops: Ops = NUMBERS):
    """None when the layer has a matrix consumer; else the condition that it keeps its channels."""
    if any(_kind(k) in MATRIX_KINDS for k in consumer_kinds):
        return None
    return ops.eq(new_out, old_out)


def _kind(kind) -> str:
    return getattr(kind, "member", kind)    # the verifier's EnumValue, or a plain string


def shares(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights`, each share at most its weight, summing to
    `total` (largest remainder first; ties to the earlier entry)."""
    whole = sum(weights)
    if whole == 0 or total <= 0:
        return [0] * len(weights)
    exact = [total * w / whole for w in weights]
    out = [min(int(e), w) for e, w in zip(exact, weights)]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - int(exact[i])), i))
    left = total - sum(out)
    for i in order * 2:
        if left == 0:
            break
        if out[i] < weights[i]:
            out[i] += 1
            left -= 1
    return out


def nm_tail_keeps(rows: int, cols: int, n: int, m: int) -> list[int]:
    """How many weights of each row's last, shorter group N:M pruning keeps on a dense
    layer: together with n of every full group of m, exactly round_half_up(rows * cols *
    n / m) weights, the count the effect `density * n / m` settles to; the tails share
    what the full groups leave in proportion (largest remainder first)."""
    tail = cols % m
    total = int(round_half_up(Fraction(rows * cols * n, m)))
    return shares(total - rows * (cols - tail) // m * n, [tail] * rows)


__all__ = ["nm_tail_keeps", "shares", "HALF", "NUMBERS", "Ops", "dense_numel", "exact", "follow_heads", "follow_rank", "round_half_up", "settle",
           "shrink_condition", "shrink_consumer"]
