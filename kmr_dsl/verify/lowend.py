"""The lower ends of fields the state knows only from above (`State.low`).

Contract: a rule's effect is the value the runtime ends up with, except where the
runtime computes weights afresh or cuts by a criterion the contract does not model.
Three such places in the standard rules give only an upper end of a field:
- a density effect branch that does not read the old density (`lowrank`'s `else 1`):
  the truncated SVD's factors are new values, and some may be exactly 0 (a zero column
  of a pruned matrix is a zero column of the right factor; even a dense matrix's
  singular vectors may hold zeros). Its lower end is 0 (`density_low`);
- a density capped by a group pattern, `min(layer.density, n / m)` (N:M in `prune` and
  `sparsegpt`): exact on a dense layer, on a sparse one each group keeps at most its
  non-zeros and loses at most what it loses when dense, so the lower end is
  max(0, density + n / m - 1) (the rounding as the upper end's, kmr_dsl/rules/prune.py);
- `lowrank` with `energy < 1` (kmr_dsl/rules/lowrank.py): the kept rank is the smallest
  that keeps `energy` of the squared singular values, at most the effect's
  ceil(ratio * rank) and at least 1. Its lower end is 1 (`rank_floor`).
Later steps carry a lower end through their effect (the standard rules' density and
rank effects are non-decreasing in the old value). A layer whose rank is a range has
density low end 0 (`clamp`): its element count is a range, and a density fraction of
the upper count is no lower end of the kept count at a lower one.

`follow` carries them through one step (verify/state.py calls it after each step).
The cost model reads a layer's fields with these overrides for the lower ends of its
meters (verify/cost.py LOW_ENDS); a line that needs a meter large reads that end
(verify/budget.py).
"""

from __future__ import annotations

import sympy as sp

from kmr_dsl.core.state import MATRIX_KINDS
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify import settling

# the runtime whose `energy` cut the rank effect leaves out
LOWRANK_IMPL = "kmr_dsl.rules.lowrank:apply"
RHO = sp.Symbol("rho")     # a layer's old density (or rank) in an effect, to see how it reads it


def density_low(value, rho, old):
    """The lower end of a density effect `value` (over `rho`, the old density) where the
    old density's lower end is `old`: a branch that does not read `rho` at 0, a cap
    `min(rho, c)` at max(0, old + c - 1) (at c itself on a dense layer, old = 1), every
    other branch at `old`."""
    if isinstance(value, sp.Piecewise):
        last = value.args[-1]
        whole = last.cond is A.TRUE
        out = density_low(last.expr, rho, old) if whole else A.ZERO
        for pair in reversed(value.args[:-1] if whole else value.args):
            out = A.ite(pair.cond, density_low(pair.expr, rho, old), out)
        return out
    if not isinstance(value, sp.Basic) or rho not in value.free_symbols:
        return A.ZERO
    if isinstance(value, sp.Min) and old != 1:
        reads = [a for a in value.args if rho in a.free_symbols]
        caps = [a for a in value.args if rho not in a.free_symbols]
        if len(reads) == 1 and caps:
            cap = caps[0]
            for c in caps[1:]:
                cap = A.min_(cap, c)
            return A.max_(A.ZERO, A.add(density_low(reads[0], rho, old), cap, -1))
        return A.ZERO                 # a cap the state cannot read: no lower end but 0
    return value.xreplace({rho: old})


def loosens(value, rho) -> bool:
    """Whether `density_low` gives `value` (a density effect over `rho`) a lower end below
    its value at the old density: a branch that does not read `rho`, a top-level cap
    `min(rho, c)`, or a piecewise without a last `True` branch. Otherwise the lower end is
    the effect at the old lower end, and a layer without one needs none (the state's own
    value; substituting into a large piecewise only to find that is slow in sympy)."""
    if isinstance(value, sp.Piecewise):
        return value.args[-1].cond is not A.TRUE or any(loosens(p.expr, rho) for p in value.args)
    if not isinstance(value, sp.Basic) or rho not in value.free_symbols:
        return True
    return isinstance(value, sp.Min)


def rank_floor(rule, params: dict):
    """The condition under which `rule`'s rank effect is only an upper end (its lower end
    then 1), or None."""
    if rule.impl != LOWRANK_IMPL or "energy" not in params:
        return None
    energy = params["energy"]
    if not isinstance(energy, sp.Basic) or A.is_boolean(energy):
        return A.TRUE                 # not modelled: the floor holds everywhere
    cond = A.compare("<", energy, 1)
    return None if cond is A.FALSE else cond


def clamp(low: dict) -> dict:
    """A layer's overrides with the density's lower end at 0 where its rank is a range."""
    return {**low, "density": A.ZERO} if "rank" in low else low


