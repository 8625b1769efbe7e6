"""The abstract state of spec section 5, stepped symbolically through a pipeline.

Contract: `build_model(program, pipeline)` returns a `PipelineModel`: the initial
state (from ModelFacts), the final state, and one `Requirement` per (step, selected
layer, requires clause) holding that clause as a sympy condition over knob symbols in
the state *before* the step. Field values are sympy expressions built by
`kmr_dsl.verify.algebra` (constants folded, so untouched fields stay integers).

State: per layer `kind` (an EnumValue), `in_features`, `out_features`, `params`
(static), `density` (measured at load), `bits` (from facts), `rank` (min(in, out)),
`adapter_rank` (0), `frozen` (false); per model `trainable` (true).

Semantics, in order:
- a step's arguments are evaluated once, knobs becoming their symbols; enum members
  and enum comparisons with constant arguments fold here (`method == nm` with
  `method = magnitude` is false before any solver sees it);
- per selected layer (a whole-model rule: once, with no layer), every requires clause
  is evaluated in the current state, then all effects are evaluated and assigned
  together (simultaneous assignment); model effects of a per-layer step compose layer
  after layer (quantizing three layers ANDs three conditions into `trainable`);
- structured channel pruning: when a step changes a layer's `out_features`, every
  layer in that layer's `consumers` has `in_features` scaled by the same ratio (a norm
  in between is sliced: its out_features too), and a layer whose rank no rule has set
  keeps rank = min(in_features, out_features) of its new shape.
Not modelled, by design (cost.py lists every gap): rounding of channel counts and
ranks (the runtime rounds; the state keeps the exact product). A value the state
cannot express (a data argument in arithmetic, an unknown field) becomes an
`Unmodelled` placeholder, and every obligation touching it is UNKNOWN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from kmr_dsl.core.program import (CheckedProgram, Const, DataRef, EnumLit, FieldRef, If, IExpr, KnobRef, MeterRef,
                                   ModelArg, Op, ParamRef, Pipeline, Rule, Step)
from kmr_dsl.facts import ModelFacts
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify.knobs import KnobTable

MATRIX_KINDS = ("Linear", "Conv1d", "Conv2d", "Embedding")   # layers whose weight is one matrix leaf
LAYER_FIELDS = ("kind", "in_features", "out_features", "params", "density", "bits", "rank", "adapter_rank", "frozen")
MODEL_FIELDS = ("trainable",)


@dataclass
class State:
    layers: dict[str, dict[str, object]]
    model: dict[str, object]
    # (layer name or None for the model, field) -> index of the step that last changed it
    origin: dict[tuple[str | None, str], int] = field(default_factory=dict)

    def fork(self) -> "State":
        """A copy that steps can change in place (layer dicts are replaced, never mutated)."""
        return State(dict(self.layers), dict(self.model), dict(self.origin))


@dataclass(frozen=True)
class Requirement:
    step_index: int
    step: Step
    layer: str | None
    clause_index: int
    clause: IExpr                                 # the rule's requires, as written
    condition: object                             # sympy condition over knob symbols
    fields: tuple[tuple[str, object, int | None], ...]   # (field text, value, step that set it)


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
    cache: dict = field(default_factory=dict)      # cost expressions, keyed by (kind, meter, id(state))


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
    handler = _EVAL.get(type(e))
    if handler is None:
        raise A.NotModelled(f"cannot model {type(e).__name__}")
    return handler(e, ctx)


_CONSTS: dict[int, tuple] = {}


def _e_const(e, ctx):
    # rules are shared by every step that applies them: convert each literal once
    hit = _CONSTS.get(id(e))
    if hit is None or hit[0] is not e:
        value = A.EnumValue(e.value) if isinstance(e.value, str) else A.num(e.value)
        if len(_CONSTS) > 10_000:
            _CONSTS.clear()
        hit = _CONSTS[id(e)] = (e, value)
    return hit[1]


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


_EVAL: dict = {
    Const: _e_const, KnobRef: _e_knob, EnumLit: lambda e, ctx: A.EnumValue(e.member), ParamRef: _e_param,
    FieldRef: _e_field, MeterRef: _e_meter, DataRef: lambda e, ctx: _Opaque(f"data {e.name}"),
    ModelArg: lambda e, ctx: _Opaque(f"model {e.name}"), If: _e_if, Op: lambda e, ctx: _eval_op(e, ctx),
}


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


# ---------------------------------------------------------------- stepping

_READ_CACHE: dict[int, tuple[Rule, set[str]]] = {}


def _params_read(rule: Rule) -> set[str]:
    """Parameters a rule's requires and effects read (cached: called once per step)."""
    hit = _READ_CACHE.get(id(rule))
    if hit is not None and hit[0] is rule:
        return hit[1]
    names: set[str] = set()
    for e in list(rule.requires) + [eff.expr for eff in rule.effects]:
        names |= {n.name for n in walk_ir(e) if isinstance(n, ParamRef)}
    if len(_READ_CACHE) > 256:
        _READ_CACHE.clear()
    _READ_CACHE[id(rule)] = (rule, names)
    return names


