"""The abstract state of spec section 5, stepped symbolically through a pipeline.

Contract: `build_model(program, pipeline)` returns a `PipelineModel`: the initial
state (from ModelFacts), the final state, and one `Requirement` per (step, selected
layer, requires clause) holding that clause as a sympy condition over knob symbols in
the state *before* the step. Field values are sympy expressions built by
`kmr_dsl.verify.algebra` (constants folded, so untouched fields stay integers).

State: per layer `kind` (an EnumValue), `in_features`, `out_features`, `params`
(static), `density` (measured at load), `bits` (from facts), `rank` (min(in, out)),
`adapter_rank` (0), `frozen` (false), `group_size`, `symmetric`, `foldable` and
`input_scale` (from facts); per
model `trainable` (true).

Semantics, in order:
- a step's arguments are evaluated once, knobs becoming their symbols; enum members
  and enum comparisons with constant arguments fold here (`method == nm` with
  `method = magnitude` is false before any solver sees it);
- every requires clause of every selected layer (a whole-model rule: once, with no
  layer) is evaluated in the state before the step, as the runtime applies the rule to
  all selected layers at once (qat on two layers: the second does not see the first's
  `model.trainable = false`); then per selected layer all effects are evaluated and
  assigned together (simultaneous assignment); model effects of a per-layer step
  compose layer after layer (quantizing three layers ANDs three conditions into
  `trainable`);
- what a step does besides its effects is `kmr_dsl.core.step` over sympy, in the
  modules this one calls (docs/design.md): counts settled as the runtime rounds them
  (verify/settling.py), consumers and channel groups shrink with their producer and a
  changed shape's rank follows it (verify/groups.py; what `lowrank` decided, two factors
  or one matrix, stays: `State.factors`), the requirements of the step
  semantics itself (verify/requirements.py: a shrink with no matrix consumer, KMR304; a
  fold that leaves a reader of its normalization unscaled, KMR306);
- global pruning over several layers pools them (`State.pools`, verify/pools.py): each
  keeps the average density, exact in total, the total rounded once as the runtime
  rounds it; changing some of them on their own, or a requires clause reading such a
  density, is UNKNOWN (kind "pooled", KMR303);
- an effect that is only an upper end (`lowrank`'s fresh factors, its rank with
  `energy < 1`, N:M on a sparse layer, a kept-weight count the arithmetic cannot round
  exactly: verify/settling.py) keeps its lower end in `State.low` (verify/lowend.py),
  which the meters' lower ends read (verify/cost.py LOW_ENDS).
A value the state cannot express (a data argument in arithmetic, an unknown field)
becomes an `Unmodelled` placeholder, and every obligation touching it is UNKNOWN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from kmr_dsl.core.program import (CheckedProgram, Const, DataRef, EnumLit, FieldRef, If, IExpr, KnobRef, MeterRef,
                                  NO_DATA, ModelArg, Op, ParamRef, Pipeline, Rule, Step)
from kmr_dsl.core.memo import ByIdentity, Memo
from kmr_dsl.core.state import MATRIX_KINDS
from kmr_dsl.core.walk import Dispatch, Unsupported, nodes
from kmr_dsl.facts import ModelFacts
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify import groups, lowend, pools, requirements, settling
from kmr_dsl.verify.algebra import Opaque as _Opaque
from kmr_dsl.verify.algebra import placeholder as _placeholder
from kmr_dsl.verify.intervals import symbols_key, values_key
from kmr_dsl.verify.knobs import KnobTable
from kmr_dsl.verify.requirements import Requirement


@dataclass
class State:
    layers: dict[str, dict[str, object]]
    model: dict[str, object]
    # (layer name or None for the model, field) -> index of the step that last changed it
    origin: dict[tuple[str | None, str], int] = field(default_factory=dict)
    # layer -> the layers a global pruning ranked it with (verify/pools.py): their
    # densities are known in total only
    pools: dict[str, frozenset] = field(default_factory=dict)
    # layer -> {field: its lower end} where the field's value is only its upper end
    # (verify/lowend.py: `lowrank`'s fresh factors and energy cut), and (layer, field) ->
    # the index of the step that made it a range
    low: dict[str, dict[str, object]] = field(default_factory=dict)
    loose_at: dict[tuple[str, str], int] = field(default_factory=dict)
    # layer -> what the last `lowrank` on it decided (settling.Factors): a later shape
    # change slices its factors, it does not decide the factorization anew
    factors: dict[str, settling.Factors] = field(default_factory=dict)
    # the steps whose kept-weight count could not be rounded exactly (a range of one
    # weight, settling.settle), for KMR303's note (lowend.explain)
    unrounded: set[int] = field(default_factory=set)

    def fork(self) -> "State":
        """A copy that steps can change in place (layer dicts are replaced, never mutated)."""
        return State(dict(self.layers), dict(self.model), dict(self.origin), dict(self.pools),
                     dict(self.low), dict(self.loose_at), dict(self.factors), set(self.unrounded))


@dataclass
class PipelineModel:
    program: CheckedProgram
    pipeline: Pipeline
    knobs: KnobTable
    facts: ModelFacts
    initial: State
    final: State
    requirements: list[Requirement]
    # knob declaration names passed to a parameter its rule's contract never reads
    # (epochs, lr, scheme...): they act through the implementation, not the state
    opaque_knobs: set[str] = field(default_factory=set)
    # knob declaration names used by any step argument
    arg_knobs: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    # what the cost model, predictions and the feasibility decision remember (typed caches)
    cost_terms: ByIdentity = field(default_factory=lambda: ByIdentity("cost terms", "(state, meter)"))
    cost_totals: ByIdentity = field(default_factory=lambda: ByIdentity("meter values", "(state, meter)"))
    compiled: Memo = field(default_factory=lambda: Memo("compiled predictions", "(use, meter, baseline)"))
    decompositions: ByIdentity = field(default_factory=lambda: ByIdentity("line decompositions", "expression"))
    decomposed_terms: dict = field(default_factory=dict)   # decompose's table of terms shared by the lines
    line_bounds: ByIdentity = field(default_factory=lambda: ByIdentity("line bounds", "decomposition"))
    line_ranges: ByIdentity = field(default_factory=lambda: ByIdentity("line ranges", "(decomposition, setting)"))
    # (what, the layer's inputs up to renaming of knobs) -> algebra.Template: one-layer
    # steps on layers of one shape evaluate a clause, an effect, a settled count once
    templates: dict = field(default_factory=dict)


def initial_state(facts: ModelFacts) -> State:
    layers = {}
    for f in facts.layers:
        layers[f.name] = {
            "kind": A.EnumValue(f.kind),
            "in_features": A.num(f.in_features),
            "out_features": A.num(f.out_features),
            "params": A.num(f.params),
            "density": A.num(f.density),
            "bits": A.num(f.bits),
            "rank": A.num(f.rank),
            "adapter_rank": A.ZERO,
            "frozen": A.FALSE,
            "group_size": A.num(f.group_size),
            "symmetric": A.TRUE if f.symmetric else A.FALSE,
            "foldable": A.TRUE if f.foldable else A.FALSE,
            "heads": A.num(f.heads),
            "input_scale": A.TRUE if f.input_scale else A.FALSE,
        }
    return State(layers, {"trainable": A.TRUE})


# ---------------------------------------------------------------- IR evaluation

@dataclass
class Ctx:
    knobs: KnobTable
    params: dict[str, object] = field(default_factory=dict)
    layer: dict[str, object] | None = None
    model: dict[str, object] | None = None
    meter: object = None          # callable(MeterRef) -> sympy value, for budget lines


_ARITH = {"+": A.add, "-": A.sub, "*": A.mul, "/": A.div, "min": A.min_, "max": A.max_}


def eval_ir(e: IExpr, ctx: Ctx):
    """The sympy value of an IR expression (EnumValue/EnumKnob for enum-valued ones)."""
    try:
        return _EVAL(e, ctx)
    except Unsupported as exc:
        raise A.NotModelled(str(exc)) from None


# rules are shared by every step that applies them: convert each literal once
CONSTANTS = ByIdentity("IR literals as sympy", "Const node", limit=10_000)


def _e_const(e, ctx):
    value = CONSTANTS.find(e)
    if value is None:
        value = CONSTANTS.put(e, A.EnumValue(e.value) if isinstance(e.value, str) else A.num(e.value))
    return value


def _e_knob(e, ctx):
    var = ctx.knobs.by_name.get(e.name)
    if var is None:
        raise A.NotModelled(f"knob `{e.name}` is not a knob of this pipeline")
    if var.kind == "enum":
        return A.EnumKnob(var.symbol, var.knob.members)
    return var.symbol


def _e_param(e, ctx):
    if e.name not in ctx.params:
        raise A.NotModelled(f"parameter `{e.name}` has no value")
    value = ctx.params[e.name]
    if isinstance(value, _Opaque):
        raise A.NotModelled(f"parameter `{e.name}` ({value.what}) used in a contract expression")
    return value


def _e_field(e, ctx):
    scope = ctx.layer if e.scope == "layer" else ctx.model
    if scope is None:
        raise A.NotModelled(f"`{e.scope}.{e.field}` outside a {e.scope} rule")
    if e.field not in scope:
        raise A.NotModelled(f"`{e.scope}.{e.field}` is not a state field")
    return scope[e.field]


def _e_meter(e, ctx):
    if ctx.meter is None:
        raise A.NotModelled(f"meter `{e.name}` inside a rule contract")
    return ctx.meter(e)


def _e_if(e, ctx):
    cond = eval_ir(e.cond, ctx)
    # evaluate only the branch a constant condition selects: the other may not be modelled
    if cond is A.TRUE:
        return eval_ir(e.then, ctx)
    if cond is A.FALSE:
        return eval_ir(e.orelse, ctx)
    return A.ite(cond, eval_ir(e.then, ctx), eval_ir(e.orelse, ctx))


_EVAL = Dispatch("the verifier's state model")
for _cls, _handler in {
    Const: _e_const, KnobRef: _e_knob, EnumLit: lambda e, ctx: A.EnumValue(e.member), ParamRef: _e_param,
    FieldRef: _e_field, MeterRef: _e_meter, DataRef: lambda e, ctx: _Opaque(f"data {e.name}"),
    ModelArg: lambda e, ctx: _Opaque(f"model {e.name}"), If: _e_if, Op: lambda e, ctx: _eval_op(e, ctx),
}.items():
    _EVAL.register(_cls)(_handler)


def _eval_op(e: Op, ctx: Ctx):
    op = e.op
    if op == "and":
        out = A.TRUE
        for a in e.args:
            out = A.and_(out, eval_ir(a, ctx))
            if out is A.FALSE:       # short-circuit like the runtime evaluator
                break
        return out
    if op == "or":
        out = A.FALSE
        for a in e.args:
            out = A.or_(out, eval_ir(a, ctx))
            if out is A.TRUE:
                break
        return out
    if op == "not":
        return A.not_(eval_ir(e.args[0], ctx))
    if op == "neg":
        return A.neg(eval_ir(e.args[0], ctx))
    if op in ("==", "!=") and any(isinstance(a, EnumLit) and a.member == NO_DATA for a in e.args):
        # `P != none` where the step passed data: given (data left out is the member `none`)
        refs = [a for a in e.args if isinstance(a, ParamRef)]
        if refs and isinstance(ctx.params.get(refs[0].name), _Opaque):
            return A.FALSE if op == "==" else A.TRUE
    vals = [eval_ir(a, ctx) for a in e.args]
    odd = [v for v in vals if isinstance(v, (_Opaque, A.EnumValue, A.EnumKnob))]
    if odd:
        if any(isinstance(v, _Opaque) for v in odd):
            raise A.NotModelled(f"a data or model argument used with `{op}`")
        if op not in ("==", "!="):
            raise A.NotModelled(f"an enum used with `{op}`")
        eq = A.enum_equal(vals[0], vals[1])
        return eq if op == "==" else A.not_(eq)
    if op in A.RELATIONS:
        return A.compare(op, vals[0], vals[1])
    if op in _ARITH:
        out = vals[0]
        for v in vals[1:]:
            out = _ARITH[op](out, v)
        return out
    raise A.NotModelled(f"operator `{op}`")


# ---------------------------------------------------------------- inputs up to renaming

@dataclass(frozen=True)
class Canon:
    key: tuple          # the inputs up to renaming
    symbols: tuple      # their knob symbols, in slot order


MODEL_READS = ByIdentity("model fields a rule's requires and layer effects read", "Rule", limit=256)


def _canon(model: PipelineModel, rule: Rule, params: dict, lstate: dict, mstate: dict) -> Canon | None:
    """A one-layer step's inputs (arguments, the layer's fields, the model fields its
    requires and layer effects read) up to renaming of knobs; None when they have no
    such key. Model effects are not templated: they compose layer after layer (`model.
    trainable` ANDs a condition per quantized layer), so no two layers share them."""
    reads = MODEL_READS.get(rule, lambda: sorted({
        n.field for e in list(rule.requires) + [eff.expr for eff in rule.effects if eff.scope == "layer"]
        for n in nodes(e) if isinstance(n, FieldRef) and n.scope == "model"}))
    slots: dict = {}
    parts = (values_key(params.items(), slots), values_key(lstate.items(), slots),
             values_key([(f, mstate[f]) for f in reads if f in mstate], slots))
    if any(p is None for p in parts):
        return None
    return Canon(parts + (symbols_key(slots, model.knobs),), tuple(slots))


def _templated(model: PipelineModel, canon: Canon | None, what: tuple, build):
    """build()'s value, or the value a layer with the same inputs up to renaming got,
    built again over this layer's knobs (algebra.Template). `build` may raise
    NotModelled: nothing is remembered then (its message may name this layer)."""
    if canon is None:
        return build()
    key = (what, canon.key)
    template = model.templates.get(key)
    if template is not None:
        return template(canon.symbols)
    value = build()
    if isinstance(value, sp.Basic):
        model.templates[key] = A.Template(value, canon.symbols)
    return value


# ---------------------------------------------------------------- stepping

# a rule's parameter defaults as values (constants: shared by every step of the rule)
DEFAULTS = ByIdentity("a rule's parameter defaults", "Rule", limit=256)
PARAMS_READ = ByIdentity("parameters a rule's contract reads", "Rule", limit=256)


def _params_read(rule: Rule) -> set[str]:
    """Parameters a rule's requires and effects read (cached: called once per step)."""
    def build():
        names: set[str] = set()
        for e in list(rule.requires) + [eff.expr for eff in rule.effects]:
            names |= {n.name for n in nodes(e) if isinstance(n, ParamRef)}
        return names
    return PARAMS_READ.get(rule, build)


