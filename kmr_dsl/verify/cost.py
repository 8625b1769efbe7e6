"""Cost models of the analytic meters, as sympy expressions over the abstract state.

Contract: `meter_expr(model, meter, state)` is the value of `params`, `nonzero`,
`size`, `macs` or `trainable_params` for a state of `model` (its initial state gives
`baseline.METER`, its final state the pipeline's result); `layer_terms` gives the
per-layer parts and the constant rest (`kmr_dsl.verify.explain` prints them for
`kmr check --explain size`).

The per-layer parts are verify/layer_cost.py's (its docstring gives each meter's
formula per layer); the file's bytes (header entries, one tensor's forms, the header's
constant part) verify/file_bytes.py's.
Outside the layers: other_params at 4 B, buffers, and the safetensors header
(artifact_layout's per-entry formula; int formats add a `.scale` entry, sparse ones a
second entry, which is why each branch of the min carries its own header bytes).

`size` is a range, not a value: the data bytes are exact up to the `ceil` of packed
bytes, and so are the recipe's loader call and
its info object ({"pipeline": NAME}, counted with artifact_recipe.recipe_fixed_chars);
the rest of the header (the offsets' digits, the 8-byte padding, each layer's config,
which grows with its form, its dimensions' digits and an unmerged adapter) is
bounded. `meter_expr(model, "size", state)` is the upper end (artifact_layout's
margins CONFIG_MARGIN, ADAPTER_CONFIG_CHARS, CEIL_BYTES, PADDING_BYTES; 5-15% above the
file on small generated models), `meter_expr(model, SIZE_LOW, state)` the lower end
(no ceilings, no padding, one digit per offset, the shortest dtype name, each layer's
shortest config: artifact_recipe.config_chars_low). verify/budget.py reads the end
that is worst for a line. The counts (params, nonzero, macs, trainable_params)
are exact: the state keeps whole channels, ranks and weights as the runtime does
(kmr_dsl.core.step.settle).

Documented gaps of the upper end: offset digits are taken from the baseline's data size
(an upper bound of every offset); header entries of
tensors outside the layers are not counted (ModelFacts does not name them); a count over a
continuous knob (no `step`) is rounded only when it is affine in that one knob and takes
at most rounding.MAX_PIECES values (a rank, a channel count), else a channel, head or
rank count keeps the exact product (verify/rounding.py), while a kept-weight count is a
range of one weight around it, [x - 1/2, x + 1/2] within [0, elements] (verify/settling.py;
its lower end in `State.low`, read as the other ranges below);
global pruning rounds the total once, the state each layer (and gives each layer the
average density, exact in total: a later step that changes some of those densities on
their own makes the density-reading lines UNKNOWN, verify/pools.py); after a truncating
`lowrank` the density is an upper end (SVD factors may hold exact zeros), after one with
`energy < 1` the rank too: the state keeps their lower ends (verify/lowend.py), and
every meter is then a range (LOW_ENDS), its lower end read where a line needs the
meter large. The upper end of `size` over a rank range also reads the largest rank
that factorizes: there the two factors' scales, entries and config can outweigh the
few elements they save.
"""

from __future__ import annotations

import sympy as sp

from kmr_dsl.core.state import ANALYTIC_METERS, LAYER_FIELDS
from kmr_dsl.facts import LayerFact, ModelFacts
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify.decomposition import instance_info
from kmr_dsl.verify.intervals import intern_key, symbols_key, values_key
from kmr_dsl.verify.numeric import as_number, evaluate
from kmr_dsl.verify.file_bytes import fixed_header, offset_digits
from kmr_dsl.verify.layer_cost import layer_costs
from kmr_dsl.verify.settling import factor_fields, factor_rank
from kmr_dsl.verify.state import PipelineModel, State
from kmr_dsl.verify.template import Template

UNITS = ANALYTIC_METERS     # meter -> dimension
# The lower end of the `size` meter (`meter_expr(model, SIZE_LOW, state)`): what a line
# that needs the file to be large (`size >= X`, the baseline side of `size <= k *
# baseline.size`) reads, where `size` itself is the upper end (verify/budget.py).
SIZE_LOW = "size_low"
# The lower ends of the counts: where the state knows a layer's density or rank only from
# above (`State.low`, verify/lowend.py: `lowrank`'s fresh factors and its energy cut),
# each meter's lower end reads the layer's fields at their lower ends. Equal to the
# meter where no layer has one.
NONZERO_LOW, PARAMS_LOW, MACS_LOW, TRAINABLE_LOW = "nonzero_low", "params_low", "macs_low", "trainable_params_low"
# the meters that are ranges: meter -> the name of its lower end
LOW_ENDS = {"size": SIZE_LOW, "nonzero": NONZERO_LOW, "params": PARAMS_LOW, "macs": MACS_LOW,
            "trainable_params": TRAINABLE_LOW}
