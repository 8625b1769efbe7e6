"""Search strategies on the synthetic problem of the tests (no torch, a few seconds).

Usage (from the checkout):
    python benchmarks/bench_search_synthetic.py [--runs 60] [--seeds 0 1 2 3 4]

The problem is tests/search/search_fakes.py: sparsity, bits and a low-rank ratio on a
model whose size is analytic and whose accuracy loss is smooth and monotone, 24 KB,
accuracy at least 0.94, every search starting from the corner witness (sparsity 0.95,
2 bits, ratio 0.1). It has no weight prior, so budgeted starts by spending the slack.
Brute force over the ladders gives the optimum. Prints a Markdown table
(docs/benchmarks.md, section "Search", quotes it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests" / "search"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from search_fakes import FakeProblem, FakeSession, brute_force, make_space, run  # noqa: E402

from kmr_dsl.search.budgeted import Budgeted  # noqa: E402
from kmr_dsl.search.sampling import RandomSearch  # noqa: E402

EXTREME = {"sparsity": 0.95, "bits": 2, "ratio": 0.1}


def strategies(seed: int, runs: int) -> dict:
    out = {"budgeted": Budgeted(seed=seed), "random": RandomSearch(n=runs, seed=seed)}
    try:
        from kmr_dsl.search.sampling import TPESearch

        import optuna  # noqa: F401
        out["tpe"] = TPESearch(n=runs, seed=seed)
    except ImportError:
        print("optuna is not installed: no tpe row", file=sys.stderr)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = ap.parse_args(argv)
    optimum, _ = brute_force(make_space())
    rows: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for name, strategy in strategies(seed, args.runs).items():
                result = run(strategy, FakeProblem(make_space(), witness=EXTREME), FakeSession(),
                             Path(tmp) / f"{name}-{seed}.jsonl", steps=args.runs)
                rows.setdefault(name, []).append(result)
    print(f"optimum (brute force): {optimum:.4f}\n")
    print("| strategy | runs to first feasible (mean; per seed) | best objective (min to max) | runs used (mean) |")
    print("|---|---|---|---|")
    for name, results in rows.items():
        firsts = [r.first_feasible_run or args.runs + 1 for r in results]
        bests = [r.best.objective for r in results if r.best is not None]
        print(f"| {name} | {statistics.mean(firsts):.1f}; {', '.join(str(f) for f in firsts)} | "
              + (f"{min(bests):.4f} to {max(bests):.4f}" if bests else "-")
              + f" | {statistics.mean(r.runs for r in results):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
