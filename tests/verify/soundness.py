"""End to end: what `kmr check` proves about a generated program, against `kmr run` of it.

Contract: `Harness(folder).run(case) -> Result` writes the case's program (and
sound_factory.py beside it) into `folder`, checks it with the checker's in-process API
(`kmr_dsl.check.check_file`, facts from `runtime.introspect.model_facts` as the CLI's
provider reads them on a cache miss), makes its budget templates concrete from the
verifier's own predictions at the case's target setting (`verify.predict`), verifies it
(`verify.verify`) and runs it (`runtime.session.PipelineSession.evaluate`, the code path
of `kmr run`) at the witness, at the case's other settings and, for a refuted step, at
the counterexample. Each run watches every step: the state just before it
(`runtime.state.measure_state`) must meet the rule's `requires` on every selected layer
(`proptest.expected.requires_failing`).

A `Result` lists every disagreement as (kind, detail). Kinds (a disagreement is a
verdict or a prediction the run contradicts):
- `verified-not-met`: the feasibility witness's run fails an analytic budget line;
- `predicted-met-not-met`: at another setting the cost model says a line holds (for
  every size in the `size` model's range, as feasibility proves it) and the run
  measures that it does not;
- `refuted-but-met`: the budget was refuted, yet a run meets every analytic line;
- `precondition-false`: every requires clause was PROVED, yet one is false at run time;
- `run-refused`: every clause was PROVED, yet a step refused (a KMR4xx error);
- `counterexample-not-real`: a clause was REFUTED, yet at its counterexample every
  clause holds at run time and every step runs;
- `under:METER`, `baseline-under:METER`: a meter measures above its prediction on the
  result or on the unmodified model (a cost model must never be below the artifact:
  that is what makes an upper-bound budget line unsound);
- `over-low:size`, `baseline-over-low:size`: the file is smaller than the lower end of
  the `size` model's range (what a `size >=` line, or the baseline side of a relative
  line, reads); `over-low:nonzero` the same for `nonzero` where it is a range (after
  `lowrank` or N:M on a sparse layer, verify/lowend.py);
- `internal`: the checker or the verifier failed with KMR500 or an exception.
A meter the cost model leaves out at a setting (it says it does not know, and every
line reading it is UNKNOWN) is noted `unpredicted:METER`, not compared.
Line kinds carry the meter and the direction of the line: `verified-not-met:size<=`.
Not disagreements, counted beside them: `rejected` (the checker refused the program:
a generator gap), `unknown` (a solver limit), `over:METER` and `baseline-over:METER` (a
prediction above the measurement: loose, and unsound only where a lower-bound line
such as `nonzero >= N` reads it, which the line kinds catch).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

from kmr_dsl.check import check_file
from kmr_dsl.diagnostics import KmrError, has_errors
from kmr_dsl.proptest.expected import requires_failing
from kmr_dsl.runtime import session as session_mod
from kmr_dsl.runtime import state as run_state
from kmr_dsl.runtime.introspect import model_facts
from kmr_dsl.verify import Verdict, predict, verify
from kmr_dsl.verify.numeric import Unevaluable
from kmr_dsl.verify.predict import lines_met, meter_range
from tests.verify import sound_factory
from tests.verify.soundness_cases import Arch, Case, cases, signature

FACTORY = Path(__file__).with_name("sound_factory.py")
RLIMIT = 5_000_000
REL = 1e-9


@dataclass
class Result:
    disagreements: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)      # rejected, unknown, over:size
    verdict: str = ""                     # proved | refuted (...) | unknown | rejected
    runs: int = 0
    program: str = ""
    signature: str = ""                   # what the program is made of (soundness_cases.signature)
    case_id: str = ""                     # `index:digest` in a sweep (case_id)

    def add(self, kind: str, detail: str) -> None:
        self.disagreements.append((kind, detail))

    def kinds(self) -> list[str]:
        return sorted({k for k, _ in self.disagreements})


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= REL * max(1.0, abs(a), abs(b))


def _number(v: float) -> str:
    """A bound as KMR text: whole numbers plainly, others with enough digits to round-trip."""
    if float(v).is_integer():
        return str(int(v))
    return repr(float(v))


class Harness:
    def __init__(self, folder, rlimit: int = RLIMIT):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FACTORY, self.folder / "sound_factory.py")
        self.rlimit = rlimit
        self._facts: dict = {}
        self.count = 0

    # ------------------------------------------------------------ check
    def _provider(self, spec, trust, span):
        key = (spec.kind, tuple(spec.args), tuple(spec.kwargs))
        if key not in self._facts:
            self._facts[key] = model_facts(spec, trust=trust, span=span)
        return self._facts[key]

    def check(self, text: str):
        self.count += 1
        path = self.folder / f"case{self.count % 4}.kmr"
        path.write_text(text, encoding="utf-8")
        return check_file(str(path), facts_provider=self._provider)

    def budget(self, case: Case, program) -> list[str]:
        """The case's line templates, bounded by the cost model's predictions at its target."""
        at = predict(program, "p", case.target)
        base = predict(program, "p", case.target, baseline=True)
        out = []
        for ln in case.lines:
            if ln.meter not in at or ln.meter not in base:
                continue        # not evaluable at the target (a refuted step there): no line
            value = at[ln.meter] * ln.slack
            strict = ln.op in ("<", ">")
            if ln.relative and base[ln.meter] > 0:
                q = value / base[ln.meter]
                # round away from the target, so the target meets the line as written
                q = math.ceil(q * 1e6) / 1e6 if ln.op in ("<=", "<") else math.floor(q * 1e6) / 1e6
                if strict:
                    q += 1e-6 if ln.op == "<" else -1e-6
                out.append(f"{ln.meter} {ln.op} {_number(q)} * baseline.{ln.meter}")
                continue
            if strict:
                value += 0.5 if ln.op == "<" else -0.5
            unit = " B" if ln.meter == "size" else ""
            out.append(f"{ln.meter} {ln.op} {_number(value)}{unit}")
        return out

    # ------------------------------------------------------------ one case
    def run(self, case: Case) -> Result:
        res = Result(signature=signature(case))
        program, diags = self.check(case.program([]))
        if program is None or has_errors(diags):
            return self._rejected(res, case.program([]), diags)
        try:
            lines = self.budget(case, program)
        except Exception as exc:  # noqa: BLE001 - the predictor's failure is a finding
            res.add("internal", f"predict: {type(exc).__name__}: {exc}")
            return res
        return self.judge(case.program(lines), (case.target,) + tuple(case.settings), res)

    def judge(self, text: str, settings=(), res: Result | None = None) -> Result:
        """Check, verify and run one program (pipeline `p`): at the witness, at each of
        `settings` (knob instance -> value; missing knobs at their defaults), at a refuted
        step's counterexample."""
        res = res or Result()
        res.program = text
        program, diags = self.check(text)
        if program is None or has_errors(diags):
            return self._rejected(res, text, diags)
        try:
            report = verify(program, "p", rlimit=self.rlimit)
        except Exception as exc:  # noqa: BLE001
            res.add("internal", f"verify: {type(exc).__name__}: {exc}")
            return res
        for r in report.results:
            if (r.reason or "").startswith("internal error"):
                res.add("internal", r.reason)
        comp = [r for r in report.results if r.kind == "composability"]
        feas = [r for r in report.results if r.kind == "feasibility"]
        res.verdict = report.verdict.value
        if any(r.verdict is Verdict.REFUTED for r in comp):
            res.verdict = "refuted (a step's precondition)"
        elif any(r.verdict is Verdict.REFUTED for r in feas):
            res.verdict = "refuted (the budget)"
        if any(r.verdict is Verdict.UNKNOWN for r in report.results):
            res.notes.append(("unknown", "; ".join(r.summary for r in report.results if r.verdict is Verdict.UNKNOWN)))
        comp_proved = all(r.verdict is Verdict.PROVED for r in comp)
        runner = _Runner(program)
        defaults = program.default_setting(program.pipelines["p"])
        if not comp_proved:
            for r in comp:
                if r.verdict is Verdict.REFUTED and r.counterexample is not None:
                    runner.counterexample(res, {**defaults, **r.counterexample}, r.summary)
            return res
        feasible = [r for r in feas if r.verdict is Verdict.PROVED]
        refuted = [r for r in feas if r.verdict is Verdict.REFUTED]
        if feasible and feasible[0].witness is not None:
            runner.at(res, {**defaults, **feasible[0].witness}, "witness", refuted=False)
        for i, s in enumerate(settings):
            runner.at(res, {**defaults, **s}, f"setting {i}", refuted=bool(refuted))
        return res

    @staticmethod
    def _rejected(res: Result, text: str, diags) -> Result:
        res.verdict = "rejected"
        res.program = text
        errors = [d for d in diags if d.severity.value == "error"] if diags else []
        internal = [d for d in errors if d.code == "KMR500"]
        if internal:
            res.add("internal", f"check: {internal[0].message}: {' '.join(internal[0].notes)}")
        else:
            res.notes.append(("rejected", "; ".join(f"{d.code} {d.message}" for d in errors) or "no program"))
        return res


