"""Budgets infeasible only through integrality: the certificates for a relaxation gap.

Two cases, each a window on `nonzero` that every line alone meets but no setting meets
with the others, while the relaxation a multiplier certificate rests on is met:

- "tree": per-layer families `s[l] in {0.0, 0.9}`, `b[l] in {8, 32}` over a chain of
  Linear layers whose widths cycle through 64, 96, 128, 80 (four shapes); the window
  lies just below the unpruned model (`nonzero` in [baseline - 100, baseline - 1]: every
  pruned layer removes thousands of weights) and a `size` line is beside it. Separable:
  the knapsack MILP decides it, and the certificate is a branch-and-bound tree
  (verify/bbtree.py) checked exactly. N layers as given (--layers).
- "boxes": 3 prune amounts shared by every layer (step 0.05) and one bit width, on 4
  layers of 4 shapes; the window lies between the unpruned model and the least
  pruning. Not separable (11^3 x 4 points in one group), the decoupled certificate
  has a gap; the certificate is a box split of the amounts (verify/boxsplit.py).
- "boxes-feasible": the same programs, with a window that one setting reaches (`nonzero`
  within 3 of its value at k0, k1, k2 = 0.45, 0.05, 0.3, and `size` at most its value
  there: 3 knobs, 4 layers; with 4 knobs on 8 layers, `nonzero` exactly its value at
  0.15, 0.3, 0.05, 0.4 and b = 8). The descent search misses both; before the witness
  search in the box split, Z3 found the first after a minute and not the second.

For each: `verify` end to end (--runs runs, cold caches: wall s, CPU s of the fastest
run, certificate kind and size), and beside it Z3 alone on the same obligation
(`use_bounds=False`), capped at --cap s (`--no-z3` leaves it out).

Run: .venv/bin/python benchmarks/bench_verify_gap.py [--layers 8 400 2000] [--cap 60]
     [--cases tree boxes boxes-feasible] [--runs 1] [--no-z3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WIDTHS = (64, 96, 128, 80)
TREE = """import "std"
model deep = factory("bench:mlp")
knob s[l in layers(Linear)] : float in {0.0, 0.9} = 0.0
knob b[l in layers(Linear)] : int in {8, 32} = 32
pipeline compress(deep) {
    for l in layers(Linear) {
        prune(amount = s[l])
        quantize(bits = b[l])
    }
    budget {
        nonzero >= baseline.nonzero - 100
        nonzero <= baseline.nonzero - 1
        size <= 95% * baseline.size
    }
}
"""
KNOBS = 3


def boxes_program(lines: list[str]) -> str:
    from tests.check.fakes import shared_knobs_program

    return shared_knobs_program(lines, KNOBS)


def chain_facts(n: int):
    """n Linear layers whose widths cycle through WIDTHS (tests/check/fakes.py `chain`)."""
    from tests.check.fakes import chain

    return chain(n, WIDTHS)


def run(name: str, src: str, facts, cap: float, runs: int = 1, z3_alone: bool = True) -> None:
    from kmr_dsl.check import check_source
    from kmr_dsl.verify import verify
    from kmr_dsl.verify.budget import budget_lines
    from kmr_dsl.verify.feasibility import check_feasibility
    from kmr_dsl.verify.obligations import clear_caches, pipeline_model
    from kmr_dsl.verify.report import Limits

    program, diags = check_source(src, "gap.kmr", facts_provider=lambda spec, trust, span: facts)
    if program is None:
        raise SystemExit("\n".join(d.message for d in diags))
    best = None
    for _ in range(runs):
        clear_caches()
        t, c = time.perf_counter(), time.process_time()
        report = verify(program)
        got = (time.perf_counter() - t, time.process_time() - c)
        best = got if best is None or got[1] < best[1] else best
    wall, cpu = best
    feas = next(r for r in report.results if r.kind == "feasibility")
    cert = feas.certificate or {}
    size = cert.get("nodes") or cert.get("leaves") or "-"
    if not z3_alone:
        print(f"| {name} | {len(facts.layers):,} | {feas.verdict.value} ({feas.method}) | {cert.get('kind', '-')} "
              f"| {size} | {wall:.2f} | {cpu:.2f} | - | - |", flush=True)
        return
    clear_caches()
    model = pipeline_model(program, "compress")
    lines, _ = budget_lines(model)
    t = time.perf_counter()
    z3res, _ = check_feasibility(model, lines, Limits(10 ** 12, cap), use_bounds=False)
    z3_wall = time.perf_counter() - t
    z3 = "cap" if z3res.verdict.value == "unknown" and "limit" in (z3res.reason or "") else z3res.verdict.value
    print(f"| {name} | {len(facts.layers):,} | {feas.verdict.value} ({feas.method}) | {cert.get('kind', '-')} "
          f"| {size} | {wall:.2f} | {cpu:.2f} | {z3} | {z3_wall:.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, nargs="+", default=[8, 400, 2000])
    ap.add_argument("--cap", type=float, default=60.0)
    ap.add_argument("--cases", nargs="+", default=["tree", "boxes", "boxes-feasible"])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--no-z3", action="store_true")
    args = ap.parse_args()
    opts = dict(runs=args.runs, z3_alone=not args.no_z3)
    print("| case | layers | verdict | certificate | nodes / boxes | verify s | verify CPU s | Z3 alone | Z3 s |")
    print("|---|---|---|---|---|---|---|---|---|")
    if "tree" in args.cases:
        for n in args.layers:
            run("tree", TREE, chain_facts(n), args.cap, **opts)
    from kmr_dsl.check import check_source
    from kmr_dsl.verify import predict
    from tests.check.fakes import shared_knobs_program

    def predicted(facts, knobs, setting):
        probe, _ = check_source(shared_knobs_program(["size <= baseline.size"], knobs), "gap.kmr",
                                facts_provider=lambda spec, trust, span: facts)
        got = predict(probe, "compress", setting)
        return int(got["nonzero"]), int(got["size"])

    facts = chain_facts(4)
    if "boxes" in args.cases:
        full, _ = predicted(facts, KNOBS, {})
        least, _ = predicted(facts, KNOBS, {"k0": 0.05})
        run("boxes", boxes_program([f"nonzero >= {least + 1}", f"nonzero <= {full - 1}", "size <= baseline.size"]),
            facts, args.cap, **opts)
    if "boxes-feasible" in args.cases:
        for knobs, n, setting, half in ((3, 4, {"k0": 0.45, "k1": 0.05, "k2": 0.3}, 3),
                                        (4, 8, {"k0": 0.15, "k1": 0.3, "k2": 0.05, "k3": 0.4, "b": 8}, 0)):
            facts = chain_facts(n)
            nz, size = predicted(facts, knobs, setting)
            lines = [f"nonzero >= {nz - half}", f"nonzero <= {nz + half}", f"size <= {size} B"]
            run(f"boxes-feasible ({knobs} knobs)", shared_knobs_program(lines, knobs), facts, args.cap, **opts)


if __name__ == "__main__":
    main()