def walk_ir(e):
    """Every IR node of an expression, pre-order."""
    yield e
    if isinstance(e, Op):
        for a in e.args:
            yield from walk_ir(a)
    elif isinstance(e, If):
        yield from walk_ir(e.cond)
        yield from walk_ir(e.then)
        yield from walk_ir(e.orelse)


def _placeholder(reason: str, boolean: bool):
    cls = A.UnmodelledBool if boolean else A.Unmodelled
    return cls(f"?{reason}")


def _fields_read(clause: IExpr) -> list[FieldRef]:
    seen, out = set(), []
    for n in walk_ir(clause):
        if isinstance(n, FieldRef) and (n.scope, n.field) not in seen:
            seen.add((n.scope, n.field))
            out.append(n)
    return out


def build_model(program: CheckedProgram, pipeline: Pipeline) -> PipelineModel:
    knobs = KnobTable(program, pipeline)
    facts = pipeline.model.facts
    if facts is None:
        raise A.NotModelled(f"model `{pipeline.model.name}` has no facts (it could not be loaded)")
    initial = initial_state(facts)
    state = initial.fork()
    consumers = {f.name: f.consumers for f in facts.layers}
    model = PipelineModel(program, pipeline, knobs, facts, initial, initial, [])
    for index, step in enumerate(pipeline.steps):
        state = _apply_step(model, state, index, step, consumers)
    model.final = state
    return model


