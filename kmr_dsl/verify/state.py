"""The abstract state of spec section 5, stepped symbolically through a pipeline.

Contract: `build_model(program, pipeline)` returns a `PipelineModel`: the initial
state (from ModelFacts), the final state, and one `Requirement` per (step, selected
layer, requires clause) holding that clause as a sympy condition over knob symbols in
the state *before* the step. Field values are sympy expressions built by
`kmr_dsl.verify.algebra` (constants folded, so untouched fields stay integers).

State: per layer `kind` (an EnumValue), `in_features`, `out_features`, `params`
(static), `density` (measured at load), `bits` (from facts), `rank` (min(in, out)),
`adapter_rank` (0), `frozen` (false), `group_size` and `foldable` (from facts); per
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
- what a step does besides its effects is `kmr_dsl.core.step`, evaluated over sympy
  (`algebra.SYMBOLS`): counts an effect makes fractional are settled as the runtime
  rounds them (channels, ranks, kept weights), consumers shrink with their producer,
  a changed shape's rank follows it (what `lowrank` decided, two factors or one
  matrix, stays: `State.factors`); and a layer whose channels shrink with no matrix
  consumer adds the requirement that it keeps them (`Requirement.implicit`: the
  runtime refuses to shrink it, KMR304); a step whose rule requires `layer.foldable`
  selects every Linear that reads the same normalization as each selected layer (the
  facts' `fold_group`; the runtime refuses a fold that would leave one unscaled: kind
  "fold", KMR306);
- global pruning over several layers pools them (`State.pools`, verify/pools.py): each
  keeps the average density, exact in total; a later step that changes some of them on
  their own adds an UNKNOWN requirement (kind "pooled", KMR303), and a requires clause
  reading a pooled layer's density is UNKNOWN too; the kept total is rounded once, as
  the runtime rounds it (`_settle_pool`);
- a density effect that does not read the old density (`lowrank`'s `else 1`: the
  truncated SVD's factors, computed afresh) and `lowrank`'s rank with `energy < 1` give
  only upper ends; `State.low` keeps their lower ends (verify/lowend.py), which later
  steps carry through their effects, and the meters' lower ends read them (verify/cost.py
  LOW_ENDS): a line that needs a meter large reads that end (verify/budget.py).
A value the state cannot express (a data argument in arithmetic, an unknown field)
becomes an `Unmodelled` placeholder, and every obligation touching it is UNKNOWN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp
from sympy.logic.boolalg import BooleanAtom

from kmr_dsl.core import step as core_step
from kmr_dsl.core.program import (CheckedProgram, Const, DataRef, EnumLit, FieldRef, If, IExpr, KnobRef, MeterRef,
                                  NO_DATA, ModelArg, Op, ParamRef, Pipeline, Rule, Step)
from kmr_dsl.core.state import MATRIX_KINDS
from kmr_dsl.core.memo import ByIdentity, Memo
from kmr_dsl.core.walk import Dispatch, Unsupported, nodes
from kmr_dsl.facts import ModelFacts
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify import groups, lowend, pools, rounding
from kmr_dsl.verify.intervals import shape_of
from kmr_dsl.verify.knobs import KnobTable


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
    # layer -> what the last `lowrank` on it decided (`Factors`): later shape changes slice
    # its factors, they do not re-decide the factorization
    factors: dict[str, "Factors"] = field(default_factory=dict)

    def fork(self) -> "State":
        """A copy that steps can change in place (layer dicts are replaced, never mutated)."""
        return State(dict(self.layers), dict(self.model), dict(self.origin), dict(self.pools),
                     dict(self.low), dict(self.loose_at), dict(self.factors))


@dataclass(frozen=True)
class Factors:
    """What a rank effect decided for a layer (kmr_dsl/rules/lowrank.py `truncate`): the
    inner rank k and the shape (in, out) at which it compared k * (in + out) with
    in * out. The runtime keeps two Linears whenever that held, and a later head or
    channel pruning slices them (rows of the second, columns of the first): k stays, and
    so does the decision, even where the smaller shape would not factorize anew."""
    rank: object
    in_features: object
    out_features: object

    def fields(self) -> dict:
        """The keys `factor_test` / `matrix_numel` read beside a layer's own fields."""
        return {"factor_rank": self.rank, "factor_in": self.in_features, "factor_out": self.out_features}


