"""The differential soundness suite at scale: `kmr check` against `kmr run`, case by case.

Generates --cases programs (tests/verify/soundness_cases.py: small Linear/Conv2d/
Embedding stacks, a residual block, tied embeddings, a ResNet with BatchNorm and a
projection shortcut, a gated (SwiGLU) MLP, one-layer BERT and Llama built from
transformers configs; 1-4 steps over every standard rule, head pruning on the attention
projections and channel pruning through residual streams and gated products included;
knobs, knob families and 1-3 analytic budget lines, most of them tight at some setting),
and for each (tests/verify/soundness.py): checks it in process, verifies it, runs it at
the witness and at --settings further settings (plus the target setting its lines were
made tight at, and a refuted step's counterexample), watching every step's
preconditions. Prints the number of cases, runs and verdicts, then the disagreements by
kind (the target is 0 in every row) with, per kind, the shortest program that shows
it; `--json FILE` writes the same as JSON.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_differential.py [--cases 2000] [--settings 1]
     [--seed N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tests.verify.soundness import sweep  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--settings", type=int, default=1, help="random settings per case besides witness and target")
    ap.add_argument("--seed", type=int, default=None, help="explore other cases (default: the deterministic ones)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--quiet", action="store_true", help="no progress line every 100 cases")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    start, cpu0 = time.perf_counter(), time.process_time()
    done = [0]

    def progress(res):
        done[0] += 1
        if not args.quiet and done[0] % 100 == 0:
            print(f"  {done[0]} cases, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="kmr-differential-") as folder:
        tally = sweep(args.cases, folder, extra_settings=args.settings, seed=args.seed, on_result=progress)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    print(f"cases {tally.cases}, runs {tally.runs}, wall {wall:.0f} s, cpu {cpu:.0f} s "
          f"({1000 * cpu / max(tally.cases, 1):.0f} ms cpu per case)")
    print("verdicts: " + ", ".join(f"{k or '-'} {v}" for k, v in sorted(tally.verdicts.items())))
    print(f"cases with a disagreement: {tally.disagreeing_cases}; by kind (cases; target 0):"
          + (" none" if not tally.kinds else ""))
    for kind, n in sorted(tally.kinds.items(), key=lambda kv: (-kv[1], kv[0])):
        common = tally.by_signature[kind].most_common(3)
        print(f"  {kind:40s} {n:5d}   e.g. " + "; ".join(f"{sig} ({k})" for sig, k in common))
    for message, n in tally.messages.most_common():
        print(f"  {n:5d} x {message}")
    if tally.notes:
        print("not disagreements: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.notes.items())))
    for kind, (detail, program) in sorted(tally.shortest.items()):
        print(f"\n--- {kind}: {detail}\n{program}", end="")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "cases": tally.cases, "runs": tally.runs, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "verdicts": dict(tally.verdicts), "disagreements": dict(tally.kinds), "notes": dict(tally.notes),
            "shortest": {k: {"detail": d, "program": p} for k, (d, p) in tally.shortest.items()},
            "by_signature": {k: dict(c.most_common()) for k, c in tally.by_signature.items()},
            "messages": dict(tally.messages.most_common()),
        }, indent=2))
    return 0 if not tally.kinds else 1


if __name__ == "__main__":
    raise SystemExit(main())