def _apply_step(model: PipelineModel, state: State, index: int, step: Step, consumers) -> State:
    rule = step.rule
    knob_ctx = Ctx(model.knobs)
    read = _params_read(rule)
    params: dict[str, object] = {p.name: _default_value(p) for p in rule.params if p.has_default}
    for name, expr in step.args:
        refs = {n.knob for n in walk_ir(expr) if isinstance(n, KnobRef)}
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
    targets = list(step.layers) if rule.accepts is not None else [None]
    for layer in targets:
        if layer is not None and layer not in state.layers:
            model.problems.append(f"step {index + 1} `{rule.name}`: unknown layer `{layer}`")
            continue
        lstate = state.layers[layer] if layer is not None else None
        ctx = Ctx(model.knobs, params, lstate, state.model)
        for ci, clause in enumerate(rule.requires):
            try:
                cond = eval_ir(clause, ctx)
                if not A.is_boolean(cond):
                    raise A.NotModelled("a requires clause that is not a condition")
            except A.NotModelled as exc:
                cond = _placeholder(str(exc), True)
            fields = []
            for ref in _fields_read(clause):
                scope = lstate if ref.scope == "layer" else state.model
                key = (layer if ref.scope == "layer" else None, ref.field)
                if scope is not None and ref.field in scope:
                    fields.append((f"{ref.scope}.{ref.field}", scope[ref.field], state.origin.get(key)))
            model.requirements.append(Requirement(index, step, layer, ci, clause, cond, tuple(fields)))
        new_layer, new_model = {}, {}
        for eff in rule.effects:
            target = lstate if eff.scope == "layer" else state.model
            current = None if target is None else target.get(eff.field)
            try:
                if target is None:
                    raise A.NotModelled(f"`{eff.scope}.{eff.field}` outside a {eff.scope} rule")
                value = eval_ir(eff.expr, ctx)
                if isinstance(value, (_Opaque, A.EnumKnob)):
                    raise A.NotModelled(f"`{eff.scope}.{eff.field}` set to a non-numeric value")
            except A.NotModelled as exc:
                model.problems.append(f"step {index + 1} `{rule.name}` effect `{eff.scope}.{eff.field}`: {exc}")
                value = _placeholder(f"{eff.scope}.{eff.field}", current is not None and A.is_boolean(current))
            (new_layer if eff.scope == "layer" else new_model)[eff.field] = value
        if layer is not None and new_layer:
            old = lstate
            lstate = dict(lstate)
            for f, v in new_layer.items():
                if old.get(f) != v:
                    lstate[f] = v
                    state.origin[(layer, f)] = index
            state.layers[layer] = lstate
            before.setdefault(layer, old)
            touched.add(layer)
            if lstate["out_features"] is not old["out_features"] and lstate["out_features"] != old["out_features"]:
                touched.update(_shrink_consumers(state, layer, old["out_features"], lstate["out_features"],
                                                 consumers, index, before))
        for f, v in new_model.items():
            if state.model.get(f) != v:
                state.model[f] = v
                state.origin[(None, f)] = index
    _follow_shapes(state, before, touched)
    return state


def _follow_shapes(state: State, before: dict, touched: set) -> None:
    """A rank no rule has set is the full rank of the layer's current shape: min(in, out).

    Channel pruning shrinks a layer (and its consumers); the runtime then reports the
    smaller full rank, and `lowrank` cuts relative to it.
    """
    for name in sorted(touched):
        st, old = state.layers[name], before.get(name)
        if old is None or old is st or (name, "rank") in state.origin:
            continue
        if st["in_features"] != old["in_features"] or st["out_features"] != old["out_features"]:
            st = dict(st)
            st["rank"] = A.min_(st["in_features"], st["out_features"])
            state.layers[name] = st


def _default_value(param):
    """A parameter's declared default (the checker normally fills arguments in already)."""
    if param.type == "enum" and isinstance(param.default, str):
        return A.EnumValue(param.default)
    if isinstance(param.default, (int, float, bool)):
        return A.num(param.default)
    return _Opaque(f"default of `{param.name}`")


def _ratio(old, new):
    """new / old, without a symbolic division when `new` is `old` times something."""
    if A.is_number(old):
        return A.div(new, old)
    if isinstance(new, sp.Mul) and old in new.args:
        rest = list(new.args)
        rest.remove(old)
        return A.mul(*rest)
    return A.div(new, old)


def _shrink_consumers(state: State, producer: str, old, new, consumers, index: int, before: dict) -> list[str]:
    ratio = _ratio(old, new)
    done = []
    for c in consumers.get(producer, ()):
        if c not in state.layers:
            continue
        cs = dict(state.layers[c])
        cs["in_features"] = A.mul(cs["in_features"], ratio)
        state.origin[(c, "in_features")] = index
        if cs["kind"].member not in MATRIX_KINDS:
            # a norm between producer and consumer is sliced with the producer's channels
            cs["out_features"] = A.mul(cs["out_features"], ratio)
            state.origin[(c, "out_features")] = index
        before.setdefault(c, state.layers[c])
        state.layers[c] = cs
        done.append(c)
    return done


__all__ = ["Ctx", "LAYER_FIELDS", "MODEL_FIELDS", "PipelineModel", "Requirement", "State", "build_model",
           "eval_ir", "initial_state", "walk_ir"]
