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
Besides, a kept-weight count the arithmetic cannot round (verify/settling.py `settle`:
over two knobs, or with more than rounding.MAX_PIECES values) is a range: the state
holds round_half_up's upper end x + 1/2, and its lower end x - 1/2 is recorded here
(the step's `unrounded` ends), both within [0, elements].
Later steps carry a lower end through their effect (the standard rules' density and
rank effects are non-decreasing in the old value). A layer whose rank is a range has
density low end 0 (`clamp`): its element count is a range, and a density fraction of
the upper count is no lower end of the kept count at a lower one. A global pruning
keeps round_half_up(total) weights of its whole selection: the lower ends of its
layers are rounded in total too (`_pooled`), as the state's own densities are
(verify/pools.py), never each on its own (half a weight per layer above the total's).

`follow` carries them through one step (verify/stepping.py calls it after each step).
The cost model reads a layer's fields with these overrides for the lower ends of its
meters (verify/cost.py LOW_ENDS); a line that needs a meter large reads that end
(verify/budget.py).
"""

from __future__ import annotations

import sympy as sp

from kmr_dsl.core.state import MATRIX_KINDS
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify import settling
from kmr_dsl.verify.substitution import substitute

# the runtime whose `energy` cut the rank effect leaves out
LOWRANK_IMPL = "kmr_dsl.rules.lowrank:apply"
# a layer's old density (or rank) in an effect, to see how it reads it (a Dummy: a knob
# named `rho` is another symbol)
RHO = sp.Dummy("rho")


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
    if not isinstance(value, sp.Basic) or not reads(value, rho):
        return A.ZERO
    if isinstance(value, sp.Min) and old != 1:
        reads_rho = [a for a in value.args if reads(a, rho)]
        caps = [a for a in value.args if not reads(a, rho)]
        if len(reads_rho) == 1 and caps:
            cap = caps[0]
            for c in caps[1:]:
                cap = A.min_(cap, c)
            return A.max_(A.ZERO, A.add(density_low(reads_rho[0], rho, old), cap, -1))
        return A.ZERO                 # a cap the state cannot read: no lower end but 0
    return substitute(value, {rho: old})


def loosens(value, rho) -> bool:
    """Whether `density_low` gives `value` (a density effect over `rho`) a lower end below
    its value at the old density: a branch that does not read `rho`, a top-level cap
    `min(rho, c)`, or a piecewise without a last `True` branch. Otherwise the lower end is
    the effect at the old lower end, and a layer without one needs none (the state's own
    value, without computing it again)."""
    if isinstance(value, sp.Piecewise):
        return value.args[-1].cond is not A.TRUE or any(loosens(p.expr, rho) for p in value.args)
    if not isinstance(value, sp.Basic) or not reads(value, rho):
        return True
    return isinstance(value, sp.Min)


def reads(value, symbol) -> bool:
    """Whether `symbol` occurs in `value`: `symbol in value.free_symbols` for the
    verifier's trees (they bind no variables, algebra.knob_symbols), without a set per
    node. Why: asked of every prune step's density effect (measured ~1% of verify at
    3,000 layers through free_symbols)."""
    stack = [value]
    while stack:
        e = stack.pop()
        if isinstance(e, sp.Symbol):
            if e == symbol:
                return True
        else:
            stack.extend(e._args)
    return False


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
           evaluate, ranked=A.FALSE, raw: dict | None = None, unrounded: dict | None = None) -> None:
    """The lower ends of the selected layers' density and rank after the step: each
    effect at the old lower end, a fresh density at 0, `lowrank`'s energy cut at rank 1,
    settled as lower ends (a count the arithmetic cannot round half a weight below the
    product, settling.settle); a changed shape caps a rank's lower end.
    `evaluate(expr, layer)`: an IR expression's value over a layer's fields. Where the
    step ranks its selection together (`ranked`, pools.ranked_together; `raw`: each
    layer's density before rounding and weight elements, as pools.settle_pool rounds
    them), the densities' lower ends are rounded in total (`_pooled`). `unrounded`:
    layer -> {field: its lower end} where the step's own count was not rounded exactly
    (the state holds the upper end of that range; None: a pool's total, `_pooled`)."""
    effects = {e.field: e for e in step.rule.effects if e.scope == "layer" and e.field in ("density", "rank")}
    floor = rank_floor(step.rule, params) if "rank" in effects else None
    joint = ranked is not A.FALSE and raw is not None and len(raw) >= 2
    unrounded = unrounded or {}
    shares: dict = {}                   # layer -> (density's lower end before rounding, made a range here)
    for layer in targets:
        fact = layer_facts.get(layer)
        if layer is None or fact is None or fact.kind not in MATRIX_KINDS or not fact.weight_params:
            continue
        old, new, low = before.get(layer, state.layers[layer]), state.layers[layer], state.low.get(layer, {})
        ends = unrounded.get(layer, {})
        for f, effect in effects.items():
            try:
                value = evaluate(effect.expr, {**old, f: RHO})
            except A.NotModelled:
                value = None
            if not isinstance(value, sp.Basic) or A.is_boolean(value):
                put(state, layer, f, A.ZERO if f == "density" else A.ONE, index)
                continue
            if f not in low and f not in ends and (floor is None if f == "rank" else not loosens(value, RHO)):
                continue                  # exact before and after: the state's own value
            at = low.get(f, old[f])
            exact = substitute(value, {RHO: at})
            v = density_low(value, RHO, at) if f == "density" else exact
            made = v != exact or (f == "rank" and floor is not None) or f in ends
            if not made and f not in low:
                continue                  # exact before and after: the state's own value
            if f == "rank" and floor is not None:
                v = A.ite(floor, A.ONE, v)
            if joint and f == "density" and layer in raw:
                shares[layer] = (v, made)
                continue
            if ends.get(f) is not None and f not in low and v == exact:
                v = ends[f]               # the step's own count's range, as settled with its upper end
            elif value is not RHO:        # an effect that keeps the field keeps its settled lower end
                v = settling.settle_all(model, {f: v}, new, fact, (layer, "rank") in state.origin, low=True)[f]
            put(state, layer, f, _readable(v, f), index if made else None)
            if f in ends:
                state.unrounded.add(index)
        if "rank" in state.low.get(layer, {}) and (new["in_features"] != old["in_features"]
                                                  or new["out_features"] != old["out_features"]):
            side = A.min_(new["in_features"], new["out_features"])
            put(state, layer, "rank", A.min_(state.low[layer]["rank"], side))
    if shares:
        _pooled(model, state, index, ranked, raw, shares, layer_facts)


def _pooled(model, state, index: int, ranked, raw: dict, shares: dict, layer_facts) -> None:
    """The densities' lower ends after a step that ranks its selection together: the
    runtime keeps round_half_up(total) of the whole selection, so the lower end is that
    of the total, rounded once (settling.settle_total), not the sum of each layer's
    rounded lower end (up to half a weight per layer above it: a `nonzero >=` line
    proved that a run then missed). Every layer of the selection takes part: one without
    a lower end of its own with its unrounded share (`raw`), one whose rank is a range
    not at all (its density's lower end is 0, `clamp`). Where a knob decides whether the
    step ranks together, the other branch keeps each layer's own rounding."""
    parts = {l: (shares[l][0] if l in shares else d, n) for l, (d, n) in raw.items()
             if "rank" not in state.low.get(l, {})}
    loose: set = set()
    try:
        total = settling.settle_total(model, parts, low=True, loose=loose) if len(parts) >= 2 else \
            {l: settling.settle_all(model, {"density": d}, state.layers[l], layer_facts.get(l),
                                    (l, "rank") in state.origin, low=True)["density"] for l, (d, _) in parts.items()}
    except A.NotModelled:
        total = {l: A.ZERO for l in parts}
    if loose:
        state.unrounded.add(index)
    for layer in parts:
        if ranked is A.TRUE:
            v = total[layer]
        else:
            own = state.low.get(layer, {}).get("density", state.layers[layer]["density"])
            if layer in shares:
                own = settling.settle_all(model, {"density": shares[layer][0]}, state.layers[layer],
                                          layer_facts.get(layer), (layer, "rank") in state.origin,
                                          low=True)["density"]
            v = A.ite(ranked, total[layer], own)
        put(state, layer, "density", _readable(v, "density"), index if shares.get(layer, (0, False))[1] else None)


def _readable(v, f: str):
    """`v`, or the trivial lower end where sympy folded a piecewise into a condition the
    evaluators do not read (ITE)."""
    if isinstance(v, sp.Basic) and v.atoms(sp.ITE):
        return A.ZERO if f == "density" else A.ONE
    return v


def explain(steps, loose_at: dict, unrounded: set = frozenset()) -> tuple[str, str]:
    """(the steps that made a field a range, what the ends depend on), for KMR303's note;
    `unrounded`: the indices of steps whose kept-weight count was not rounded exactly."""
    made = sorted({steps[i] for i in {*loose_at.values(), *unrounded}}, key=lambda st: (st.span.line, st.span.col))
    where = ", ".join(f"`{st.rule.name}` at {st.span}" for st in made) or "a step"
    rounding = {id(steps[i]) for i in unrounded}
    causes = []
    if any(st.rule.impl == LOWRANK_IMPL for st in made):
        causes.append("`lowrank`'s SVD factors are new weights, some of which may be exactly 0, and with "
                      "`energy < 1` it keeps a rank known only when it runs")
    if any(st.rule.impl != LOWRANK_IMPL and id(st) not in rounding for st in made):
        causes.append("an N:M pattern on a sparse layer keeps fewer than n of m where a group already holds zeros")
    if rounding:
        causes.append("a kept-weight count over several knobs (or with more values than the check rounds one by "
                      "one) is known only to within half a weight of the runtime's rounding")
    return where, "; ".join(causes) or "a field known only from above"


__all__ = ["LOWRANK_IMPL", "RHO", "clamp", "density_low", "explain", "follow", "loosens", "put", "reads",
           "rank_floor"]