class _Runner:
    """Runs one checked program at settings, watching each step's preconditions."""

    def __init__(self, program):
        self.program = program
        self.pipeline = program.pipelines["p"]
        self.session = None
        self.failures: list[str] = []

    def _session(self):
        if self.session is None:
            self.session = session_mod.PipelineSession(self.program, "p", threads=1, seed=0)
        return self.session

    @contextlib.contextmanager
    def _watch(self):
        rules = {s.span: s.rule for s in self.pipeline.steps}   # a `for` loop's steps share a span and a rule
        real = session_mod.import_impl
        failures = self.failures

        def import_impl(ref, base_dir=".", span=None, *args, **kw):
            fn = real(ref, base_dir, span, *args, **kw)
            rule = rules.get(span)
            if rule is None:
                return fn

            def watched(model, layers, **args):
                before = run_state.measure_state(model)
                for name in ([n for n, _ in layers] if rule.accepts is not None else [None]):
                    clause = requires_failing(rule, before, name, args)
                    if clause is not None:
                        failures.append(f"`{rule.name}` (line {span.line}) on {name or 'the model'}: "
                                        f"requires {_clause_text(clause)} is false")
                return fn(model, layers, **args)
            return watched

        with mock.patch.object(session_mod, "import_impl", import_impl):
            yield

    def _evaluate(self, setting: dict):
        self.failures.clear()
        with self._watch():
            return self._session().evaluate(setting)

    def at(self, res: Result, setting: dict, label: str, refuted: bool) -> None:
        """Run at `setting`; judge its lines against the cost model's and the verdicts."""
        try:
            outcome = self._evaluate(setting)
        except KmrError as exc:
            d = exc.diagnostic
            res.add("run-refused", f"at {label} {setting}: {d.code} {d.message}")
            return
        res.runs += 1
        for f in self.failures:
            res.add("precondition-false", f"at {label} {setting}: {f}")
        pred = predict(self.program, "p", setting)
        base = predict(self.program, "p", setting, baseline=True)
        for meter in ("params", "nonzero", "size", "macs", "trainable_params"):
            m, p = outcome.meters.get(meter), pred.get(meter)
            if p is None:       # the cost model says it does not know (lines reading it are UNKNOWN)
                res.notes.append((f"unpredicted:{meter}", f"at {label} {setting}: measured {m}"))
                continue
            if m is None or _close(m, p):
                continue
            if m > p:
                res.add(f"under:{meter}", f"at {label} {setting}: measured {m:g}, predicted {p:g}")
            else:
                res.notes.append((f"over:{meter}", f"at {label} {setting}: measured {m:g}, predicted {p:g}"))
        for meter in ("params", "nonzero", "size", "macs", "trainable_params"):
            bm, bp = outcome.baseline.get(meter), base.get(meter)
            if bp is None:
                res.notes.append((f"baseline-unpredicted:{meter}", f"measured {bm}"))
            elif bm is not None and not _close(bm, bp):
                if bm > bp:
                    res.add(f"baseline-under:{meter}", f"measured {bm:g}, predicted {bp:g}")
                else:
                    res.notes.append((f"baseline-over:{meter}", f"measured {bm:g}, predicted {bp:g}"))
        for meter, baseline in (("size", False), ("size", True), ("nonzero", False)):
            measured = (outcome.baseline if baseline else outcome.meters).get(meter)
            try:
                low, high = meter_range(self.program, "p", meter, setting, baseline=baseline)
            except Unevaluable:
                continue        # not known at this setting: every line reading it is UNKNOWN
            if meter != "size" and _close(low, high):
                continue                # one value: below it is `over:` (loose), a note
            if measured is not None and measured < low and not _close(measured, low):
                res.add(f"{'baseline-' if baseline else ''}over-low:{meter}",
                        f"at {label} {setting}: measured {measured:g}, lower end {low:g}")
        met = lines_met(self.program, "p", setting)
        analytic = [(i, c, ln) for i, (c, ln) in enumerate(zip(self.pipeline.budget, outcome.lines)) if c.analytic]
        for i, c, ln in analytic:
            if (met.get(i) or label == "witness") and not ln.holds:
                kind = "verified-not-met" if label == "witness" else "predicted-met-not-met"
                res.add(f"{kind}:{_line_key(c)}", f"at {label} {setting}: `{ln.text}` measured {ln.left:g} vs {ln.right:g}")
        if refuted and analytic and all(ln.holds for _, _, ln in analytic):
            res.add("refuted-but-met", f"at {label} {setting}: every line met: "
                    + "; ".join(f"`{ln.text}` {ln.left:g} vs {ln.right:g}" for _, _, ln in analytic))

    def counterexample(self, res: Result, setting: dict, summary: str) -> None:
        res.runs += 1
        try:
            self._evaluate(setting)
        except KmrError:
            return              # a step refused: the counterexample is real
        if not self.failures:
            res.add("counterexample-not-real", f"{summary}: at {setting} every requires holds and every step ran")