_OF_LOW = {low: meter for meter, low in LOW_ENDS.items()}


def _share_term_infos(model: PipelineModel, template, value, symbols: tuple) -> None:
    """The budget lines' decomposition (decomposition.decompose) sees each layer's terms: an
    instance's terms are the template's with its knobs, so their shapes are known
    without a walk (decomposition.instance_info)."""
    mapping = dict(zip(template.symbols, symbols))
    memo = model.decomposed_terms
    model_terms = template.expr.args if type(template.expr) is sp.Add else (template.expr,)
    terms = value.args if type(value) is sp.Add else (value,)
    if len(terms) != len(model_terms):
        return
    for t, m in zip(terms, model_terms):
        if t is not m and not isinstance(t, sp.Rational):
            instance_info(t, m, mapping, model.knobs, memo)


def _layer_key(model: PipelineModel, st: dict):
    """_state_key of a layer's state dict, once per dict: every meter of a state asks it
    for every layer (state dicts are replaced, never changed in place: verify/stepping.py)."""
    key = ("cost: layer state key", id(st))
    hit = model.templates.get(key)
    if hit is not None and hit[0] is st:
        return hit[1]
    found = _state_key(st, model.knobs)
    if found is not None:
        found = (intern_key(model.templates, "cost: state key", found[0]), found[1])
    model.templates[key] = (st, found)       # the dict kept alive: its id is not reused
    return found


def _state_key(st: dict, knobs=None) -> tuple | None:
    """A hashable key of a layer state up to renaming of its knob symbols (intervals.
    values_key, with each symbol's knob declaration: layers sharing a template read
    knobs of the same domains), and those symbols in order of first appearance; None
    when a value has no such key (a placeholder the state cannot express)."""
    slots: dict = {}
    key = values_key(st.items(), slots)
    if key is None:
        return None
    return (key, symbols_key(slots, knobs)), tuple(slots)


def layer_terms(model: PipelineModel, meter: str, state: State) -> tuple[list[tuple[str, object]], object]:
    """(per-layer parts in layer order, the constant rest) of an analytic meter."""
    if meter not in ANALYTIC_METERS and meter not in _OF_LOW:
        raise A.NotModelled(f"meter `{meter}` has no cost model")
    return model.cost_terms.get(state, lambda: _layer_terms(model, meter, state), meter)


def _layer_terms(model: PipelineModel, meter: str, state: State):
    digits = offset_digits(model)
    facts = model.facts
    base = meter if meter == SIZE_LOW else _OF_LOW.get(meter, meter)
    which = "trainable" if base == "trainable_params" else base
    low_end = meter in _OF_LOW
    parts = []
    # A layer's cost depends on its facts, its field values and (through header entries)
    # only the length of its name: layers of the same shape whose states are equal up to
    # their knobs (one per layer of a per-layer family) get one term, built once and
    # instantiated (template.Template) for the others; all-constant states share it outright.
    templates: dict = {}
    pool_bits = _pool_bits(state) if meter == SIZE_LOW else {}
    for f in facts.layers:
        st = state.layers[f.name]
        if f.name in pool_bits:
            st = {**st, "pool_bits": pool_bits[f.name]}
        low = state.low.get(f.name)
        # a factorized layer sliced since: the decision `lowrank` made, not one anew
        sliced = factor_fields(state, f.name)
        if sliced:
            st = {**st, **sliced}
        rank_set = (f.name, "rank") in state.origin or bool(sliced)
        if low and (low_end or meter == "size"):
            parts.append((f.name, _ranged_term(f, st, low, digits, rank_set, which, low_end)))
            continue
        found = _layer_key(model, st)
        shape = None if found is None else (
            f.kind, f.in_features, f.out_features, f.weight_params, f.bias_params, f.weight_shape, f.dtype,
            f.macs, f.attention_macs, f.heads, len(f.name), rank_set, f.depthwise, f.channel_buffer_bytes,
            found[0])
        template = None if shape is None else templates.get(shape)
        if template is not None:
            value = template(found[1])
            if model.knobs is not None:
                _share_term_infos(model, template, value, found[1])
            parts.append((f.name, value))
            continue
        value = layer_costs(f, st, digits, rank_set, (which,))[which]
        if shape is not None:
            templates[shape] = Template(value, found[1])
        parts.append((f.name, value))
    return parts, _rest(model, meter if meter == SIZE_LOW else base)


def _rest(model: PipelineModel, meter: str):
    """The constant part of a meter outside the layers (only the asked one: the header's
    sums run over every layer)."""
    facts = model.facts
    other = max(0, facts.other_params)
    if meter in ("params", "nonzero", "trainable_params"):
        return A.num(other)
    if meter == "macs":
        return A.num(facts.total_macs - sum(f.macs + f.attention_macs for f in facts.layers))
    channel_stats = sum(f.channel_buffer_bytes for f in facts.layers)   # counted per layer
    if meter == "size":
        return A.num(4 * other + facts.buffers_bytes - channel_stats + fixed_header(model))
    # parameters outside the layers: at least one byte each (their dtype is not a fact)
    return A.num(other + facts.buffers_bytes - channel_stats + fixed_header(model, low=True))