@dataclass(frozen=True)
class Requirement:
    step_index: int
    step: Step
    layer: str | None
    clause_index: int
    clause: IExpr                                 # the rule's requires, as written
    condition: object                             # sympy condition over knob symbols
    fields: tuple[tuple[str, object, int | None], ...]   # (field text, value, step that set it)
    implicit: str | None = None                   # a requirement of the step semantics, not of the rule
    kind: str = "consumer"                        # an implicit one: "consumer" (KMR304), "pooled" or "fold" (KMR306)


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


@dataclass(frozen=True)
class _Opaque:
    """A data or model argument: legal as an argument, never computed with."""
    what: str


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

def values_key(values, slots: dict, knobs=None) -> tuple | None:
    """A hashable key of (name, value) pairs up to renaming of knob symbols: constants as
    themselves, a symbolic value as its shape and constants (intervals.shape_of), its
    symbols numbered in order of first appearance in `slots` (shared across calls, so
    several dicts make one key). None when a value has no such key (a placeholder the
    state cannot express, a data argument's reason that may name a symbol)."""
    out = []
    try:
        for f, v in values:
            if isinstance(v, sp.Rational):
                out.append((f, v.p, v.q))
            elif isinstance(v, BooleanAtom):
                out.append((f, bool(v)))
            elif isinstance(v, A.EnumValue):
                out.append((f, v.member))
            elif isinstance(v, _Opaque):
                out.append((f, "opaque", v.what))
            elif isinstance(v, A.EnumKnob):
                out.append((f, "enum", v.members, shape_of(v.symbol, slots, [])))
            elif isinstance(v, sp.Basic):
                consts: list = []
                out.append((f, shape_of(v, slots, consts), tuple(consts)))
            else:
                return None
    except A.NotModelled:
        return None
    return tuple(out)


def symbols_key(slots: dict, knobs) -> tuple:
    """Each slot's symbol class and knob declaration: layers whose keys match read knobs
    of the same declarations (the same domains)."""
    by_symbol = knobs.by_symbol if knobs is not None else {}
    return tuple((type(s), id(by_symbol[s].knob) if s in by_symbol else None) for s in slots)


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


def _placeholder(reason: str, boolean: bool):
    cls = A.UnmodelledBool if boolean else A.Unmodelled
    return cls(f"?{reason}")


FIELDS_READ = ByIdentity("state fields a requires clause reads", "clause", limit=1024)