def _line_key(c) -> str:
    """`size<=`: the meter a line bounds and the direction of the bound."""
    from kmr_dsl.core.program import MeterRef
    if isinstance(c.left, MeterRef):
        return f"{c.left.name}{c.op}"
    return c.op


def _clause_text(clause) -> str:
    from kmr_dsl.core.program import Const, FieldRef, Op, ParamRef
    if isinstance(clause, Op):
        if len(clause.args) == 2:
            return f"{_clause_text(clause.args[0])} {clause.op} {_clause_text(clause.args[1])}"
        return f"{clause.op} {' '.join(_clause_text(a) for a in clause.args)}"
    if isinstance(clause, FieldRef):
        return f"{clause.scope}.{clause.field}"
    if isinstance(clause, ParamRef):
        return clause.name
    if isinstance(clause, Const):
        return str(clause.value)
    return str(clause)


def layer_names(arch: Arch) -> list[tuple[str, str]]:
    """(qualified name, kind) of the arch's logical layers, as the checker will see them."""
    from kmr_dsl.runtime import layers as kl

    model = sound_factory.make(arch.family, ",".join(map(str, arch.sizes)), arch.bias, arch.norm, arch.seed)
    return [(name, kl.kind_of(layer)) for name, layer in kl.logical_layers(model)]