def _pool_bits(state: State) -> dict:
    """Per layer of a global pruning's pool (verify/pools.py), the least width of its pool."""
    out, seen = {}, {}
    for layer, pool in state.pools.items():
        if pool not in seen:
            widths = [state.layers[m]["bits"] for m in sorted(pool) if m in state.layers]
            least = widths[0]
            for w in widths[1:]:
                least = A.min_(least, w)
            seen[pool] = least
        out[layer] = seen[pool]
    return out


def _ranged_term(f: LayerFact, st: dict, low: dict, digits: int, rank_set: bool, which: str, low_end: bool):
    """One layer's part of a meter whose fields `low` has lower ends for (verify/lowend.py).
    A lower end: the counts are non-decreasing in density and rank, so they read both
    fields' lower ends; the file's bytes are non-decreasing in the density and, within
    one form (factorized or dense), in the rank, so their least is at the rank's lower
    or upper end. The upper end reads the state's fields (the densities' and ranks'
    upper ends): `size` takes the smaller of a weight's two forms, which the file is at
    most whatever the density."""
    # a rank below the state's may make the runtime factorize the layer: test it
    rank_set = rank_set or "rank" in low
    # sliced since `lowrank` decided (settling.Factors): the rank range is the inner
    # dimension's, and the test reads the shape it decided at
    sliced = "factor_rank" in st

    def at_rank(fields: dict, rank) -> dict:
        return {**fields, "rank": rank, "factor_rank": rank} if sliced else {**fields, "rank": rank}
    if not low_end:
        value = layer_costs(f, st, digits, rank_set, (which,))[which]
        if "rank" in low:
            # the largest factorized rank (if below the state's): near the threshold the
            # two factors' scales, entries and config outweigh the elements they save
            inf, outf = st.get("factor_in", st["in_features"]), st.get("factor_out", st["out_features"])
            top = A.sub(A.ceil_(A.div(A.mul(inf, outf), A.add(inf, outf))), 1)
            cut = at_rank(st, A.max_(low["rank"], A.min_(factor_rank(st), top)))
            value = A.max_(value, layer_costs(f, cut, digits, rank_set, (which,))[which])
        return value
    fields = {**st, **low}
    value = layer_costs(f, at_rank(fields, low["rank"]) if "rank" in low else fields, digits, rank_set,
                        (which,))[which]
    if "rank" in low and (which == "size_low" or sliced):
        # the file's bytes change form with the rank; and sliced factors may hold more
        # elements than the dense matrix at the smaller shape: the counts are then no
        # longer non-decreasing in the rank either
        at_high = {**st, "density": low.get("density", st["density"])}
        value = A.min_(value, layer_costs(f, at_high, digits, rank_set, (which,))[which])
    return value


def meter_expr(model: PipelineModel, meter: str, state: State):
    """The meter's value in `state`: a sympy expression over knob symbols."""
    def build():
        parts, rest = layer_terms(model, meter, state)
        total = A.add(rest, *(p for _, p in parts))
        if meter in ("trainable_params", TRAINABLE_LOW):
            total = A.ite(state.model["trainable"], total, 0)
        return total
    return model.cost_totals.get(state, build, meter)


# ---------------------------------------------------------------- at a measured state

_CAST = {"int": int, "float": float, "bool": bool}


def _symbolic_state(state: dict, rank_set) -> State:
    layers = {}
    for name, st in state["layers"].items():
        layers[name] = {f: A.EnumValue(st[f]) if t == "str" else A.num(_CAST[t](st[f]))
                        for f, t in LAYER_FIELDS.items()}
    origin = {(name, "rank"): 0 for name in rank_set}
    return State(layers, {"trainable": A.num(bool(state["trainable"]))}, origin)


def cost_at(facts: ModelFacts, state: dict, rank_set=()) -> dict[str, float]:
    """Every analytic meter's cost model at a *measured* state (the plain dicts of
    `runtime.state.measure_state`) of the model `facts` describe; `rank_set` names the
    layers whose rank a rule set. The property tests compare it with the meters."""
    sym = _symbolic_state(state, rank_set)
    model = PipelineModel(program=None, pipeline=None, knobs=None, facts=facts, initial=sym, final=sym,
                          requirements=[])
    return {m: float(as_number(evaluate(meter_expr(model, m, sym), {}, exact=False))) for m in ANALYTIC_METERS}


__all__ = ["ANALYTIC_METERS", "LOW_ENDS", "SIZE_LOW", "UNITS", "cost_at", "layer_terms", "meter_expr"]