def _fields_read(clause: IExpr) -> list[FieldRef]:
    """The fields a clause reads, first occurrence first (cached: asked once per layer)."""
    def build():
        seen, out = set(), []
        for n in nodes(clause):
            if isinstance(n, FieldRef) and (n.scope, n.field) not in seen:
                seen.add((n.scope, n.field))
                out.append(n)
        return out
    return FIELDS_READ.get(clause, build)


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
    # `touched` layers' previous dicts are what _follow_shapes compares against
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
    folds = rule.accepts is not None and _reads_foldable(rule)
    # a one-layer step (a per-layer family unrolled: one step per layer) on a layer of a
    # shape seen before evaluates nothing again: its clauses, effects and settled counts
    # are the earlier layer's over its own knobs (_templated)
    canon = None
    if len(targets) == 1 and targets[0] is not None and targets[0] not in state.pools:
        canon = _canon(model, rule, params, state.layers[targets[0]], state.model)
    for layer in targets:
        _requirements(model, state, index, step, params, layer, canon)
        if layer is not None and folds:
            _require_fold_group(model, step, index, layer, layer_facts)
    densities = {layer: (state.layers[layer]["density"], state.origin.get((layer, "density")))
                 for layer in targets if layer is not None}
    ranked = _ranked_together(rule, params)
    raw: dict[str, tuple] = {}          # layer -> (its density before rounding, its weight elements)
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
            # the shape this step leaves (a step that slices it included)
            record = None if "rank" in new_layer else state.factors.get(layer)
            sliced = record.fields() if record is not None else {}
            for f, v in _settled(model, new_layer, {**old, **sliced} if sliced else old, layer_facts.get(layer),
                                 (layer, "rank") in state.origin or bool(sliced), None if sliced else canon,
                                 raw.setdefault(layer, [])).items():
                if old.get(f) != v:
                    lstate[f] = v
                    state.origin[(layer, f)] = index
            state.layers[layer] = lstate
            if "rank" in new_layer and layer_facts.get(layer) is not None \
                    and layer_facts[layer].kind in MATRIX_KINDS:
                _record_factors(state, layer, old, lstate, lowend.rank_floor(rule, params))
            elif rule.impl == LORA_IMPL and layer in state.factors:
                _merge_factors(state, layer, params.get("merge", A.TRUE))
            before.setdefault(layer, old)
            touched.add(layer)
            if lstate["heads"] is not old["heads"] and lstate["heads"] != old["heads"]:
                heads = groups.remove_heads(state, layer, old["heads"], lstate["heads"], layer_facts, index, before)
                grouped.update(heads)
                touched.update(heads)
            elif lstate["out_features"] is not old["out_features"] and lstate["out_features"] != old["out_features"]:
                _require_consumer(model, state, step, index, layer, old, lstate, layer_facts)
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
    if ranked is not A.FALSE:
        _settle_pool(model, state, index, ranked, raw)
    _follow_shapes(state, before, touched, index, step)
    _follow_low(model, state, index, step, params, targets, before, layer_facts)
    if densities:
        _follow_pools(model, state, index, step, params, densities, before, layer_facts)
    return state


RHO = sp.Symbol("rho")     # a layer's density before a step, to see whether its effect reads it


def _follow_pools(model: PipelineModel, state: State, index: int, step: Step, params: dict, densities: dict,
                  before: dict, layer_facts) -> None:
    """Global pruning's pools through this step (verify/pools.py); a pooled layer whose
    density the state cannot know after it gets an UNKNOWN requirement at this step."""
    selection = [l for l in densities if getattr(layer_facts.get(l), "weight_params", 0)]
    changed = [l for l in selection if state.layers[l]["density"] is not densities[l][0]
               and state.layers[l]["density"] != densities[l][0]]
    if not changed:
        return
    effect = next((e for e in step.rule.effects if e.scope == "layer" and e.field == "density"), None)
    reads = set()
    # (whether the effect reads the old density matters only for a layer already in a
    # pool: pools.step_pools reads `reads_density` for those alone)
    for l in (changed if any(l in state.pools for l in changed) else ()):
        try:
            value = eval_ir(effect.expr, Ctx(model.knobs, params, {**before.get(l, state.layers[l]), "density": RHO},
                                             state.model))
        except (A.NotModelled, AttributeError):
            value = RHO
        if not isinstance(value, sp.Basic) or RHO in A.knob_symbols(value):
            reads.add(l)
    method = params.get("method")
    global_ = None if isinstance(method, A.EnumKnob) and "global" in method.members else \
        isinstance(method, A.EnumValue) and method.member == "global"
    pools_before = state.pools
    state.pools, unknown = pools.step_pools(pools_before, selection, changed, reads, global_)
    for l in unknown:
        ranked = ", ".join(f"`{x}`" for x in sorted(pools_before[l]))
        density, origin = densities[l]
        at = f" at {model.pipeline.steps[origin].span}" if origin is not None else ""
        why = (f"`{step.rule.name}` changes the density of `{l}` on its own, but the global pruning{at} "
               f"fixed only the total of {ranked}")
        cond = _placeholder(f"the density of `{l}` after a global pruning is known only in total", True)
        model.requirements.append(Requirement(index, step, l, len(step.rule.requires) + 1,
                                              Op("==", (FieldRef("layer", "density"), FieldRef("layer", "density"))),
                                              cond, (("layer.density", density, origin),),
                                              why, kind="pooled"))


