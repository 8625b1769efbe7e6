"""Benchmark of `kmr search`: budgeted against random and TPE on real pipelines.

Usage (from the checkout):
    python benchmarks/bench_search.py [--runs 20] [--seeds 0 1 2 3 4]
                                      [--pipelines digits layers] [--strategies budgeted random tpe]

For each pipeline, strategy and seed it runs one search of at most `--runs` runs and
records: the runs until the first setting that meets every budget line, the best
objective at the end, the runs used, the settings skipped as analytically infeasible,
and how many settings that ran the verifier's `is_feasible` rejects (must be 0). From
each random search it also derives plain random search without the analytic filter
(`unfiltered`: the same draws, each one a run).

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
    """A PipelineSession whose outcomes are remembered by setting (training seed fixed)."""

    def __init__(self, session):
        self.session = session
        self.cache: dict[str, object] = {}
        self.evaluations = 0
        self.last_model = None

    def evaluate(self, setting):
        k = key(setting)
        if k not in self.cache:
            self.evaluations += 1
            self.cache[k] = self.session.evaluate(dict(setting))
        return self.cache[k]


def ensure_digits_weights() -> None:
    if not (DIGITS / "mlp.safetensors").exists():
        import runpy

        print("training examples/digits/mlp.safetensors first ...", file=sys.stderr)
        saved = sys.argv
        sys.argv = [str(DIGITS / "train_baseline.py")]
        try:
            runpy.run_path(str(DIGITS / "train_baseline.py"), run_name="__main__")
        finally:
            sys.argv = saved


def one_search(problem, session, strategy_name, seed, runs, work: Path) -> dict:
    strategy = make_strategy(strategy_name, {"max_steps": runs, "seed": seed}, work)
    journal = Journal.open(work / f"{strategy_name}-{seed}.jsonl", {"pipeline": "bench"})
    start = time.perf_counter()
    try:
        result = run_search(problem, strategy, LocalBackend(session), journal, Limits(runs))
    finally:
        journal.close()
    ran = [t for t in result.trials if t.ran]
    row = {
        "strategy": strategy_name, "seed": seed,
        "first_feasible_run": result.first_feasible_run,
        "best_objective": result.best.objective if result.best else None,
        "best_setting": result.best.setting if result.best else None,
        "runs": result.runs, "skipped": result.skipped, "stop": result.stop_reason,
        "ran_inadmissible": sum(1 for t in ran if not problem.admissible(t.setting)),
        "seconds": round(time.perf_counter() - start, 1),
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


def summary(rows: list[dict], runs: int) -> str:
    out = ["| pipeline | strategy | runs to first feasible (mean; per seed) | found | best objective "
           "(mean; min) | runs used (mean) | skipped (mean) | inadmissible runs |",
           "|---|---|---|---|---|---|---|---|"]
    derived = [dict(r, strategy="random, unfiltered", **r["unfiltered"], runs=runs, skipped=0, ran_inadmissible=None)
               for r in rows if r.get("unfiltered")]
    rows = rows + derived
    for (pipeline, strategy) in sorted(dict.fromkeys((r["pipeline"], r["strategy"]) for r in rows),
                                       key=lambda ps: [r["pipeline"] for r in rows].index(ps[0])):
        group = [r for r in rows if r["pipeline"] == pipeline and r["strategy"] == strategy]
        # a search that never met the budget counts as runs + 1 in the mean
        firsts = [r["first_feasible_run"] or runs + 1 for r in group]
        per_seed = ", ".join(str(r["first_feasible_run"] or "-") for r in group)
        bests = [r["best_objective"] for r in group if r["best_objective"] is not None]
        out.append(
            f"| {pipeline} | {strategy} | {_mean(firsts):.1f}; {per_seed} | {len(bests)}/{len(group)} | "
            + (f"{_mean(bests):.4f}; {min(bests):.4f}" if bests else "-")
            + f" | {_mean([r['runs'] for r in group]):.1f} | {_mean([r['skipped'] for r in group]):.1f} | "
            + (f"{sum(r['ran_inadmissible'] for r in group)} |" if group[0]["ran_inadmissible"] is not None
               else "(every draw runs) |"))
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    ap.add_argument("--strategies", nargs="+", default=["budgeted", "random", "tpe"],
                    choices=["budgeted", "random", "tpe"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "search"))
    args = ap.parse_args(argv)
    ensure_digits_weights()
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
