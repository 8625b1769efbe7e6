"""Benchmark of `kmr search`: budgeted against random and TPE on real pipelines.

Usage (from the checkout):
    python benchmarks/bench_search.py [--runs 20] [--seeds 0 1 2 3 4]
                                      [--pipelines digits layers] [--strategies budgeted random tpe]

For each pipeline, strategy and seed it runs one search of at most `--runs` runs and
records: the runs until the first setting that meets every budget line, the best
objective at the end (on the validation split: budgets and objectives read `val`), the
pipeline's `report` (the test split) measured on the chosen setting only, the runs used,
the settings skipped as analytically infeasible, and how many settings that ran the
verifier's `is_feasible` rejects (must be 0). From each random search it also derives
plain random search without the analytic filter (`unfiltered`: the same draws, each one
a run).

Honesty of the comparison:
- every table is per seed (means hide per-seed wins);
- a strategy whose searches are identical for every seed (budgeted: its first batch is
  the deterministic prior's choice and its refinement is deterministic; the seed only
  orders ties) is counted once, and the table says so;
- besides equal runs, strategies are compared at equal wall time: a search's clock is
  the measured cost of each setting it ran (the first, uncached evaluation's seconds)
  plus its own proposal overhead; the budget is the wall time budgeted spent, and each
  strategy's best objective within it is shown.

Pipelines: `digits` is examples/digits/digits.kmr; `layers`, `tight` and `small` are
the pipelines of benchmarks/search/digits_layers.kmr (per-layer sparsity, bits,
fine-tuning epochs: three knobs, five knob instances; 9 KB with accuracy within 2
points of the baseline, or within half a point for `tight`; 7.5 KB within one point
for `small`). Trials use training seed 0, so a setting
always measures the same: outcomes are cached per pipeline across strategies and seeds
(each search still counts every run it asks for), which keeps the whole benchmark to
a few minutes on two cores. Results go to benchmarks/out/search/results.json and a
Markdown summary is printed (docs/benchmarks.md, section "Search", quotes it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits"
for path in (ROOT, DIGITS):   # run from a checkout; the digits factory lives next to its program
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from kmr_dsl.app import load_checked  # noqa: E402
from kmr_dsl.diagnostics import has_errors, render_all  # noqa: E402
from kmr_dsl.search.backends import SESSION_SEED, LocalBackend  # noqa: E402
from kmr_dsl.search.command import make_strategy, witness_of  # noqa: E402
from kmr_dsl.search.driver import Limits, run_search  # noqa: E402
from kmr_dsl.search.journal import Journal  # noqa: E402
from kmr_dsl.search.problem import ProgramProblem  # noqa: E402
from kmr_dsl.search.space import key  # noqa: E402

PIPELINES = {
    "digits": (DIGITS / "digits.kmr", "compress"),
    "layers": (ROOT / "benchmarks" / "search" / "digits_layers.kmr", "layers"),
    "tight": (ROOT / "benchmarks" / "search" / "digits_layers.kmr", "tight"),
    "small": (ROOT / "benchmarks" / "search" / "digits_layers.kmr", "small"),
}


class CachedSession:
    """A PipelineSession whose outcomes are remembered by setting (training seed fixed).
    `spent` is the real time spent inside `evaluate` (hits included), so a search's own
    proposal overhead is its wall time minus `spent`."""

    def __init__(self, session):
        self.session = session
        self.cache: dict[str, object] = {}
        self.reported: dict[str, list] = {}
        self.evaluations = 0
        self.spent = 0.0
        self.last_model = None

    def evaluate(self, setting):
        start = time.perf_counter()
        k = key(setting)
        if k not in self.cache:
            self.evaluations += 1
            self.cache[k] = self.session.evaluate(dict(setting))
        self.spent += time.perf_counter() - start
        return self.cache[k]

    def report(self, setting) -> list:
        """The pipeline's `report` items on a chosen setting (applied again: same seed)."""
        k = key(setting)
        if k not in self.reported:
            self.reported[k] = self.session.evaluate(dict(setting), report=True).reported
        return self.reported[k]


def ensure_digits_weights() -> None:
    if not (DIGITS / "mlp.safetensors").exists():
        import runpy

        print("training examples/digits/mlp.safetensors first ...", file=sys.stderr)
        saved = sys.argv
        sys.argv = [str(DIGITS / "train_baseline.py")]
        try:
            runpy.run_path(str(DIGITS / "train_baseline.py"), run_name="__main__")
        except SystemExit as done:    # the script ends with sys.exit(main())
            if done.code:
                raise
        finally:
            sys.argv = saved


