"""`kmr run FILE [--set knob=value ...] [--out DIR] [--force]`.

Contract: check the file (exit 2 when malformed), verify the pipeline and refuse a
refuted one unless `--force` (exit 1), then apply the steps at the given (or default)
setting with a progress display on stderr, measure every meter on the baseline and the
result, print one table (baseline, predicted, measured) and every budget line's
verdict, and write OUT/model.safetensors, OUT/report.json and OUT/report.md as one set
(runtime.outset: OUT is checked before the pipeline runs, the set is written into a
staging folder and swapped into place, so an error, Ctrl-C or a kill leaves the old set
whole or the new one, never a mix). Exit 0 when every budget line holds, 1 when one
fails (spec §8), 130 on Ctrl-C.
"""

from __future__ import annotations

import sys
from pathlib import Path

from kmr_dsl.app import Output, emit_json, load_checked, pick_pipeline, solver_options
from kmr_dsl.diagnostics import Span, error, render_all, warning


class Progress:
    """One line per step and per meter on stderr; epochs of training rules update in place."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "step":
            self._line(f"[{event['index']}/{event['total']}] {event['rule']}"
                       + (f" on {event['layers']} layer(s)" if event.get("layers") else ""))
        elif kind == "meter":
            self._line(f"  measuring {event['meter']} on the {event['model']}")
        elif "epoch" in event:
            loss = event.get("loss")
            text = f"    {event.get('rule', 'train')} epoch {event['epoch']}/{event.get('epochs', '?')}"
            if loss is not None:
                text += f" loss {loss:.4f}"
            self._line(text)

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


def run_command(args) -> int:
    from kmr_dsl.settings import format_setting, parse_settings

    out = Output(args.format)
    program, diags, sources = load_checked(args.file, trust=args.trust)
    if program is None:
        out.diagnostics(diags, sources)
        return 2
    name = pick_pipeline(program, args.pipeline, args.file)
    pipeline = program.pipelines[name]
    setting = parse_settings(program, pipeline, args.set, Span.unknown("--set"))

    from kmr_dsl.verify import predict, verify

    report = verify(program, name, **solver_options(args))
    shown = list(diags) + list(report.diagnostics)
    if report.exit_code == 1 and not args.force:
        out.diagnostics(shown, sources)
        print(render_all([error("KMR301" if any(r.kind == "composability" and r.verdict.value == "refuted"
                                                 for r in report.results) else "KMR302",
                                pipeline.span, f"refusing to run `{name}`: verification refuted it",
                                hint="fix the program, or pass --force to run it anyway")], sources), file=sys.stderr)
        return 1
    if report.exit_code == 3:
        shown.append(warning("KMR303", pipeline.span, "verification is unknown; running anyway"))
    out.diagnostics([d for d in shown if d.code != "KMR313"], sources)

    predicted = predict(program, name, setting)
    from kmr_dsl.runtime.context import default_threads
    from kmr_dsl.runtime.outset import OutputSet
    from kmr_dsl.runtime.session import PipelineSession

    out_dir = Path(args.out) if args.out else Path("out") / name
    outputs = OutputSet(out_dir, Span.unknown("--out"))
    outputs.prepare()               # an unwritable --out is reported before any work
    try:
        progress = Progress()
        print(f"running `{name}` at {format_setting(setting)}", file=sys.stderr)
        threads = args.threads if args.threads is not None else default_threads(pipeline.model.facts)
        session = PipelineSession(program, name, trust=args.trust, seed=args.seed, progress=progress, threads=threads)
        outcome = session.evaluate(setting, predicted=_keyed(session, predicted), report=True)
        path = session.save(session.last_model, out_dir, setting, outcome,
                            extra={"verification": report.to_json()}, outputs=outputs)
    finally:
        outputs.discard()

    from kmr_dsl.runtime.report import render_text

    if args.format == "json":
        emit_json({"exit_code": 0 if outcome.feasible else 1, "artifact": str(path), **outcome.to_json()})
    else:
        print(render_text(session, outcome))
        print(f"\nwrote {path} ({outcome.meters.get('size', 0):,.0f} bytes), {out_dir / 'report.json'}, "
              f"{out_dir / 'report.md'}")
        print("budget met" if outcome.feasible else "budget NOT met")
    return 0 if outcome.feasible else 1


def _keyed(session, predicted: dict) -> dict:
    """The verifier predicts by meter name; the report keys readings like `size`."""
    from kmr_dsl.core.evaluate import meter_key

    out = {}
    for ref in session.refs:
        if ref.analytic and ref.name in predicted and not ref.args:
            out[meter_key(ref)] = predicted[ref.name]
    return out
