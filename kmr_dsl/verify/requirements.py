"""The requirements of a pipeline's steps, and those of the step semantics themselves.

Contract: a `Requirement` is one condition that must hold for a step on a layer, over
knob symbols in the state before the step: a requires clause of the rule (built by
verify/stepping.py), or one the step semantics add (`implicit`, the reason in words;
`kind` names the diagnostic it becomes, verify/composability.py):
- "consumer" (`require_consumer`): a layer whose channels shrink needs a matrix
  consumer that shrinks with it (core.step.shrink_condition; the runtime refuses the
  step otherwise, KMR405), KMR304;
- "fold" (`require_fold_group`): a step whose rule folds where `layer.foldable` (`reads_foldable`) selects
  every Linear that reads the same normalization (the facts' `fold_group`), KMR306;
- "pooled" (`pooled`): a step that changes the density of a layer a global pruning
  fixed only in total (verify/pools.py) has an UNKNOWN condition, KMR303.
Each is appended to `model.requirements` (the PipelineModel being built).
"""

from __future__ import annotations

from dataclasses import dataclass

from kmr_dsl.core import step as core_step
from kmr_dsl.core.memo import ByIdentity
from kmr_dsl.core.program import FieldRef, IExpr, Op, Rule, Step
from kmr_dsl.core.walk import nodes
from kmr_dsl.verify import algebra as A


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
    # the key of the template `condition` instantiates (verify/stepping.py `_templated`): the
    # requirements sharing one are the same condition up to renaming of knobs of the same
    # declarations, so one's proof is every one's; None when it has none
    template: object = None

    def __init__(self, step_index: int, step: Step, layer: str | None, clause_index: int, clause: IExpr,
                 condition: object, fields: tuple, implicit: str | None = None, kind: str = "consumer",
                 template: object = None):
        # the fields above, set at once. Why: one requirement per layer and clause (~27,000 at
        # 3,000 layers), and the generated frozen __init__ sets each through
        # object.__setattr__ (measured 3.5 us -> 1.9 us a requirement)
        self.__dict__.update(step_index=step_index, step=step, layer=layer, clause_index=clause_index,
                             clause=clause, condition=condition, fields=fields, implicit=implicit, kind=kind,
                             template=template)


FIELDS_READ = ByIdentity("state fields a requires clause reads", "clause", limit=1024)


def fields_read(clause: IExpr) -> list[FieldRef]:
    """The fields a clause reads, first occurrence first (cached: asked once per layer)."""
    def build():
        seen, out = set(), []
        for n in nodes(clause):
            if isinstance(n, FieldRef) and (n.scope, n.field) not in seen:
                seen.add((n.scope, n.field))
                out.append(n)
        return out
    return FIELDS_READ.get(clause, build)


def require_consumer(model, state, step: Step, index: int, layer: str, old: dict, new: dict,
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


READS_FOLDABLE = ByIdentity("whether a rule's contract reads layer.foldable", "Rule", limit=256)


def reads_foldable(rule: Rule) -> bool:
    """Whether the rule folds where a layer is `foldable`: its contract reads the field in
    a requires clause or in an effect on another field (awq's and smoothquant's
    `input_scale`: explicit where not foldable, folded where it is); an effect on
    `foldable` itself (lowrank, lora: whether it stays so) is no fold. (cached per rule:
    asked once per step)"""
    exprs = lambda: list(rule.requires) + [e.expr for e in rule.effects if e.field != "foldable"]     # noqa: E731
    return READS_FOLDABLE.get(rule, lambda: any(isinstance(n, FieldRef) and (n.scope, n.field) == ("layer", "foldable")
                                                for c in exprs() for n in nodes(c)))


def require_fold_group(model, step: Step, index: int, layer: str, layer_facts) -> None:
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


def pooled(model, step: Step, index: int, layer: str, density, origin: int | None, why: str) -> None:
    """The UNKNOWN requirement of a step that changes `layer`'s density on its own after
    a global pruning fixed it only in total (`density`, set at step `origin`)."""
    cond = A.placeholder(f"the density of `{layer}` after a global pruning is known only in total", True)
    model.requirements.append(Requirement(index, step, layer, len(step.rule.requires) + 1,
                                          Op("==", (FieldRef("layer", "density"), FieldRef("layer", "density"))),
                                          cond, (("layer.density", density, origin),), why, kind="pooled"))


__all__ = ["Requirement", "fields_read", "pooled", "reads_foldable", "require_consumer", "require_fold_group"]