def put(state, layer: str, field: str, value, index: int | None = None) -> None:
    """Record `value` as `field`'s lower end on `layer` (dropped where it is the state's own
    value); `index`: the step that made it a range."""
    low = dict(state.low.get(layer, {}))
    if value == state.layers[layer][field]:
        low.pop(field, None)
        state.loose_at.pop((layer, field), None)
    else:
        low[field] = value
        if index is not None:
            state.loose_at[(layer, field)] = index
    low = clamp(low)
    if low:
        state.low[layer] = low
    else:
        state.low.pop(layer, None)


def follow(model, state, index: int, step, params: dict, targets: list, before: dict, layer_facts,
           evaluate) -> None:
    """The lower ends of the selected layers' density and rank after the step: each
    effect at the old lower end, a fresh density at 0, `lowrank`'s energy cut at rank 1,
    settled as the upper ends are; a changed shape caps a rank's lower end.
    `evaluate(expr, layer)`: an IR expression's value over a layer's fields."""
    effects = {e.field: e for e in step.rule.effects if e.scope == "layer" and e.field in ("density", "rank")}
    floor = rank_floor(step.rule, params) if "rank" in effects else None
    for layer in targets:
        fact = layer_facts.get(layer)
        if layer is None or fact is None or fact.kind not in MATRIX_KINDS or not fact.weight_params:
            continue
        old, new, low = before.get(layer, state.layers[layer]), state.layers[layer], state.low.get(layer, {})
        for f, effect in effects.items():
            try:
                value = evaluate(effect.expr, {**old, f: RHO})
            except A.NotModelled:
                value = None
            if not isinstance(value, sp.Basic) or A.is_boolean(value):
                put(state, layer, f, A.ZERO if f == "density" else A.ONE, index)
                continue
            if f not in low and (floor is None if f == "rank" else not loosens(value, RHO)):
                continue                  # exact before and after: the state's own value
            at = low.get(f, old[f])
            if value.has(sp.Piecewise) and larger_than(value, 60, at):
                # substituting into a large piecewise makes sympy fold it by distributing
                # its conditions (exponential): the trivial lower end instead, sound
                put(state, layer, f, A.ZERO if f == "density" else A.ONE, index)
                continue
            exact = value.xreplace({RHO: at})
            v = density_low(value, RHO, at) if f == "density" else exact
            made = v != exact or (f == "rank" and floor is not None)
            if not made and f not in low:
                continue                  # exact before and after: the state's own value
            if f == "rank" and floor is not None:
                v = A.ite(floor, A.ONE, v)
            if value is not RHO:          # an effect that keeps the field keeps its settled lower end
                v = settling.settle_all(model, {f: v}, new, fact, (layer, "rank") in state.origin)[f]
            if isinstance(v, sp.Basic) and v.atoms(sp.ITE):
                # sympy folded a piecewise into a condition the evaluators do not read:
                # the trivial lower end instead
                v = A.ZERO if f == "density" else A.ONE
            put(state, layer, f, v, index if made else None)
        if "rank" in state.low.get(layer, {}) and (new["in_features"] != old["in_features"]
                                                  or new["out_features"] != old["out_features"]):
            side = A.min_(new["in_features"], new["out_features"])
            put(state, layer, "rank", A.min_(state.low[layer]["rank"], side))


def larger_than(value, limit: int, *more) -> bool:
    """Whether `value` and `more` hold more than `limit` expression nodes (counted lazily)."""
    n = 0
    for e in (value, *more):
        if not isinstance(e, sp.Basic):
            continue
        for _ in sp.preorder_traversal(e):
            n += 1
            if n > limit:
                return True
    return False


def explain(steps, loose_at: dict) -> tuple[str, str]:
    """(the steps that made a field a range, what the ends depend on), for KMR303's note."""
    made = sorted({steps[i] for i in loose_at.values()}, key=lambda st: (st.span.line, st.span.col))
    where = ", ".join(f"`{st.rule.name}` at {st.span}" for st in made) or "a step"
    causes = []
    if any(st.rule.impl == LOWRANK_IMPL for st in made):
        causes.append("`lowrank`'s SVD factors are new weights, some of which may be exactly 0, and with "
                      "`energy < 1` it keeps a rank known only when it runs")
    if any(st.rule.impl != LOWRANK_IMPL for st in made):
        causes.append("an N:M pattern on a sparse layer keeps fewer than n of m where a group already holds zeros")
    return where, "; ".join(causes) or "a field known only from above"


__all__ = ["LOWRANK_IMPL", "RHO", "clamp", "density_low", "explain", "follow", "larger_than", "loosens", "put",
           "rank_floor"]
