"""A pipeline stepped symbolically through the abstract state (verify/state.py).

Contract: `build_model(program, pipeline)` returns a `PipelineModel`: the initial
state (from ModelFacts), the final state, and one `Requirement` per (step, selected
layer, requires clause) holding that clause as a sympy condition over knob symbols in
the state *before* the step.

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

from dataclasses import dataclass

import sympy as sp

from kmr_dsl.core.memo import ByIdentity
from kmr_dsl.core.program import CheckedProgram, Const, EnumLit, FieldRef, IExpr, KnobRef, ParamRef, Pipeline, Rule, \
    Step
from kmr_dsl.core.state import MATRIX_KINDS
from kmr_dsl.core.walk import children, nodes
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify import groups, lowend, pools, requirements, settling
from kmr_dsl.verify.algebra import Opaque as _Opaque
from kmr_dsl.verify.algebra import placeholder as _placeholder
from kmr_dsl.verify.intervals import intern_key, symbols_key, values_key
from kmr_dsl.verify.knobs import KnobTable
from kmr_dsl.verify.requirements import Requirement
from kmr_dsl.verify.state import PipelineModel, State, changed, initial_state
from kmr_dsl.verify.sympy_eval import Ctx, eval_ir
from kmr_dsl.verify.template import Template


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
    return Canon(intern_key(model.templates, "state: canon key", parts + (symbols_key(slots, model.knobs),)),
                 tuple(slots))


def _templated(model: PipelineModel, canon: Canon | None, what: tuple, build):
    """build()'s value, or the value a layer with the same inputs up to renaming got,
    built again over this layer's knobs (template.Template). `build` may raise
    NotModelled: nothing is remembered then (its message may name this layer)."""
    if canon is None:
        return build()
    key = (what, canon.key)
    template = model.templates.get(key)
    if template is not None:
        return template(canon.symbols)
    value = build()
    if isinstance(value, sp.Basic):
        model.templates[key] = Template(value, canon.symbols)
    return value


# ---------------------------------------------------------------- stepping

# a rule's parameter defaults as values (constants: shared by every step of the rule)
DEFAULTS = ByIdentity("a rule's parameter defaults", "Rule", limit=256)
PARAMS_READ = ByIdentity("parameters a rule's contract reads", "Rule", limit=256)
# a constant argument's value (Const, EnumLit: immutable values, shared by the steps passing it)
CONSTANT_ARGS = ByIdentity("constant step arguments as values", "IR constant", limit=4096)


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
        # an argument is most often a leaf of the IR: a knob (`amount = s[l]`), or a constant
        # (a default the checker filled in: one node shared by every step of the rule, whose
        # value is the node's alone, CONSTANT_ARGS); measured ~1% of verify at 3,000 layers
        t = type(expr)
        if t is Const or t is EnumLit:
            refs = ()
        elif not children(expr):
            refs = {expr.knob} if isinstance(expr, KnobRef) else ()
        else:
            refs = {n.knob for n in nodes(expr) if isinstance(n, KnobRef)}
        if refs:
            model.arg_knobs |= refs
            if name not in read:
                model.opaque_knobs |= refs
        try:
            params[name] = CONSTANT_ARGS.get(expr, lambda: eval_ir(expr, knob_ctx)) if not refs and \
                (t is Const or t is EnumLit) else eval_ir(expr, knob_ctx)
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
                if changed(old.get(f), v):
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
            if changed(state.model.get(f), v):
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


# a rule's requires clauses as _requirements reads them: (index, clause, its template
# `what`, the fields it reads as (in the layer?, text, field), whether it reads the density)
CLAUSES = ByIdentity("a rule's requires clauses and the fields they read", "Rule", limit=256)


def _clauses(rule: Rule) -> list:
    return CLAUSES.get(rule, lambda: [
        (ci, clause, ("requires", id(clause)),
         tuple((ref.scope == "layer", f"{ref.scope}.{ref.field}", ref.field)
               for ref in requirements.fields_read(clause)),
         FieldRef("layer", "density") in set(nodes(clause)))
        for ci, clause in enumerate(rule.requires)])


def _requirements(model: PipelineModel, state: State, index: int, step: Step, params: dict, layer,
                  canon: Canon | None = None) -> None:
    """One Requirement per requires clause of `step` on `layer`, over the current state.
    `canon`: the step's inputs up to renaming: a clause a layer of the same inputs had is
    that layer's, renamed (`_templated`; the requirement names the template it instantiates).
    Why inline: a 3,000-layer pipeline makes ~27,000 requirements, and the per-clause
    lookups and closures were a measured ~2% of verify."""
    lstate = state.layers[layer] if layer is not None else None
    mstate, origin, templates = state.model, state.origin, model.templates
    pooled = layer in state.pools
    ctx = None
    for ci, clause, what, reads, reads_density in _clauses(step.rule):
        template = None
        try:
            built = None
            if canon is not None:
                template = (what, canon.key)
                hit = templates.get(template)
                if hit is not None:
                    built = hit(canon.symbols)
                else:
                    if ctx is None:
                        ctx = Ctx(model.knobs, params, lstate, mstate)
                    built = eval_ir(clause, ctx)
                    if isinstance(built, sp.Basic):
                        templates[template] = Template(built, canon.symbols)
                    else:
                        template = None          # built, not remembered (not a sympy value)
            else:
                if ctx is None:
                    ctx = Ctx(model.knobs, params, lstate, mstate)
                built = eval_ir(clause, ctx)
            cond = built
            if not A.is_boolean(cond):
                raise A.NotModelled("a requires clause that is not a condition")
        except A.NotModelled as exc:
            cond, template = _placeholder(str(exc), True), None
        if pooled and reads_density:
            cond, template = _placeholder(f"the density of `{layer}` after a global pruning is known only in "
                                          "total", True), None
        fields = []
        for in_layer, text, f in reads:
            scope = lstate if in_layer else mstate
            if scope is not None and f in scope:
                fields.append((text, scope[f], origin.get((layer if in_layer else None, f))))
        model.requirements.append(Requirement(index, step, layer, ci, clause, cond, tuple(fields),
                                              template=template))


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
            model.templates[key] = ({f: Template(v, canon.symbols) for f, v in out.items()},
                                    {f: Template(v, canon.symbols) for f, v in ends.items()})
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


__all__ = ["MODEL_FIELDS", "build_model"]
