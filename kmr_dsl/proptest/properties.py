"""User properties (spec section 8): draw knob settings, run the pipeline, check each line.

Contract: `run_property(program, prop, sessions, examples=N, seed=S)` tests one
`property NAME(PIPELINE) { forall k, ...  check ... }`:
- Hypothesis draws every instance of the `forall` knobs from their domains
  (`kmr_dsl.proptest.strategies`); every other knob stays at its default;
- the pipeline runs through `PipelineSession.evaluate` (one session per pipeline,
  shared through `Sessions`, so the baseline model, its meters and the data load once;
  an outcome is cached per setting, so shrinking re-runs nothing it has seen; a model
  under 1 M parameters runs on one torch thread, see `threads_for`);
- each `check` line is judged with the one IR evaluator (`kmr_dsl.core.evaluate.holds`)
  over the result's meters and the baseline's;
- a pipeline that fails at a setting (a rule or meter error) fails the property there.
A failure is shrunk to a minimal setting and reported as a `PropertyResult` whose
`diagnostic()` is KMR507 at the property, whose `summary()` reads e.g.
`property smaller failed at sparsity = 0.0, bits = 32: size <= baseline.size  [70.1 KB <= 68.9 KB]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kmr_dsl.core.program import CheckedProgram, KnobRef, MeterRef, Property
from kmr_dsl.core.walk import nodes
from kmr_dsl.diagnostics import Diagnostic, KmrError, Span, error
from kmr_dsl.core.evaluate import Env, evaluate, holds, meter_key, meter_refs
from kmr_dsl.outcome import Outcome
from kmr_dsl.proptest.engine import CaseFailed, search
from kmr_dsl.proptest.quantities import expr_dim, plural, show
from kmr_dsl.proptest.strategies import setting_strategy, show_setting
from kmr_dsl.runtime.meters import fixed_threads
from kmr_dsl.runtime.context import default_threads
from kmr_dsl.runtime.session import PipelineSession, span_text


def threads_for(session: PipelineSession) -> int | None:
    """1 for a small model, else None (torch's own setting): `context.default_threads`.
    A property runs the pipeline many times, so this matters most here."""
    return default_threads(session.facts)


class Sessions:
    """One PipelineSession per pipeline, and one outcome per setting, for a whole run."""

    def __init__(self, program: CheckedProgram, trust: bool = False, seed: int = 0):
        self.program, self.trust, self.seed = program, trust, seed
        self._sessions: dict[str, PipelineSession | KmrError] = {}
        self._outcomes: dict[tuple, Outcome | KmrError] = {}

    def session(self, pipeline: str) -> PipelineSession:
        got = self._sessions.get(pipeline)
        if got is None:
            try:
                got = PipelineSession(self.program, pipeline, trust=self.trust, seed=self.seed)
            except KmrError as exc:      # the model cannot be loaded: every property on it fails alike
                got = exc
            self._sessions[pipeline] = got
        if isinstance(got, KmrError):
            raise got
        return got

    def evaluate(self, pipeline: str, setting: dict) -> Outcome:
        key = (pipeline, tuple(sorted((k, repr(v)) for k, v in setting.items())))
        if key not in self._outcomes:
            session = self.session(pipeline)
            try:
                with fixed_threads(threads_for(session)):
                    self._outcomes[key] = session.evaluate(setting)
            except KmrError as exc:
                self._outcomes[key] = exc
        got = self._outcomes[key]
        if isinstance(got, KmrError):
            raise got
        return got


@dataclass
class LineFailure:
    text: str                      # the check as written
    op: str
    left: float
    right: float
    dim: str
    readings: dict[str, float]     # `size`, `baseline.size` -> value
    span: Span

    def bracket(self) -> str:
        return f"[{show(self.left, self.dim)} {self.op} {show(self.right, self.dim)}]"

    def to_json(self) -> dict:
        return {"check": self.text, "op": self.op, "left": self.left, "right": self.right,
                "meters": self.readings, "line": self.span.line}


@dataclass
class PropertyResult:
    name: str
    pipeline: str
    span: Span
    status: str = "passed"          # passed | failed | error
    examples: int = 0
    setting: dict | None = None     # the drawn knobs of the shrunk failing setting
    failures: list[LineFailure] = field(default_factory=list)
    error: Diagnostic | None = None  # the pipeline's own error at that setting, or a load error
    flaky: bool = False
    dims: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status != "passed"

    def summary(self) -> str:
        if self.status == "passed":
            return f"property {self.name} passed ({plural(self.examples, 'example')})"
        where = f" at {show_setting(self.setting)}" if self.setting is not None else ""
        if self.error is not None:
            return f"property {self.name} failed{where}: error[{self.error.code}]: {self.error.message}"
        lines = "; ".join(f"{f.text}  {f.bracket()}" for f in self.failures)
        return f"property {self.name} failed{where}: {lines}"

    def diagnostics(self) -> list[Diagnostic]:
        if self.status == "passed":
            return []
        notes = []
        if self.setting is not None:
            notes.append(f"shrunk setting: {show_setting(self.setting)}")
        for f in self.failures:
            notes.append(f"check `{f.text}` is false: {f.bracket()[1:-1]}")
            if f.readings:
                notes.append("meters: " + ", ".join(f"{k} = {show(v, self.dims.get(k, 'number'))}"
                                                     for k, v in f.readings.items()))
        if self.error is not None:
            notes.append(f"the pipeline fails there: error[{self.error.code}]: {self.error.message}")
        if self.flaky:
            notes.append("the shrunk setting passed when replayed: the pipeline is not deterministic")
        out = [error("KMR507", self.span, f"property `{self.name}` failed", *notes)]
        if self.error is not None:
            out.append(self.error)
        return out

    def to_json(self) -> dict:
        return {"property": self.name, "pipeline": self.pipeline, "status": self.status,
                "examples": self.examples, "setting": self.setting,
                "failures": [f.to_json() for f in self.failures],
                "error": self.error.to_json() if self.error else None, "flaky": self.flaky,
                "summary": self.summary()}


def _knobs_read(prop: Property) -> dict[str, str]:
    """{knob instance: its declared knob} for every knob the checks read."""
    return {n.name: n.knob for line in prop.checks for side in (line.left, line.right)
            for n in nodes(side) if isinstance(n, KnobRef)}


def base_setting(program: CheckedProgram, prop: Property) -> dict:
    """The defaults of every knob the pipeline and the checks read."""
    pipe = program.pipelines[prop.pipeline]
    setting = program.default_setting(pipe)
    for inst, knob in _knobs_read(prop).items():
        if inst not in setting:
            setting[inst] = program.knobs[knob].default_value()
    return setting


def _judge(program: CheckedProgram, prop: Property, setting: dict, outcome: Outcome) -> list[LineFailure]:
    def reading(ref: MeterRef) -> float:
        key = meter_key(MeterRef(ref.name, ref.args, False, ref.analytic, ref.span))
        return outcome.baseline[key] if ref.baseline else outcome.meters[key]

    env = Env(knobs=setting, meter=reading)
    failed = []
    for line in prop.checks:
        if holds(line, env):
            continue
        readings = {("baseline." if r.baseline else "") + meter_key(r): reading(r) for r in meter_refs(line)}
        dim = expr_dim(line.left, program)
        if dim == "number":
            dim = expr_dim(line.right, program)
        failed.append(LineFailure(span_text(line.span, program.sources), line.op, float(evaluate(line.left, env)),
                                  float(evaluate(line.right, env)), dim, readings, line.span))
    return failed


def run_property(program: CheckedProgram, prop: Property, sessions: Sessions, *, examples: int = 20,
                 seed: int = 0) -> PropertyResult:
    result = PropertyResult(prop.name, prop.pipeline, prop.span)
    for line in prop.checks:
        for ref in meter_refs(line):
            key = ("baseline." if ref.baseline else "") + meter_key(ref)
            result.dims[key] = expr_dim(ref, program)
    try:
        sessions.session(prop.pipeline)
    except KmrError as exc:
        result.status, result.error = "error", exc.diagnostic
        return result
    base = base_setting(program, prop)
    drawn_names = list(prop.forall)

    def test(drawn: dict) -> None:
        setting = {**base, **drawn}
        try:
            outcome = sessions.evaluate(prop.pipeline, setting)
        except KmrError as exc:
            raise CaseFailed((drawn, [], exc.diagnostic))
        failed = _judge(program, prop, setting, outcome)
        if failed:
            raise CaseFailed((drawn, failed, None))

    found = search(setting_strategy(program, drawn_names), test, examples=examples, seed=seed)
    result.examples = found.passed
    result.flaky = found.flaky
    if found.failure is not None:
        drawn, failed, diag = found.failure.payload
        result.status, result.setting, result.failures, result.error = "failed", dict(drawn), failed, diag
    return result


__all__ = ["LineFailure", "PropertyResult", "Sessions", "base_setting", "run_property"]