def build_model(program: CheckedProgram, pipeline: Pipeline) -> PipelineModel:
    knobs = KnobTable(program, pipeline)
    facts = pipeline.model.facts
    if facts is None:
        raise A.NotModelled(f"model `{pipeline.model.name}` has no facts (it could not be loaded)")
    initial = initial_state(facts)
    state = initial.fork()
    model = PipelineModel(program, pipeline, knobs, facts, initial, initial, [])
    layer_facts = {f.name: f for f in facts.layers}
    for index, step in enumerate(pipeline.steps):
        state = _apply_step(model, state, index, step, layer_facts)
    model.final = state
    return model


def _apply_step(model: PipelineModel, state: State, index: int, step: Step, layer_facts) -> State:
    rule = step.rule
    knob_ctx = Ctx(model.knobs)
    read = _params_read(rule)
    params: dict[str, object] = dict(DEFAULTS.get(rule, lambda: {p.name: _default_value(p) for p in rule.params
                                                                  if p.has_default}))
    for name, expr in step.args:
        refs = {n.knob for n in nodes(expr) if isinstance(n, KnobRef)}
        model.arg_knobs |= refs
        if name not in read:
            model.opaque_knobs |= refs
        try:
            params[name] = eval_ir(expr, knob_ctx)
        except A.NotModelled as exc:
            model.problems.append(f"step {index + 1} `{rule.name}`: argument `{name}`: {exc}")
            params[name] = _Opaque(str(exc))
    # the working state is changed in place (only the initial and final states are kept);
    # `touched` layers' previous dicts are what groups.follow_shapes compares against
    before: dict[str, dict] = {}
    touched: set[str] = set()
    # layers whose channels or heads a group member's shrink already set this step
    grouped: set[str] = set()
    targets = []
    for layer in (list(step.layers) if rule.accepts is not None else [None]):
        if layer is not None and layer not in state.layers:
            model.problems.append(f"step {index + 1} `{rule.name}`: unknown layer `{layer}`")
        else:
            targets.append(layer)
    # every selected layer's requires reads the state before the step (the runtime applies
    # the rule to all of them at once): no effect of this step is visible to them
    folds = rule.accepts is not None and requirements.reads_foldable(rule)
    # a one-layer step (a per-layer family unrolled: one step per layer) on a layer of a
    # shape seen before evaluates nothing again: its clauses, effects and settled counts
    # are the earlier layer's over its own knobs (_templated)
    canon = canon_layer = None
    if len(targets) == 1 and targets[0] is not None and targets[0] not in state.pools:
        canon_layer = state.layers[targets[0]]
        canon = _canon(model, rule, params, canon_layer, state.model)
    for layer in targets:
        _requirements(model, state, index, step, params, layer, canon)
        if layer is not None and folds:
            requirements.require_fold_group(model, step, index, layer, layer_facts)
    densities = {layer: (state.layers[layer]["density"], state.origin.get((layer, "density")))
                 for layer in targets if layer is not None}
    ranked = pools.ranked_together(rule, params)
    raw: dict[str, tuple] = {}          # layer -> (its density before rounding, its weight elements)
    # layer -> {field: its lower end} where the step's count could not be rounded exactly
    # (settling.settle_all: the state holds the upper end; lowend.follow records this one)
    unrounded: dict[str, dict] = {}
    for layer in targets:
        lstate = state.layers[layer] if layer is not None else None
        ctx = Ctx(model.knobs, params, lstate, state.model)
        new_layer, new_model = {}, {}
        for eff in rule.effects:
            target = lstate if eff.scope == "layer" else state.model
            current = None if target is None else target.get(eff.field)
            try:
                if target is None:
                    raise A.NotModelled(f"`{eff.scope}.{eff.field}` outside a {eff.scope} rule")
                value = _templated(model, canon if eff.scope == "layer" else None, ("effect", id(eff)),
                                   lambda: eval_ir(eff.expr, ctx))
                if isinstance(value, (_Opaque, A.EnumKnob)):
                    raise A.NotModelled(f"`{eff.scope}.{eff.field}` set to a non-numeric value")
            except A.NotModelled as exc:
                model.problems.append(f"step {index + 1} `{rule.name}` effect `{eff.scope}.{eff.field}`: {exc}")
                value = _placeholder(f"{eff.scope}.{eff.field}", current is not None and A.is_boolean(current))
            (new_layer if eff.scope == "layer" else new_model)[eff.field] = value
        if layer is not None and layer in grouped:
            # the runtime prunes a channel group (or an attention's heads) once per step:
            # this member's were set with the group's (in the other branches the group kept them)
            new_layer.pop("out_features", None)
            new_layer.pop("heads", None)
        if layer is not None and new_layer:
            old = lstate
            lstate = dict(lstate)
            # a layer `lowrank` decided on: its kept weights count the form it decided, at
            # the shape this step leaves (a step that slices it included); where neither
            # this step nor an earlier one changed that shape, the layer's own fields say
            # the same (and the step's template holds)
            record = None if "rank" in new_layer else state.factors.get(layer)
            reshaped = "in_features" in new_layer or "out_features" in new_layer
            sliced = record.fields() if record is not None and (reshaped or settling.factor_fields(state, layer)) \
                else {}
            for f, v in _settled(model, new_layer, {**old, **sliced} if sliced else old, layer_facts.get(layer),
                                 (layer, "rank") in state.origin or bool(sliced), None if sliced else canon,
                                 raw.setdefault(layer, []), unrounded.setdefault(layer, {})).items():
                if old.get(f) != v:
                    lstate[f] = v
                    state.origin[(layer, f)] = index
            state.layers[layer] = lstate
            if "rank" in new_layer and layer_facts.get(layer) is not None \
                    and layer_facts[layer].kind in MATRIX_KINDS:
                settling.record_factors(state, layer, old, lstate, lowend.rank_floor(rule, params))
            elif rule.impl == settling.LORA_IMPL and layer in state.factors:
                settling.merge_factors(state, layer, params.get("merge", A.TRUE))
            before.setdefault(layer, old)
            touched.add(layer)
            if lstate["heads"] is not old["heads"] and lstate["heads"] != old["heads"]:
                heads = groups.remove_heads(state, layer, old["heads"], lstate["heads"], layer_facts, index, before)
                grouped.update(heads)
                touched.update(heads)
            elif lstate["out_features"] is not old["out_features"] and lstate["out_features"] != old["out_features"]:
                requirements.require_consumer(model, state, step, index, layer, old, lstate, layer_facts)
                touched.update(groups.shrink_consumers(state, layer, old["out_features"], lstate["out_features"],
                                                       layer_facts, index, before))
                members = groups.shrink_group(state, layer, old["out_features"], lstate["out_features"],
                                              layer_facts, index, before)
                touched.update(members)
                grouped.update(members)
        for f, v in new_model.items():
            if state.model.get(f) != v:
                state.model[f] = v
                state.origin[(None, f)] = index
    raw = {l: r[0] for l, r in raw.items() if r}
    unrounded = {l: ends for l, ends in unrounded.items() if ends}
    if ranked is not A.FALSE:
        loose = pools.settle_pool(model, state, index, ranked, raw)
        if len(raw) >= 2:
            # each layer's own rounding is the runtime's only where the step does not rank
            # together; a pool's total that could not be rounded is a range for all of them
            # (its lower end is the total's, lowend._pooled)
            for l in raw:
                ends = {} if ranked is A.TRUE else dict(unrounded.get(l, {}))
                if loose:
                    ends["density"] = None
                unrounded[l] = ends
            unrounded = {l: ends for l, ends in unrounded.items() if ends}
    groups.follow_shapes(state, before, touched, index, step)

    def evaluate(expr, layer):
        def build():
            return eval_ir(expr, Ctx(model.knobs, params, layer, state.model))
        # the lower ends (and pools) evaluate an effect over the layer's fields before the
        # step with one of them a placeholder (lowend.RHO): with the step's inputs up to
        # renaming known (`canon`), that is a template too, when the fields are exactly
        # those inputs and the effect reads no model field (those may have changed since)
        if canon is None or _reads_model(expr) or len(layer) != len(canon_layer):
            return build()
        rho = []
        for f, v in layer.items():
            if v is lowend.RHO and canon_layer.get(f) is not lowend.RHO:
                rho.append(f)
            elif f not in canon_layer or v is not canon_layer[f]:
                return build()
        return _templated(model, canon, ("follow", id(expr), tuple(sorted(rho))), build)
    lowend.follow(model, state, index, step, params, targets, before, layer_facts, evaluate, ranked, raw,
                  unrounded)
    if densities:
        pools.follow(model, state, index, step, params, densities, before, layer_facts, evaluate)
    return state