def _follow_low(model: PipelineModel, state: State, index: int, step: Step, params: dict, targets: list,
                before: dict, layer_facts) -> None:
    """The lower ends (verify/lowend.py) of the selected layers' density and rank after the
    step: each effect at the old lower end, a fresh density at 0, `lowrank`'s energy cut
    at rank 1, settled as the upper ends are; a changed shape caps a rank's lower end."""
    effects = {e.field: e for e in step.rule.effects if e.scope == "layer" and e.field in ("density", "rank")}
    floor = lowend.rank_floor(step.rule, params) if "rank" in effects else None
    for layer in targets:
        fact = layer_facts.get(layer)
        if layer is None or fact is None or fact.kind not in MATRIX_KINDS or not fact.weight_params:
            continue
        old, new, low = before.get(layer, state.layers[layer]), state.layers[layer], state.low.get(layer, {})
        for f, effect in effects.items():
            try:
                value = eval_ir(effect.expr, Ctx(model.knobs, params, {**old, f: RHO}, state.model))
            except A.NotModelled:
                value = None
            if not isinstance(value, sp.Basic) or A.is_boolean(value):
                lowend.put(state, layer, f, A.ZERO if f == "density" else A.ONE, index)
                continue
            if f not in low and (floor is None if f == "rank" else not lowend.loosens(value, RHO)):
                continue                  # exact before and after: the state's own value
            at = low.get(f, old[f])
            if value.has(sp.Piecewise) and _larger_than(value, 60, at):
                # substituting into a large piecewise makes sympy fold it by distributing
                # its conditions (exponential): the trivial lower end instead, sound
                lowend.put(state, layer, f, A.ZERO if f == "density" else A.ONE, index)
                continue
            exact = value.xreplace({RHO: at})
            v = lowend.density_low(value, RHO, at) if f == "density" else exact
            made = v != exact or (f == "rank" and floor is not None)
            if not made and f not in low:
                continue                  # exact before and after: the state's own value
            if f == "rank" and floor is not None:
                v = A.ite(floor, A.ONE, v)
            if value is not RHO:          # an effect that keeps the field keeps its settled lower end
                v = _settled(model, {f: v}, new, fact, (layer, "rank") in state.origin)[f]
            if isinstance(v, sp.Basic) and v.atoms(sp.ITE):
                # sympy folded a piecewise into a condition the evaluators do not read:
                # the trivial lower end instead
                v = A.ZERO if f == "density" else A.ONE
            lowend.put(state, layer, f, v, index if made else None)
        if "rank" in state.low.get(layer, {}) and (new["in_features"] != old["in_features"]
                                                  or new["out_features"] != old["out_features"]):
            side = A.min_(new["in_features"], new["out_features"])
            lowend.put(state, layer, "rank", A.min_(state.low[layer]["rank"], side))


def _larger_than(value, limit: int, *more) -> bool:
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
        for ref in _fields_read(clause):
            scope = lstate if ref.scope == "layer" else state.model
            key = (layer if ref.scope == "layer" else None, ref.field)
            if scope is not None and ref.field in scope:
                fields.append((f"{ref.scope}.{ref.field}", scope[ref.field], state.origin.get(key)))
        model.requirements.append(Requirement(index, step, layer, ci, clause, cond, tuple(fields)))


def _settled(model: PipelineModel, new: dict, old: dict, fact, factorized: bool, canon: Canon | None = None,
             raw: list | None = None) -> dict:
    """The effects' values as the runtime keeps them (core.step.settle): whole channels,
    ranks and weights. Kept weights are counted on the layer's weight at its new shape:
    the dense matrix, or both factors once `lowrank` split it (prune ranks the two
    factors' weights together). `canon`: the step's inputs up to renaming (the new
    values follow from them): a layer of the same shape's settled values, renamed.
    `raw` receives (the density before rounding, the weight elements) for a global
    pruning to round its total (`_settle_pool`); a templated step has one layer, whose
    own rounding is the total's, so it needs none."""
    if canon is None:
        return _settle_all(model, new, old, fact, factorized, raw)
    shape = None if fact is None else (fact.kind, fact.weight_params, fact.in_features, fact.out_features,
                                       fact.depthwise)
    what = ("settled", tuple(new), shape, factorized)
    key = (what, canon.key)
    templates = model.templates.get(key)
    if templates is None:
        out = _settle_all(model, new, old, fact, factorized)
        if all(isinstance(v, sp.Basic) for v in out.values()):
            model.templates[key] = {f: A.Template(v, canon.symbols) for f, v in out.items()}
        return out
    return {f: t(canon.symbols) for f, t in templates.items()}