def one_search(problem, session, strategy_name, seed, runs, work: Path) -> dict:
    strategy = make_strategy(strategy_name, {"max_steps": runs, "seed": seed}, work)
    journal = Journal.open(work / f"{strategy_name}-{seed}.jsonl", {"pipeline": "bench"})
    start, spent = time.perf_counter(), session.spent
    try:
        result = run_search(problem, strategy, LocalBackend(session), journal, Limits(runs))
    finally:
        journal.close()
    wall = time.perf_counter() - start
    overhead = max(0.0, wall - (session.spent - spent))
    ran = [t for t in result.trials if t.ran]
    # the clock of this search had no outcome been cached: each run costs what its
    # setting cost when first measured, the proposal overhead spread over the runs
    clock, elapsed = [], 0.0
    for t in ran:
        elapsed += float(t.seconds or 0.0) + overhead / max(1, len(ran))
        clock.append({"t": round(elapsed, 3), "feasible": t.feasible, "objective": t.objective})
    reported = session.report(result.best.setting) if result.best else []
    row = {
        "strategy": strategy_name, "seed": seed,
        "first_feasible_run": result.first_feasible_run,
        "best_objective": result.best.objective if result.best else None,
        "best_setting": result.best.setting if result.best else None,
        "reported": {r["text"]: r["value"] for r in reported},
        "runs": result.runs, "skipped": result.skipped, "stop": result.stop_reason,
        "ran_inadmissible": sum(1 for t in ran if not problem.admissible(t.setting)),
        "trace": [key(t.setting) for t in result.trials],
        "clock": clock, "overhead_s": round(overhead, 3),
        "seconds": round(wall, 1),
    }
    if strategy_name == "random":
        row["unfiltered"] = unfiltered(result.trials, runs, problem.direction)
    return row


def unfiltered(trials, runs: int, direction) -> dict:
    """What plain random search (no analytic filter) would have done with the same draws:
    `random` records every distinct draw in order, a skipped one too, so a search that
    ran every draw would have spent a run on each; a skipped draw fails an analytic
    line, so it is never feasible. Repeated draws are not counted (they cost `random`
    nothing), which flatters the plain search slightly."""
    first = next((i for i, t in enumerate(trials, start=1) if t.feasible), None)
    seen = [t for t in trials[:runs] if t.feasible and t.objective is not None]
    pick = max if direction == "maximize" else min
    return {"first_feasible_run": first if first is not None and first <= runs else None,
            "best_objective": pick(t.objective for t in seen) if seen else None}


def bench_pipeline(name: str, strategies, seeds, runs: int) -> list[dict]:
    from kmr_dsl.runtime.session import PipelineSession
    from kmr_dsl.verify import verify

    path, pipeline = PIPELINES[name]
    program, diags, sources = load_checked(str(path))
    if program is None or has_errors(diags):
        print(render_all(diags, sources), file=sys.stderr)
        raise SystemExit(2)
    report = verify(program, pipeline)
    session = CachedSession(PipelineSession(program, pipeline, seed=SESSION_SEED))
    # as `kmr search` builds it: the weight profiles feed budgeted's quality prior
    problem = ProgramProblem(program, pipeline, witness_of(report), profiles=session.session.weight_profiles)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in strategies:
            for seed in seeds:
                row = one_search(problem, session, strategy, seed, runs, Path(tmp))
                row["pipeline"] = name
                rows.append(row)
                print(f"{name:7} {strategy:9} seed {seed}: first feasible at run {row['first_feasible_run']}, "
                      f"best {row['best_objective']}, {row['runs']} runs, {row['skipped']} skipped "
                      f"({row['seconds']} s)", file=sys.stderr, flush=True)
    print(f"{name}: {session.evaluations} distinct settings evaluated", file=sys.stderr)
    return rows


def _mean(values):
    return statistics.mean(values) if values else None


def _fmt(v, digits=4):
    return "-" if v is None else f"{v:.{digits}f}"


def identical_for_every_seed(group: list[dict]) -> bool:
    """The searches asked for the same settings in the same order whatever the seed."""
    return len(group) > 1 and all(r["trace"] == group[0]["trace"] for r in group)


