"""Rule contracts (spec sections 5 and 8): does an implementation do what its effects say?

Contract: `check_contract(rule, examples=N, seed=S)` tests one rule on small generated
models (`kmr_dsl.proptest.models`). Each case draws an architecture with a layer the
rule accepts (any, for a whole-model rule), one such layer, and the rule's arguments:
- parameters the contract reads (`requires`, `effect`) and every enum or bool are drawn
  from their whole domain; a float parameter it does not read too;
- an int parameter the contract does not read (epochs, batch sizes: a training budget,
  not a behaviour) is drawn no higher than its default (or lo + 4 without one), so a
  training rule runs 1 epoch;
- `data` parameters get one generated labelled dataset of 4-64 examples, `model`
  parameters the unmodified generated model (as `teacher = baseline` would).
A case whose `requires` is false in the model's initial state is skipped (so the rule
only ever runs where its precondition holds), and so is one the implementation refuses
with a KMR diagnostic (e.g. channel pruning of the output layer, which has no consumer
to shrink); both are counted and reported. Otherwise the implementation runs as the
runtime calls it, `fn(model, [(name, layer)], **arguments)` inside a RunContext (seed,
baseline), and then
- the measured state must match the effects (`kmr_dsl.proptest.expected`: tolerances);
- the analytic meters measured on the result must match the verifier's cost model at
  that state (`kmr_dsl.proptest.costcheck`).
Any difference, an exception from the implementation, or a result that no longer runs
fails the rule: Hypothesis shrinks the case and `ContractResult.diagnostics()` reports
KMR410 at the rule with the shrunk model, layer and arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from kmr_dsl.core.program import If, Op, ParamRef, Rule
from kmr_dsl.diagnostics import Diagnostic, KmrError, Span, error
from kmr_dsl.proptest import models
from kmr_dsl.proptest.engine import CaseFailed, reject, search
from kmr_dsl.proptest.quantities import plural
from kmr_dsl.proptest.strategies import param_strategy, show_value
from kmr_dsl.runtime.session import span_text

DATA_SIZE = (4, 64)
# Effects the standard library documents as bounds rather than values:
# {impl: {field: (parameter, the value at which the effect is exact) or None (a bound at
# every setting)}}. lowrank keeps fewer singular values when `energy` < 1 (stdlib/rules.kmr:
# "the effect is then an upper bound"), and its `foldable` is false wherever the layer
# may become two Linears (it may stay one: a sound bound); the language has no syntax
# for a bound, so it is listed here.
DOCUMENTED_BOUNDS = {"kmr_dsl.rules.lowrank:apply": {"rank": ("energy", 1.0), "foldable": None}}


@dataclass(frozen=True)
class Case:
    arch: models.Arch
    layer: str | None
    args: tuple[tuple[str, object], ...]     # drawn scalar arguments, in parameter order
    data_size: int = 0

    def describe(self, rule: Rule) -> str:
        parts = [f"{name} = {show_value(value)}" for name, value in self.args]
        for p in rule.params:
            if p.type == "data":
                parts.append(f"{p.name} = {self.data_size} generated examples")
            elif p.type == "model":
                parts.append(f"{p.name} = baseline")
        where = ""
        if self.layer is not None:
            kind = dict(models.layer_names(self.arch))[self.layer]
            where = f", layer `{self.layer}` ({kind})"
        return f"model {models.describe(self.arch)}{where}; arguments: {', '.join(parts) or '(none)'}"


def contract_reads(rule: Rule) -> set[str]:
    """Parameter names the rule's requires and effects read."""
    names: set[str] = set()

    def walk(e):
        if isinstance(e, ParamRef):
            names.add(e.name)
        elif isinstance(e, Op):
            for a in e.args:
                walk(a)
        elif isinstance(e, If):
            walk(e.cond), walk(e.then), walk(e.orelse)

    for e in list(rule.requires) + [eff.expr for eff in rule.effects]:
        walk(e)
    return names


def _arg_strategy(param, read: bool):
    if param.type == "int" and not read and param.domain is not None and param.domain.finite() is None:
        lo = param.domain.lo if param.domain.lo is not None else 0
        cap = param.default if param.has_default and isinstance(param.default, int) else lo + 4
        return st.integers(min_value=int(lo) + (0 if param.domain.lo_closed else 1), max_value=max(int(lo), int(cap)))
    return param_strategy(param)