def _settle_all(model: PipelineModel, new: dict, old: dict, fact, factorized: bool, raw: list | None = None) -> dict:
    out = dict(new)
    ops = _ops_for(model)
    for f in ("in_features", "out_features", "rank", "heads"):
        if f in out:
            out[f] = _settle(f, out[f], None, ops)
    if "density" in out and fact is not None and fact.kind in MATRIX_KINDS and fact.weight_params:
        st = {**old, **out}
        numel = core_step.dense_numel(fact.weight_params, fact.in_features, fact.out_features,
                                      st["in_features"], st["out_features"], A.SYMBOLS, fact.depthwise)
        numel = matrix_numel(st, numel, factorized)
        if raw is not None:
            raw.append((out["density"], numel))
        out["density"] = _settle("density", out["density"], numel, ops)
    return out


def _ranked_together(rule: Rule, params: dict):
    """The condition under which a step ranks its selected layers' weights together
    (`method = global`): TRUE, FALSE, or a condition over an enum knob."""
    method = params.get("method")
    if not any(e.scope == "layer" and e.field == "density" for e in rule.effects):
        return A.FALSE
    if isinstance(method, (A.EnumValue, A.EnumKnob)):
        return A.enum_equal(method, A.EnumValue("global"))
    return A.FALSE


def _settle_pool(model: PipelineModel, state: State, index: int, ranked, raw: dict) -> None:
    """Global pruning keeps round_half_up(total) weights of the whole selection, not the
    sum of each layer's rounded share (kmr_dsl/rules/prune.py): where the step ranks
    together (`ranked`), the layers' densities are the unrounded shares with the total's
    rounding added to the largest layer (pools.settle_total), so `nonzero` is exact."""
    if len(raw) < 2:
        return                  # one layer: its own rounding is the total's
    try:
        pooled = pools.settle_total(raw, lambda x: core_step.round_half_up(x, _ops_for(model)))
    except A.NotModelled:
        pooled = {l: d for l, (d, _) in raw.items()}   # unrounded, as `_settle` keeps a count it cannot round
    for layer, density in pooled.items():
        value = density if ranked is A.TRUE else A.ite(ranked, density, state.layers[layer]["density"])
        if state.layers[layer]["density"] != value:
            state.layers[layer] = {**state.layers[layer], "density": value}
            state.origin[(layer, "density")] = index


def factor_test(st: dict):
    """Whether `lowrank` made the layer two Linears: only when the factors are smaller than
    the matrix (rank * (in + out) < in * out, kmr_dsl/rules/lowrank.py), at the rank and
    shape it decided at (`Factors.fields`, where `st` carries them), else the layer's own."""
    inf, outf = st.get("factor_in", st["in_features"]), st.get("factor_out", st["out_features"])
    return A.compare("<", A.mul(factor_rank(st), A.add(inf, outf)), A.mul(inf, outf))


def factor_rank(st: dict):
    """The factors' inner dimension: the decided rank, which slicing rows or columns keeps
    (the layer's `rank` field is at most its sides, as the runtime reports it)."""
    return st.get("factor_rank", st["rank"])


def matrix_numel(st: dict, dense_n, factorized: bool):
    """Weight elements of a matrix layer: its dense count, or its factors' once a rule set its rank."""
    if not factorized:
        return dense_n
    return A.ite(factor_test(st), A.mul(factor_rank(st), A.add(st["in_features"], st["out_features"])), dense_n)