MODEL_FIELDS = ByIdentity("whether an expression reads a model field", "IR expression", limit=1024)


def _reads_model(expr: IExpr) -> bool:
    return MODEL_FIELDS.get(expr, lambda: any(isinstance(n, FieldRef) and n.scope == "model" for n in nodes(expr)))


def _requirements(model: PipelineModel, state: State, index: int, step: Step, params: dict, layer,
                  canon: Canon | None = None) -> None:
    """One Requirement per requires clause of `step` on `layer`, over the current state."""
    lstate = state.layers[layer] if layer is not None else None
    ctx = Ctx(model.knobs, params, lstate, state.model)
    for ci, clause in enumerate(step.rule.requires):
        try:
            cond = _templated(model, canon, ("requires", id(clause)), lambda: eval_ir(clause, ctx))
            if not A.is_boolean(cond):
                raise A.NotModelled("a requires clause that is not a condition")
        except A.NotModelled as exc:
            cond = _placeholder(str(exc), True)
        if layer in state.pools and FieldRef("layer", "density") in set(nodes(clause)):
            cond = _placeholder(f"the density of `{layer}` after a global pruning is known only in total", True)
        fields = []
        for ref in requirements.fields_read(clause):
            scope = lstate if ref.scope == "layer" else state.model
            key = (layer if ref.scope == "layer" else None, ref.field)
            if scope is not None and ref.field in scope:
                fields.append((f"{ref.scope}.{ref.field}", scope[ref.field], state.origin.get(key)))
        model.requirements.append(Requirement(index, step, layer, ci, clause, cond, tuple(fields)))