def case_strategy(rule: Rule, pruned_start: bool = False) -> st.SearchStrategy:
    read = contract_reads(rule)
    scalars = [p for p in rule.params if p.type not in ("data", "model")]
    needs_data = any(p.type == "data" for p in rule.params)

    @st.composite
    def case(draw) -> Case:
        arch = draw(models.arch_strategy(rule.accepts, pruned_start))
        layer = None
        if rule.accepts is not None:
            names = [n for n, kind in models.layer_names(arch) if kind in rule.accepts]
            layer = draw(st.sampled_from(names))
        args = tuple((p.name, draw(_arg_strategy(p, p.name in read))) for p in scalars)
        size = draw(st.integers(*DATA_SIZE)) if needs_data else 0
        return Case(arch, layer, args, size)

    return case()


@dataclass
class ContractResult:
    rule: str
    impl: str
    span: Span
    status: str = "passed"            # passed | failed | untested | error
    cases: int = 0
    skipped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    case: str | None = None           # the shrunk failing case
    problems: list[str] = field(default_factory=list)
    mismatches: list[dict] = field(default_factory=list)
    error: Diagnostic | None = None
    flaky: bool = False
    note: str | None = None           # why a rule is untested

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "error")

    def summary(self) -> str:
        skipped = ""
        if self.skipped:
            first = next(iter(self.reasons), "")
            skipped = f"; {self.skipped} skipped, e.g. {first}"
        if self.status == "passed":
            return f"rule {self.rule} kept its contract ({plural(self.cases, 'case')}{skipped})"
        if self.status == "untested":
            return f"rule {self.rule} untested: {self.note}"
        if self.status == "error":
            return f"rule {self.rule} could not be tested: error[{self.error.code}]: {self.error.message}"
        return f"rule {self.rule} broke its contract: {self.problems[0]}\n    case: {self.case}"

    def diagnostics(self) -> list[Diagnostic]:
        if self.status == "error":
            return [self.error]
        if self.status != "failed":
            return []
        notes = [f"shrunk case: {self.case}"] + [f"also: {p}" for p in self.problems[1:]]
        if self.flaky:
            notes.append("the shrunk case passed when replayed: the implementation is not deterministic")
        return [error("KMR410", self.span, f"`{self.rule}` broke its contract: {self.problems[0]}", *notes)]

    def to_json(self) -> dict:
        return {"rule": self.rule, "impl": self.impl, "status": self.status, "cases": self.cases,
                "skipped": self.skipped, "skip_reasons": self.reasons, "case": self.case,
                "problems": self.problems, "mismatches": self.mismatches, "note": self.note,
                "error": self.error.to_json() if self.error else None, "flaky": self.flaky,
                "summary": self.summary()}


def check_contract(rule: Rule, *, examples: int = 10, seed: int = 0, sources: dict | None = None,
                   pruned_start: bool = False, trust: bool = False) -> ContractResult:
    """The contract of one rule on `examples` generated cases (pruned_start: see models;
    trust: an impl outside the rule's folder may run, docs/security.md)."""
    from kmr_dsl.proptest.apply import impl_of, run_case

    result = ContractResult(rule.name, rule.impl, rule.span)
    if not models.families_for(rule.accepts):
        result.status, result.note = "untested", f"no generated model has a layer of kind {', '.join(rule.accepts)}"
        return result
    try:
        fn = impl_of(rule, trust)
    except KmrError as exc:
        result.status, result.error = "error", exc.diagnostic
        return result
    texts = {id(c): span_text(c.span, sources or {}) for c in rule.requires}
    bounds = DOCUMENTED_BOUNDS.get(rule.impl, {})

    def test(case: Case) -> None:
        outcome = run_case(rule, fn, case, seed, bounds)
        if outcome.unmet is not None:
            reject(f"requires `{texts.get(id(outcome.unmet)) or 'clause'}` does not hold")
        if outcome.refused is not None:
            reject(f"the implementation refused: {outcome.refused}")
        if outcome.problems:
            raise CaseFailed((case, outcome))

    found = search(case_strategy(rule, pruned_start), test, examples=examples, seed=seed)
    result.cases, result.skipped, result.reasons, result.flaky = found.passed, found.rejected, found.reasons, found.flaky
    if found.failure is not None:
        case, outcome = found.failure.payload
        result.status, result.case = "failed", case.describe(rule)
        result.problems = list(outcome.problems)
        result.mismatches = [m.to_json() for m in outcome.mismatches]
    elif found.unsatisfiable:
        result.status = "untested"
        result.note = f"no generated case could run it ({found.first_reason or 'every case was skipped'})"
    return result


__all__ = ["Case", "ContractResult", "DOCUMENTED_BOUNDS", "case_strategy", "check_contract", "contract_reads"]