@dataclass
class Tally:
    """Counts over many cases; per disagreement kind the shortest program that shows it.

    `ids` lists every case run as `index:digest` (its place in the deterministic sequence
    and a hash of its program and settings): shards of one sweep merge (`merged`) into
    the tally the unsharded sweep gives, and their ids say so."""
    cases: int = 0
    runs: int = 0
    disagreeing_cases: int = 0
    verdicts: collections.Counter = field(default_factory=collections.Counter)
    kinds: collections.Counter = field(default_factory=collections.Counter)      # cases per kind
    notes: collections.Counter = field(default_factory=collections.Counter)
    shortest: dict = field(default_factory=dict)                                  # kind -> (detail, program, index)
    by_signature: dict = field(default_factory=dict)                              # kind -> Counter of signatures
    messages: collections.Counter = field(default_factory=collections.Counter)   # run-refused / internal, by message
    ids: list = field(default_factory=list)                                       # `index:digest` per case run
    failing: list = field(default_factory=list)     # per disagreeing case: id, signature, verdict, disagreements, program

    def add(self, res: Result, index: int = -1) -> None:
        self.cases += 1
        self.runs += res.runs
        self.verdicts[res.verdict] += 1
        self.disagreeing_cases += bool(res.disagreements)
        self.ids.append(res.case_id)
        for kind in res.kinds():
            self.kinds[kind] += 1
            self.by_signature.setdefault(kind, collections.Counter())[res.signature] += 1
        for kind, detail in {(k, _message(d)) for k, d in res.disagreements if k in ("run-refused", "internal")}:
            self.messages[f"{kind}: {detail}"] += 1
        for kind, detail in res.disagreements:
            self._shorter(kind, (detail, res.program, index))
        for kind in {k for k, _ in res.notes}:
            self.notes[kind] += 1
        if res.disagreements:
            self.failing.append({"id": res.case_id, "signature": res.signature, "verdict": res.verdict,
                                 "disagreements": [list(d) for d in res.disagreements], "program": res.program})

    def _shorter(self, kind: str, entry: tuple) -> None:
        """Keep the shorter program; on a tie the earlier case, as one unsharded sweep does."""
        old = self.shortest.get(kind)
        if old is None or (len(entry[1]), entry[2]) < (len(old[1]), old[2]):
            self.shortest[kind] = tuple(entry)

    def to_json(self) -> dict:
        return {"cases": self.cases, "runs": self.runs, "disagreeing_cases": self.disagreeing_cases,
                "verdicts": dict(self.verdicts), "disagreements": dict(self.kinds), "notes": dict(self.notes),
                "shortest": {k: {"detail": d, "program": p, "index": i} for k, (d, p, i) in self.shortest.items()},
                "by_signature": {k: dict(c.most_common()) for k, c in self.by_signature.items()},
                "messages": dict(self.messages.most_common()), "ids": list(self.ids), "failing": list(self.failing)}

    @classmethod
    def merged(cls, parts) -> "Tally":
        """One tally from the JSON of several (`to_json`): the shards of one sweep."""
        out = cls()
        for j in parts:
            out.cases += j["cases"]
            out.runs += j["runs"]
            out.disagreeing_cases += j["disagreeing_cases"]
            out.verdicts.update(j["verdicts"])
            out.kinds.update(j["disagreements"])
            out.notes.update(j["notes"])
            out.messages.update(j["messages"])
            for kind, c in j["by_signature"].items():
                out.by_signature.setdefault(kind, collections.Counter()).update(c)
            for kind, e in j["shortest"].items():
                out._shorter(kind, (e["detail"], e["program"], e["index"]))
            out.ids += j["ids"]
            out.failing += j["failing"]
        order = lambda case_id: int(case_id.split(":")[0])   # noqa: E731
        out.ids.sort(key=order)
        out.failing.sort(key=lambda f: order(f["id"]))
        return out