def _settled(model: PipelineModel, new: dict, old: dict, fact, factorized: bool, canon: Canon | None = None,
             raw: list | None = None, lows: dict | None = None) -> dict:
    """The effects' values as the runtime keeps them (core.step.settle): whole channels,
    ranks and weights. Kept weights are counted on the layer's weight at its new shape:
    the dense matrix, or both factors once `lowrank` split it (prune ranks the two
    factors' weights together). `canon`: the step's inputs up to renaming (the new
    values follow from them): a layer of the same shape's settled values, renamed.
    `raw` receives (the density before rounding, the weight elements) for a global
    pruning to round its total (`pools.settle_pool`); a templated step has one layer, whose
    own rounding is the total's, so it needs none. `lows` receives the lower end of each
    count that could not be rounded exactly (the result holds its upper end: a range,
    settling.settle_all), templated alike."""
    if canon is None:
        return settling.settle_all(model, new, old, fact, factorized, raw, lows=lows)
    shape = None if fact is None else (fact.kind, fact.weight_params, fact.in_features, fact.out_features,
                                       fact.depthwise)
    what = ("settled", tuple(new), shape, factorized)
    key = (what, canon.key)
    templates = model.templates.get(key)
    if templates is None:
        ends: dict = {}
        out = settling.settle_all(model, new, old, fact, factorized, lows=ends)
        if lows is not None:
            lows.update(ends)
        if all(isinstance(v, sp.Basic) for v in [*out.values(), *ends.values()]):
            model.templates[key] = ({f: A.Template(v, canon.symbols) for f, v in out.items()},
                                    {f: A.Template(v, canon.symbols) for f, v in ends.items()})
        return out
    values, ends = templates
    if lows is not None:
        lows.update({f: t(canon.symbols) for f, t in ends.items()})
    return {f: t(canon.symbols) for f, t in values.items()}


def _default_value(param):
    """A parameter's declared default (the checker normally fills arguments in already)."""
    if param.type == "enum" and isinstance(param.default, str):
        return A.EnumValue(param.default)
    if isinstance(param.default, (int, float, bool)):
        return A.num(param.default)
    return _Opaque(f"default of `{param.name}`")


__all__ = ["Ctx", "LAYER_FIELDS", "MODEL_FIELDS", "PipelineModel", "Requirement", "State", "build_model",
           "eval_ir", "initial_state"]
