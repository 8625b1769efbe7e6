"""The abstract state of spec section 5, and the model of a pipeline stepped through it.

Contract: `State` is one point of the abstract state (per-layer and per-model field
values, sympy expressions built by `kmr_dsl.verify.algebra`, constants folded so
untouched fields stay integers; and what a step leaves beside them: origins, pools,
lower ends, factorizations); `initial_state(facts)` is the state ModelFacts describe;
`PipelineModel` is what `kmr_dsl.verify.stepping.build_model` returns for a pipeline
(the initial and final states, the requirements, the verifier's typed caches), read by
every later part of the verifier.

State: per layer `kind` (an EnumValue), `in_features`, `out_features`, `params`
(static), `density` (measured at load), `bits` (from facts), `rank` (min(in, out)),
`adapter_rank` (0), `frozen` (false), `group_size`, `symmetric`, `foldable` and
`input_scale` (from facts); per
model `trainable` (true).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sympy.logic.boolalg import And, Or

from kmr_dsl.core.memo import ByIdentity, Memo
from kmr_dsl.core.program import CheckedProgram, Pipeline
from kmr_dsl.facts import ModelFacts
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify import settling
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
    # (what, the layer's inputs up to renaming of knobs) -> template.Template: one-layer
    # steps on layers of one shape evaluate a clause, an effect, a settled count once
    templates: dict = field(default_factory=dict)


def changed(old, new) -> bool:
    """Whether a step's value `new` for a field differs from its `old` one (`old != new`):
    identity first, and two conjunctions (or disjunctions) of different argument counts
    differ at once. Why: sympy's == compares argument tuples item by item, and a per-layer
    step makes `model.trainable` a chain one condition longer than the last (3,000 layers:
    36 ms of comparisons, O(layers^2), measured)."""
    if old is new:
        return False
    t = type(new)
    if (t is And or t is Or) and type(old) is t and len(old._args) != len(new._args):
        return True
    return old != new


def initial_state(facts: ModelFacts) -> State:
    layers = {}
    # a layer's facts (each with its type: 0.1 == Fraction(0.1) as Python numbers, not as
    # values) -> its fields. Why: layers of one shape have the same fields, and building
    # them (sympy constants) took 74 ms at 3,000 layers; a copy of the first's, ~3 ms
    shared: dict = {}
    for f in facts.layers:
        read = (f.kind, f.in_features, f.out_features, f.params, f.density, f.bits, f.rank, f.group_size,
                f.symmetric, f.foldable, f.heads, f.input_scale)
        key = tuple([(type(v), v) for v in read])
        try:
            fields = shared.get(key)
        except TypeError:             # a fact that is no hashable value: this layer's alone
            key = fields = None
        if fields is None:
            fields = {
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
            if key is not None:
                shared[key] = fields
        layers[f.name] = dict(fields)
    return State(layers, {"trainable": A.TRUE})


__all__ = ["PipelineModel", "Requirement", "State", "changed", "initial_state"]
