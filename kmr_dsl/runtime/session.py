"""Apply a checked pipeline to its real model at one knob setting and read every meter.

Contract: `PipelineSession(program, pipeline)` loads the baseline model once and the
data lazily. `apply(setting)` runs the steps in order on a fresh deep copy of the
baseline (the input model is never changed): each step's impl is called as
`fn(model, layers, **arguments)` (spec §5) with knobs resolved to values, enum members
to their names, data to `Dataset`s and models to modules, inside a `RunContext`
carrying the seed, the baseline, the step's span and `threads` (torch threads for the
rules and the meters, baseline included; None leaves torch's default).
`evaluate(setting)` applies and then measures every meter the budget, the objective
and the report need, on the result and (once, cached) on the baseline, and judges
every budget line with the one IR evaluator (`kmr_dsl.core.evaluate`). A meter whose impl
has a `paired` form (the standard `latency`: `meters.latency_paired`) is read on the
result and the baseline together, in alternating rounds, and that baseline reading is
the one this evaluation reports and judges `baseline.latency(...)` with: both sides
see the same machine load. `save` writes the artifact and the reports as one set
(`runtime.outset`: a staging folder swapped into place).

Meter impls are called as `fn(model, **arguments)`, plus whichever of `baseline`,
`input_shape`, `input_dtype`, `recipe` and `span` their signature accepts, so a user's
own meter declared with `impl "mod:fn"` needs only the arguments it uses.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import time
from pathlib import Path

from kmr_dsl.core.program import NO_DATA, CheckedProgram, DataRef, MeterRef, ModelArg, Step
from kmr_dsl.core.state import ANALYTIC_METERS
from kmr_dsl.diagnostics import KmrError, Span, error
from kmr_dsl.core.evaluate import Env, evaluate, holds, margin, meter_key, meter_refs
from kmr_dsl.outcome import LineVerdict, Outcome
from kmr_dsl.runtime import context
from kmr_dsl.runtime.loaders import load_data, load_model
from kmr_dsl.runtime.user_code import exited, import_impl
from kmr_dsl.runtime.meters import fixed_threads
from kmr_dsl.runtime.report import render_markdown

ANALYTIC = tuple(ANALYTIC_METERS)


class PipelineSession:
    def __init__(self, program: CheckedProgram, pipeline: str, *, trust: bool = False, seed: int = 0,
                 progress=None, threads: int | None = None):
        self.program = program
        self.threads = threads            # torch threads for rules and meters; None: torch's default
        self.pipeline = program.pipelines[pipeline]
        self.trust = trust
        self.seed = seed
        self.progress = progress
        decl = self.pipeline.model
        self.spec = decl.loader
        self.base_dir = decl.loader.base_dir
        self.facts = decl.facts
        self.baseline = load_model(self.spec, trust=trust, span=decl.span)
        self.baseline.eval()
        self._data: dict = {}
        self._models: dict = {}
        self._baseline_meters: dict[str, float] = {}
        self.last_model = None
        self.refs = self._meter_refs()

    # ------------------------------------------------------------ applying
    def _meter_refs(self) -> list[MeterRef]:
        refs: list[MeterRef] = []
        for line in self.pipeline.budget:
            refs += meter_refs(line)
        if self.pipeline.objective is not None:
            refs += meter_refs(self.pipeline.objective.expr)
        for prop in self.program.properties.values():
            if prop.pipeline == self.pipeline.name:
                for line in prop.checks:
                    refs += meter_refs(line)
        for name in ANALYTIC:  # always reported, so predictions can be compared
            if name in self.program.meters:
                refs.append(MeterRef(name, (), False, True, Span.unknown()))
        unique: list[MeterRef] = []
        for ref in refs:
            plain = MeterRef(ref.name, ref.args, False, ref.analytic, ref.span)
            if all(meter_key(plain) != meter_key(u) for u in unique):
                unique.append(plain)
        return unique

    def _resolve(self, value, span: Span):
        if isinstance(value, DataRef):
            if value.name not in self._data:
                decl = self.program.data[value.name]
                self._data[value.name] = load_data(decl.loader, span=decl.span, trust=self.trust)
            return self._data[value.name]
        if isinstance(value, ModelArg):
            if value.name == "baseline":
                return self.baseline
            if value.name not in self._models:
                decl = self.program.models[value.name]
                self._models[value.name] = load_model(decl.loader, trust=self.trust, span=decl.span).eval()
            return self._models[value.name]
        return value

    def _arguments(self, step: Step, setting: dict) -> dict:
        env = Env(knobs=setting, resolve=lambda v: self._resolve(v, step.span))
        out = {}
        for name, expr in step.args:
            value = evaluate(expr, env)
            param = step.rule.param(name)
            if param is not None and param.type == "int" and isinstance(value, float) and value.is_integer():
                value = int(value)
            if param is not None and param.type == "data" and value == NO_DATA:
                value = None        # data the step left out (`= none`)
            out[name] = value
        return out

    def apply(self, setting: dict):
        model = copy.deepcopy(self.baseline)
        total = len(self.pipeline.steps)
        for i, step in enumerate(self.pipeline.steps, start=1):
            fn = import_impl(step.rule.impl, self._folder(step.rule.span), step.span, self.trust)
            args = self._arguments(step, setting)
            layers = [(name, model.get_submodule(name)) for name in step.layers]
            self._report(event="step", index=i, total=total, rule=step.rule.name, layers=len(layers))
            example = (tuple(self.facts.input_shape), self.facts.input_dtype) if self.facts else None
            ctx = context.RunContext(seed=self.seed, progress=self.progress, baseline=self.baseline, span=step.span,
                                     threads=self.threads, example=example)
            with context.use(ctx):
                try:
                    result = fn(model, layers, **args)
                except KmrError:
                    raise
                except SystemExit as exc:   # never a silent end of the process
                    raise exited(exc, step.span, f"`{step.rule.name}` ({step.rule.impl})") from exc
                except Exception as exc:  # an impl's bug is reported at the step, not as a traceback
                    raise KmrError(error("KMR405", step.span, f"`{step.rule.name}` failed: {type(exc).__name__}: {exc}",
                                         f"implementation {step.rule.impl}")) from exc
            model = result if result is not None else model
        model.eval()
        self.last_model = model
        return model

    # ------------------------------------------------------------ measuring
    def recipe(self, setting: dict) -> dict:
        """What the artifact stores besides the tensors. The knob setting is left out (it
        is in report.json) so that `size` of the baseline and of a result at any setting
        count the same header: a no-op setting is exactly as large as the baseline."""
        del setting
        return {"base": self.spec, "pipeline": self.pipeline.name}

    def measure(self, model, ref: MeterRef, setting: dict | None = None) -> float:
        fn = self._impl(ref)
        kwargs = self._kwargs(fn, ref, setting)
        return self._guarded(ref, lambda: float(fn(model, **kwargs)))

    def measure_paired(self, model, ref: MeterRef, setting: dict | None = None) -> tuple[float, float] | None:
        """(result, baseline) for a meter whose impl has a `paired` form (timed meters:
        both read in alternating rounds, under the same load); None for the others."""
        paired = self._paired(ref)
        if paired is None:
            return None
        kwargs = self._kwargs(paired, ref, setting)
        kwargs.pop("baseline", None)
        return self._guarded(ref, lambda: tuple(float(v) for v in paired(model, self.baseline, **kwargs)))

    def _impl(self, ref: MeterRef):
        meter = self.program.meters.get(ref.name)
        if meter is None:
            raise KmrError(error("KMR408", ref.span, f"no meter named `{ref.name}`"))
        return import_impl(meter.impl, self._folder(meter.span), ref.span, self.trust)

    def _folder(self, declared: Span) -> str:
        """The folder of the file that declared a rule or meter: its impl module's home."""
        return str(Path(declared.file).parent) if declared.line > 0 and declared.file else self.base_dir

    def _paired(self, ref: MeterRef):
        return getattr(self._impl(ref), "paired", None)

    def _kwargs(self, fn, ref: MeterRef, setting: dict | None) -> dict:
        """The meter's arguments, plus whichever extras `fn`'s signature accepts."""
        kwargs = {name: self._resolve(value, ref.span) for name, value in ref.args}
        extra = {
            "baseline": self.baseline,
            "input_shape": tuple(self.facts.input_shape) if self.facts else None,
            "input_dtype": self.facts.input_dtype if self.facts else "float32",
            "recipe": self.recipe(setting or {}),
            "span": ref.span,
        }
        accepted = inspect.signature(fn).parameters
        for key, value in extra.items():
            if key in accepted and key not in kwargs:
                kwargs[key] = value
        return kwargs

    def _guarded(self, ref: MeterRef, read):
        """`read()`, with an impl's failure reported at the meter, not as a traceback."""
        try:
            return read()
        except KmrError:
            raise
        except SystemExit as exc:
            raise exited(exc, ref.span, f"meter `{meter_key(ref)}`") from exc
        except Exception as exc:
            meter = self.program.meters[ref.name]
            raise KmrError(error("KMR408", ref.span, f"meter `{meter_key(ref)}` failed: {type(exc).__name__}: {exc}",
                                 f"implementation {meter.impl}")) from exc

    def weight_profiles(self) -> dict:
        """Weight profiles of the baseline's layers (search's quality prior)."""
        from kmr_dsl.runtime.profile import weight_profile

        return weight_profile(self.baseline, [f.name for f in self.facts.layers])

    def baseline_meters(self) -> dict[str, float]:
        """The baseline's reading of every meter, once (cached), except the meters with a
        paired form: `evaluate` reads those beside each result."""
        with fixed_threads(self.threads):
            for ref in self.refs:
                key = meter_key(ref)
                if key not in self._baseline_meters and self._paired(ref) is None:
                    self._report(event="meter", meter=key, model="baseline")
                    self._baseline_meters[key] = self.measure(self.baseline, ref, {})
        return dict(self._baseline_meters)

    def reported(self, model, setting: dict) -> list[dict]:
        """The pipeline's `report` items measured on `model` (and the baseline): shown in
        reports, never part of a budget or an objective, so search never reads them on
        a trial, only on the setting it chose."""
        items = self.pipeline.report
        if not items:
            return []
        refs: list[MeterRef] = []
        for item in items:
            for ref in meter_refs(item.expr):
                plain = MeterRef(ref.name, ref.args, False, ref.analytic, ref.span)
                if all(meter_key(plain) != meter_key(r) for r in refs):
                    refs.append(plain)
        base, measured = {}, {}
        with fixed_threads(self.threads):
            for ref in refs:
                key = meter_key(ref)
                self._report(event="meter", meter=key, model="result (report)")
                pair = self.measure_paired(model, ref, setting)
                if pair is None:
                    measured[key] = self.measure(model, ref, setting)
                    if key not in self._baseline_meters:
                        self._baseline_meters[key] = self.measure(self.baseline, ref, {})
                    base[key] = self._baseline_meters[key]
                else:
                    measured[key], base[key] = pair

        def reader(on_result: bool):
            def read(ref: MeterRef) -> float:
                key = meter_key(MeterRef(ref.name, ref.args, False, ref.analytic, ref.span))
                return measured[key] if on_result and not ref.baseline else base[key]
            return read

        return [{"text": item.text,
                 "value": float(evaluate(item.expr, Env(knobs=setting, meter=reader(True)))),
                 "baseline": float(evaluate(item.expr, Env(knobs=setting, meter=reader(False))))}
                for item in items]

    def evaluate(self, setting: dict, predicted: dict | None = None, report: bool = False) -> Outcome:
        """Apply and measure; `report=True` (kmr run, search's chosen setting) also reads
        the pipeline's `report` items."""
        start = time.perf_counter()
        base = self.baseline_meters()
        model = self.apply(setting)
        measured = {}
        with fixed_threads(self.threads):
            for ref in self.refs:
                key = meter_key(ref)
                self._report(event="meter", meter=key, model="result")
                pair = self.measure_paired(model, ref, setting)
                if pair is None:
                    measured[key] = self.measure(model, ref, setting)
                else:   # a timed meter: this trial's baseline reading, taken beside the result's
                    measured[key], base[key] = pair

        def reading(ref: MeterRef) -> float:
            key = meter_key(MeterRef(ref.name, ref.args, False, ref.analytic, ref.span))
            return base[key] if ref.baseline else measured[key]

        env = Env(knobs=setting, meter=reading)
        lines = tuple(
            LineVerdict(text=span_text(line.span, self.program.sources), holds=holds(line, env),
                        left=float(evaluate(line.left, env)), right=float(evaluate(line.right, env)),
                        margin=float(margin(line, env)), analytic=line.analytic, op=line.op, line=line.span.line)
            for line in self.pipeline.budget)
        objective = None
        if self.pipeline.objective is not None:
            objective = float(evaluate(self.pipeline.objective.expr, env))
        reported = self.reported(model, setting) if report else []
        return Outcome(dict(setting), measured, base, lines, objective, time.perf_counter() - start,
                       dict(predicted or {}), tuple(reported))

    def _report(self, **event) -> None:
        if self.progress is not None:
            try:
                self.progress(event)
            except Exception:  # noqa: BLE001 - progress display is best-effort
                pass

    # ------------------------------------------------------------ saving
    def save(self, model, out_dir, setting: dict, outcome: Outcome | None = None, extra: dict | None = None,
             outputs=None) -> Path:
        """Write OUT/model.safetensors, OUT/report.json and OUT/report.md as one set
        (runtime.outset): all three appear together or the old set stays. `outputs` is an
        OutputSet already prepared before the pipeline ran (`kmr run`), else one is made."""
        from kmr_dsl.runtime import artifact
        from kmr_dsl.runtime.outset import OutputSet

        out = Path(out_dir)
        path = out / "model.safetensors"
        outputs = outputs or OutputSet(out, self.pipeline.span)
        stage = outputs.stage or outputs.prepare()
        try:
            written = artifact.save(model, stage / path.name, self.recipe(setting), span=self.pipeline.span)
            if outcome is not None:
                payload = {"file": self.program.file, "pipeline": self.pipeline.name, "artifact": str(path),
                           "artifact_bytes": written, **outcome.to_json(), **(extra or {})}
                write_atomic(stage / "report.json", json.dumps(payload, indent=2, default=str))
                write_atomic(stage / "report.md", render_markdown(self, outcome, path))
            outputs.commit()
        except OSError as exc:
            raise KmrError(error("KMR505", self.pipeline.span, f"cannot write the outputs into `{out}`", str(exc),
                                 hint="choose another --out folder")) from exc
        finally:
            outputs.discard()      # whatever stopped us (an error, Ctrl-C): no staging folder stays
        return path


def span_text(span: Span, sources: dict[str, str]) -> str:
    """The source text a span covers, on one line."""
    text = sources.get(span.file)
    if text is None:
        try:
            text = Path(span.file).read_text(encoding="utf-8")
        except OSError:
            return f"line {span.line}"
    lines = text.split("\n")
    if not (1 <= span.line <= len(lines)):
        return f"line {span.line}"
    if span.end_line == span.line:
        return lines[span.line - 1][span.col - 1:span.end_col - 1].strip()
    body = [lines[span.line - 1][span.col - 1:]] + lines[span.line:span.end_line - 1] + [lines[span.end_line - 1][:span.end_col - 1]]
    return " ".join(part.split("#")[0].strip() for part in body if part.strip())


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