def factor_fields(state: State, layer: str) -> dict:
    """The layer's `Factors` fields where they differ from its own rank and shape (a head
    or channel pruning after `lowrank`), else none: the layer's fields decide alike."""
    rec = state.factors.get(layer)
    if rec is None:
        return {}
    st = state.layers[layer]
    if all(a is b or a == b for a, b in ((rec.rank, st["rank"]), (rec.in_features, st["in_features"]),
                                         (rec.out_features, st["out_features"]))):
        return {}
    return rec.fields()


# merging an adapter into a factorized (or truncated) layer projects the merged matrix
# back onto the layer's rank by SVD at its current shape (kmr_dsl/rules/lora.py)
LORA_IMPL = "kmr_dsl.rules.lora:apply"


def _merge_factors(state: State, layer: str, merge) -> None:
    """A merged adapter re-decides the form at the layer's rank and shape (`Factors`)."""
    if not isinstance(merge, sp.Basic) or not A.is_boolean(merge):
        merge = A.TRUE          # not modelled: lora's default, and the runtime's usual case
    st, rec = state.layers[layer], state.factors[layer]
    if merge is A.TRUE:
        del state.factors[layer]
    elif merge is not A.FALSE:
        state.factors[layer] = Factors(A.ite(merge, st["rank"], rec.rank), A.ite(merge, st["in_features"],
                                                                                 rec.in_features),
                                       A.ite(merge, st["out_features"], rec.out_features))


def _record_factors(state: State, layer: str, old: dict, new: dict, floor) -> None:
    """What a rank effect decided (`Factors`). The runtime leaves the layer as it is (its
    factors, or its dense weights) where the kept rank is the current one and no energy
    cut applies (`floor`, lowend.rank_floor); elsewhere it decides at the current shape."""
    keep = A.compare(">=", new["rank"], old["rank"])
    if floor is not None:
        keep = A.and_(keep, A.not_(floor))
    prior = state.factors.get(layer)
    if keep is A.TRUE:
        return
    fresh = Factors(new["rank"], new["in_features"], new["out_features"])
    if keep is A.FALSE:
        state.factors[layer] = fresh
        return
    # where it keeps the layer, a never-factorized one is decided at its own shape: a dense
    # layer's rank never passes the test (truncate would have split it), at any smaller shape
    prior = prior or Factors(old["rank"], old["in_features"], old["out_features"])
    state.factors[layer] = Factors(A.ite(keep, prior.rank, fresh.rank),
                                   A.ite(keep, prior.in_features, fresh.in_features),
                                   A.ite(keep, prior.out_features, fresh.out_features))


def _ops_for(model: PipelineModel):
    """The arithmetic counts are settled in (verify/rounding.py): exact floors, folded over
    finite knobs and a choice among breakpoints over a continuous one. A count it cannot
    round (two knobs, too many values) keeps the exact product (`_settle`), a documented
    gap of cost.py."""
    return model.compiled.get(("step ops",), lambda: rounding.step_ops(model.knobs))


def _settle(field: str, value, numel, ops):
    if isinstance(value, (A.Unmodelled, A.UnmodelledBool)) or A.is_boolean(value):
        return value
    try:
        return core_step.settle(field, value, numel, ops)
    except A.NotModelled:
        return value


def _require_consumer(model: PipelineModel, state: State, step: Step, index: int, layer: str, old: dict, new: dict,
                      layer_facts) -> None:
    """A layer whose channels shrink needs a matrix consumer that shrinks with it."""
    fact = layer_facts.get(layer)
    kinds = [layer_facts[c].kind for c in (fact.consumers if fact else ()) if c in layer_facts]
    cond = core_step.shrink_condition(old["out_features"], new["out_features"], kinds, A.SYMBOLS)
    if cond is None:
        return
    fields = (("layer.out_features", old["out_features"], state.origin.get((layer, "out_features"))),)
    clause = Op("==", (FieldRef("layer", "out_features"), FieldRef("layer", "out_features")))
    why = (f"`{step.rule.name}` shrinks the output channels of `{layer}`, which has no consumer layer "
           "that can shrink with it")
    if fact is not None and fact.unlinked:
        why += f": {fact.unlinked}"
    model.requirements.append(Requirement(index, step, layer, len(step.rule.requires), clause, cond, fields, why))


