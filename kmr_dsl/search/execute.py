"""Run a configured search and write everything it produces; decide the exit code.

Contract: `execute_search(...)` opens the journal (fresh or resumed), drives the
strategy, prints one progress line per trial to stderr, then writes OUT/search.json,
OUT/trials.md (and prints the table), OUT/pareto.png (skipped with a KMR506 warning
when matplotlib is missing) and, through the caller's `save_best`, the best model in
OUT/best/. It knows nothing of programs or torch, so the tests drive it with a
synthetic problem and a fake session.

Exit codes: 0 a setting meeting every budget line was found; 1 none was found (the
KMR406 error names the closest setting and the lines it misses); 3 none was found and
verification had answered UNKNOWN (the budget may still be infeasible: not proved
either way); 130 interrupted by Ctrl-C (journal intact, partial summary printed, no
model saved; `--resume` continues).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kmr_dsl.diagnostics import Diagnostic, KmrError, Span, error, render_all, warning
from kmr_dsl.search.driver import Limits, SearchResult, run_search
from kmr_dsl.search.journal import Journal
from kmr_dsl.search.report import progress_line, setting_text, summary_json, summary_text, trials_table
from kmr_dsl.search.trial import SKIPPED

EXIT_FOUND, EXIT_NONE, EXIT_UNKNOWN, EXIT_INTERRUPTED = 0, 1, 3, 130
SKIPPED_SHOWN = 25      # skipped settings with their own progress line


@dataclass
class SearchInfo:
    """Descriptive facts the reports carry; none of them changes what the search does."""
    pipeline: str
    file: str
    strategy: str
    options: dict
    seed: object
    backend: str = "local"
    verification: str = "verified"       # verified | unknown | skipped
    shown: list[str] = field(default_factory=list)     # meters the progress line shows
    units: dict[str, str] = field(default_factory=dict)  # meter label -> dimension
    span: Span | None = None             # the pipeline's search clause, for diagnostics


def _emit(diags: list[Diagnostic], stream=None) -> None:
    if diags:
        print(render_all(diags), file=stream or sys.stderr)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)   # readers never see half a report


def execute_search(problem, strategy, backend, out_dir: Path, info: SearchInfo, limits: Limits, *,
                   resume: bool = False, save_best: Callable | None = None, fmt: str = "text",
                   reported: Callable | None = None,
                   stderr=None) -> tuple[int, SearchResult]:
    stderr = stderr or sys.stderr
    out_dir = Path(out_dir)
    families = problem.space.families
    header = {"pipeline": info.pipeline, "strategy": info.strategy,
              "options": {k: v for k, v in sorted(info.options.items()) if k != "max_steps"},
              "seed": info.seed, "space": problem.space.signature()}
    journal = Journal.open(out_dir / "journal.jsonl", header, resume=resume)
    _emit(journal.warnings, stderr)

    quiet = {"skipped": 0}

    def progress(trial, search):
        if trial.status == SKIPPED:
            # sampling strategies can reject thousands of draws: show the first few only
            quiet["skipped"] += 1
            if quiet["skipped"] > SKIPPED_SHOWN:
                if quiet["skipped"] == SKIPPED_SHOWN + 1:
                    print(f"[-/{limits.max_runs}] further analytically infeasible settings are skipped "
                          "without a line here (they are in journal.jsonl)", file=stderr, flush=True)
                return
        line = progress_line(trial, search.runs, limits.max_runs, info.shown, info.units, families)
        print(line, file=stderr, flush=True)

    try:
        result = run_search(problem, strategy, backend, journal, limits, progress=progress)
    finally:
        journal.close()

    artifact = None
    if result.best is not None and not result.interrupted and save_best is not None:
        artifact = save_best(result.best)
        if artifact is not None:
            artifact = str(artifact)
    payload = summary_json(result, pipeline=info.pipeline, file=info.file, strategy=info.strategy,
                           options=info.options, seed=info.seed, backend=info.backend,
                           direction=problem.direction, verification=info.verification, artifact=artifact)
    # the pipeline's `report` items, read by save_best on the chosen setting only
    shown_report = (reported() if reported is not None else None) or []
    payload["report"] = shown_report
    table = trials_table(result, info.shown, info.units, families)
    try:
        _write_text(out_dir / "search.json", json.dumps(payload, indent=2, default=str) + "\n")
        _write_text(out_dir / "trials.md", f"# Trials of `{info.pipeline}` ({info.strategy}, seed {info.seed})\n\n"
                    f"{table}\n\n{summary_text(result, info.shown, info.units, families)}\n")
    except OSError as e:
        raise KmrError(error("KMR505", Span.unknown(str(out_dir)), f"cannot write the search report: {e}"))
    _plot(result, out_dir / "pareto.png", problem, stderr)

    if fmt == "json":
        print(json.dumps(payload, indent=2, default=str))
    else:
        print(table)
        print(summary_text(result, info.shown, info.units, families))
        for r in shown_report:
            print(f"reported on the chosen setting (never used to choose): {r['text']} = "
                  f"{r['value']:.6g} (baseline {r['baseline']:.6g})")
        if artifact:
            print(f"best model: {artifact}")
        print(f"journal, report and plot: {out_dir}")

    if result.interrupted:
        _emit([error("KMR409", info.span or Span.unknown(info.file), "search interrupted",
                     f"{result.runs} runs are in {out_dir / 'journal.jsonl'}",
                     hint="run the same command with --resume to continue where it stopped")], stderr)
        return EXIT_INTERRUPTED, result
    if result.best is not None:
        return EXIT_FOUND, result
    _emit([_none_found(result, info, families)], stderr)
    return (EXIT_UNKNOWN if info.verification == "unknown" else EXIT_NONE), result


def _none_found(result: SearchResult, info: SearchInfo, families) -> Diagnostic:
    span = info.span or Span.unknown(info.file)
    notes = [f"stopped: {result.stop_reason} after {result.runs} runs "
             f"({result.skipped} settings skipped as analytically infeasible)"]
    if result.closest is not None:
        c = result.closest
        notes.append(f"closest setting: #{c.index} {setting_text(c.setting, families)} "
                     f"(total normalised violation {c.violation:.4g})")
        notes += [f"it misses: {text}" for text in c.missed()] or [f"it failed: {c.message}"]
    hint = ("raise --max-steps, relax the missed lines, or widen the knob domains"
            if info.verification != "unknown" else
            "verification was UNKNOWN: raise --rlimit to let the verifier decide, or relax the budget")
    return error("KMR406", span, "no setting that meets every budget line was found", *notes, hint=hint)


def _plot(result, path: Path, problem, stderr) -> None:
    try:
        import matplotlib  # noqa: F401  (only to learn whether it is there)
    except ImportError:
        _emit([warning("KMR506", Span.unknown(str(path)), "matplotlib is missing: no pareto.png",
                       hint="pip install matplotlib   (or: pip install 'kmr-dsl[plot]')")], stderr)
        return
    from kmr_dsl.search.plot import pareto_plot

    try:
        pareto_plot(result, path, problem.cost_label, problem.quality_label, problem.direction)
    except OSError as e:
        _emit([warning("KMR505", Span.unknown(str(path)), f"cannot write the plot: {e}")], stderr)