def best_within(row: dict, seconds: float, direction: str = "maximize"):
    """The best feasible objective a search had measured after `seconds` of its clock."""
    seen = [c["objective"] for c in row["clock"] if c["t"] <= seconds + 1e-9 and c["feasible"]
            and c["objective"] is not None]
    if not seen:
        return None
    return max(seen) if direction == "maximize" else min(seen)


def summary(rows: list[dict], runs: int) -> str:
    """Per pipeline: one table per seed-row, strategies side by side (equal runs), then
    the same at equal wall time."""
    derived = [dict(r, strategy="random, unfiltered", **r["unfiltered"], runs=runs, skipped=0, ran_inadmissible=None,
                    reported={})
               for r in rows if r.get("unfiltered")]
    rows = rows + derived
    out = []
    for pipeline in dict.fromkeys(r["pipeline"] for r in rows):
        mine = [r for r in rows if r["pipeline"] == pipeline]
        strategies = list(dict.fromkeys(r["strategy"] for r in mine))
        seeds = list(dict.fromkeys(r["seed"] for r in mine))
        collapsed = {s for s in strategies if s != "random, unfiltered"
                     and identical_for_every_seed([r for r in mine if r["strategy"] == s])}
        test_key = next((k for r in mine for k in r.get("reported", {})), None)
        out.append(f"**{pipeline}** — equal runs ({runs} each). Each cell: run of the first feasible "
                   f"setting / best objective (val)" + (f" / {test_key} of the chosen setting" if test_key else "") + ".")
        out.append("")
        out.append("| seed | " + " | ".join(strategies) + " |")
        out.append("|---|" + "---|" * len(strategies))
        for seed in seeds:
            cells = []
            for s in strategies:
                r = next((x for x in mine if x["strategy"] == s and x["seed"] == seed), None)
                if r is None or (s in collapsed and seed != seeds[0]):
                    cells.append("(same as seed %s)" % seeds[0] if s in collapsed else "-")
                    continue
                cell = f"{r['first_feasible_run'] or '-'} / {_fmt(r['best_objective'])}"
                if test_key and s != "random, unfiltered":
                    cell += f" / {_fmt(r.get('reported', {}).get(test_key))}"
                cells.append(cell)
            out.append(f"| {seed} | " + " | ".join(cells) + " |")
        if collapsed:
            out.append("")
            out.append(f"{', '.join(sorted(collapsed))}: the same trials for every seed — one result, counted once.")
        inadmissible = sum(r["ran_inadmissible"] or 0 for r in mine if r["ran_inadmissible"] is not None)
        skipped = {s: _mean([r["skipped"] for r in mine if r["strategy"] == s]) for s in strategies}
        out.append(f"Analytically infeasible settings skipped (mean per search): "
                   + ", ".join(f"{s} {v:.1f}" for s, v in skipped.items() if s != "random, unfiltered")
                   + f"; inadmissible settings run: {inadmissible}.")
        # equal wall time: the budget is what the first (or only) budgeted search spent
        timed = [r for r in mine if r.get("clock") is not None and r["strategy"] != "random, unfiltered"]
        ref = next((r for r in timed if r["strategy"] == "budgeted"), None)
        if ref is not None and ref["clock"]:
            budget = ref["clock"][-1]["t"]
            out.append("")
            out.append(f"**{pipeline}** — equal wall time ({budget:.1f} s, what budgeted spent): best objective "
                       "(val) found within it.")
            out.append("")
            tstrat = [s for s in strategies if s != "random, unfiltered"]
            out.append("| seed | " + " | ".join(tstrat) + " |")
            out.append("|---|" + "---|" * len(tstrat))
            for seed in seeds:
                cells = []
                for s in tstrat:
                    r = next((x for x in timed if x["strategy"] == s and x["seed"] == seed), None)
                    if s in collapsed and seed != seeds[0]:
                        cells.append(f"(same as seed {seeds[0]})")
                    else:
                        cells.append("-" if r is None else _fmt(best_within(r, budget)))
                out.append(f"| {seed} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training and meters")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    ap.add_argument("--strategies", nargs="+", default=["budgeted", "random", "tpe"],
                    choices=["budgeted", "random", "tpe"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "search"))
    args = ap.parse_args(argv)
    ensure_digits_weights()
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for name in args.pipelines:
        rows += bench_pipeline(name, args.strategies, args.seeds, args.runs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"runs": args.runs, "seeds": args.seeds, "rows": rows},
                                                 indent=2, default=str))
    print(summary(rows, args.runs))
    bad = sum(r["ran_inadmissible"] for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