READS_FOLDABLE = ByIdentity("whether a rule's requires reads layer.foldable", "Rule", limit=256)


def _reads_foldable(rule: Rule) -> bool:
    """(cached per rule: asked once per step)"""
    return READS_FOLDABLE.get(rule, lambda: any(isinstance(n, FieldRef) and (n.scope, n.field) == ("layer", "foldable")
                                                for c in rule.requires for n in nodes(c)))


def _require_fold_group(model: PipelineModel, step: Step, index: int, layer: str, layer_facts) -> None:
    """A scale folded into a normalization must scale every Linear that reads it: the
    step selects the layer's whole fold group (a static fact: true or false)."""
    fact = layer_facts.get(layer)
    if fact is None or not fact.fold_group:
        return                  # not foldable at all: the rule's own `requires layer.foldable` says so
    selected = set(step.layers)
    missing = [m for m in fact.fold_group if m not in selected]
    if not missing:
        return
    why = (f"`{layer}` reads the output of `{fact.fold_norm}`, which {', '.join(f'`{m}`' for m in missing)} "
           "also read(s) without being selected")
    clause = Op("==", (FieldRef("layer", "foldable"), FieldRef("layer", "foldable")))
    model.requirements.append(Requirement(index, step, layer, len(step.rule.requires) + 2, clause, A.FALSE, (),
                                          why, kind="fold"))


def _follow_shapes(state: State, before: dict, touched: set, index: int, step: Step) -> None:
    """A changed shape's rank follows it (core.step.follow_rank): channel pruning shrinks a
    layer (and its consumers); the runtime then reports the smaller rank, and `lowrank`
    cuts relative to it. A changed shape's density is not known where the layer may be
    sparse: channel and head pruning remove whole rows (a consumer: columns) ranked by
    norm, and the zeros of an earlier magnitude or N:M pruning are not spread evenly
    over them (the kept rows of a half-pruned layer hold more than half their weights).
    Between the bounds max(0, kept - removed) and min(kept, new size) the share depends
    on the weights: the density becomes a placeholder there (`_sparse_rows`), and what
    reads it (`nonzero`, `size`) is UNKNOWN, never the average, which the run beats."""
    for name in sorted(touched):
        st, old = state.layers[name], before.get(name)
        if old is None or old is st:
            continue
        if st["in_features"] != old["in_features"] or st["out_features"] != old["out_features"]:
            density = _sparse_rows(name, old["density"], st["density"], index, step)
            if density is not st["density"]:
                st = dict(st)
                st["density"] = density
                state.layers[name] = st
                state.origin[(name, "density")] = index
            rank_set = (name, "rank") in state.origin
            if rank_set and st["rank"] is not old["rank"]:
                continue            # the rule itself set the rank in this step
            st = dict(st)
            st["rank"] = core_step.follow_rank(st["rank"], st["in_features"], st["out_features"], rank_set,
                                               A.SYMBOLS)
            state.layers[name] = st


def _sparse_rows(name: str, old, new, index: int, step: Step):
    """The density of a layer whose rows or columns a step removed: `new` (the average,
    kept by the rule's effect) where the layer was dense before, else not known."""
    if A.is_number(A.num(old)) and A.num(old) == 1:
        return new
    sparse = A.compare("<", old, 1)
    if sparse is A.FALSE:
        return new
    why = (f"the density of `{name}` after step {index + 1} `{step.rule.name}` (line {step.span.line}): "
           f"removing rows or columns of a sparse layer keeps a share of its zeros that depends on the weights")
    return A.ite(sparse, _placeholder(why, False), new)


def _default_value(param):
    """A parameter's declared default (the checker normally fills arguments in already)."""
    if param.type == "enum" and isinstance(param.default, str):
        return A.EnumValue(param.default)
    if isinstance(param.default, (int, float, bool)):
        return A.num(param.default)
    return _Opaque(f"default of `{param.name}`")


__all__ = ["Ctx", "Factors", "LAYER_FIELDS", "MODEL_FIELDS", "PipelineModel", "Requirement", "State", "build_model",
           "eval_ir", "initial_state"]