def _message(detail: str) -> str:
    """A refusal's message without its setting, names and numbers: one line per cause."""
    import re

    text = detail.split("}: ", 1)[-1]
    return re.sub(r"(?<![KMR\d])\d+(\.\d+)?", "N", re.sub(r"`[^`]*`", "`X`", text))[:160]


def case_id(index: int, case: Case) -> str:
    """`index:digest`: the case's place in the sequence and a hash of what it runs."""
    text = case.program([]) + repr(case.lines) + repr(sorted(case.target.items())) + \
        repr([sorted(s.items()) for s in case.settings])
    return f"{index}:{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def sweep(examples: int, folder, extra_settings: int = 1, seed: int | None = None, on_result=None,
          shard: tuple[int, int] = (0, 1), judge=None) -> Tally:
    """Run `examples` generated cases (deterministic unless `seed` is given); never stops early.

    `shard = (i, n)` runs only the cases whose index is i modulo n: every case is still
    drawn (the sequence is the unsharded one), the others are not judged. `judge(case)
    -> Result` replaces the harness (a test of the sharding itself); `on_result(res, tally)`
    is called after each judged case."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    part, parts = shard
    if not 0 <= part < parts:
        raise ValueError(f"shard {part}/{parts}: the part must be in [0, {parts})")
    tally = Tally()
    judge = judge or Harness(folder).run
    drawn = [0]

    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(cases(layer_names, extra_settings))
    def one(case):
        index = drawn[0]
        drawn[0] += 1
        if index % parts != part:
            return
        res = judge(case)
        res.case_id = case_id(index, case)
        tally.add(res, index)
        if on_result is not None:
            on_result(res, tally)

    (hseed(seed)(one) if seed is not None else one)()
    return tally


__all__ = ["Harness", "Result", "Tally", "case_id", "layer_names", "sweep"]
