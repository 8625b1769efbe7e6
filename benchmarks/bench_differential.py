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

Sharding: `--shard I/N` judges only the cases whose index is I modulo N (every case is
still drawn, so the N shards together are exactly the unsharded cases); `--merge a.json
b.json` prints the summary of shards' JSON as one run; `--jobs N` runs N shards as
subprocesses (one per core) and merges them. The JSON lists every case's id
(`index:digest`) and every disagreeing case (its program and disagreements), for triage.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_differential.py [--cases 2000] [--settings 1]
     [--seed N] [--json out.json] [--shard I/N | --jobs N | --merge a.json b.json ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.verify.soundness import Tally, sweep  # noqa: E402


def _shard(text: str) -> tuple[int, int]:
    try:
        part, parts = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard wants I/N (e.g. 0/2), not {text!r}") from None
    if not 0 <= part < parts:
        raise argparse.ArgumentTypeError(f"--shard {text}: I must be in [0, N)")
    return part, parts


def summary(tally: Tally, wall: float, cpu: float) -> str:
    out = [f"cases {tally.cases}, runs {tally.runs}, wall {wall:.0f} s, cpu {cpu:.0f} s "
           f"({1000 * cpu / max(tally.cases, 1):.0f} ms cpu per case)",
           "verdicts: " + ", ".join(f"{k or '-'} {v}" for k, v in sorted(tally.verdicts.items())),
           f"cases with a disagreement: {tally.disagreeing_cases}; by kind (cases; target 0):"
           + (" none" if not tally.kinds else "")]
    for kind, n in sorted(tally.kinds.items(), key=lambda kv: (-kv[1], kv[0])):
        common = tally.by_signature[kind].most_common(3)
        out.append(f"  {kind:40s} {n:5d}   e.g. " + "; ".join(f"{sig} ({k})" for sig, k in common))
    for message, n in tally.messages.most_common():
        out.append(f"  {n:5d} x {message}")
    if tally.notes:
        out.append("not disagreements: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.notes.items())))
    text = "\n".join(out) + "\n"
    for kind, (detail, program, index) in sorted(tally.shortest.items()):
        text += f"\n--- {kind} (case {index}): {detail}\n{program}"
    return text


def write_json(path, tally: Tally, wall: float, cpu: float, **extra) -> None:
    """Written whole, then renamed into place: a reader never sees half a file."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps({**tally.to_json(), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), **extra},
                              indent=2))
    os.replace(tmp, path)


def _merge(files) -> tuple[Tally, float, float]:
    parts = [json.loads(Path(f).read_text()) for f in files]
    for f, j in zip(files, parts):
        if j.get("partial"):
            print(f"merge: {f} is a partial shard ({j['cases']} cases so far)", file=sys.stderr)
    ids = [i for j in parts for i in j["ids"]]
    if len(set(ids)) != len(ids):
        raise SystemExit("merge: the shards overlap (a case id appears twice): not shards of one sweep")
    return Tally.merged(parts), max(j["wall_s"] for j in parts), sum(j["cpu_s"] for j in parts)


def _jobs(args) -> tuple[Tally, float, float]:
    """Run --jobs shards as subprocesses of this script, then merge their JSON."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kmr-differential-shards-") as folder:
        files = [str(Path(folder) / f"shard{i}.json") for i in range(args.jobs)]
        common = ["--cases", str(args.cases), "--settings", str(args.settings)] + \
            (["--seed", str(args.seed)] if args.seed is not None else []) + (["--quiet"] if args.quiet else [])
        procs = [subprocess.Popen([sys.executable, __file__, *common, "--shard", f"{i}/{args.jobs}", "--json", f],
                                  stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
                 for i, f in enumerate(files)]
        codes = [p.wait() for p in procs]
        if any(c not in (0, 1) for c in codes):
            raise SystemExit(f"a shard failed (exit codes {codes})")
        tally, _, cpu = _merge(files)
    return tally, time.perf_counter() - start, cpu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--settings", type=int, default=1, help="random settings per case besides witness and target")
    ap.add_argument("--seed", type=int, default=None, help="explore other cases (default: the deterministic ones)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--quiet", action="store_true", help="no progress line every 100 cases")
    how = ap.add_mutually_exclusive_group()
    how.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N", help="judge the cases with index I mod N")
    how.add_argument("--jobs", type=int, default=None, metavar="N", help="run N shards as processes and merge them")
    how.add_argument("--merge", nargs="+", default=None, metavar="JSON", help="merge shards' --json files")
    args = ap.parse_args(argv)
    if args.merge:
        tally, wall, cpu = _merge(args.merge)
    elif args.jobs:
        tally, wall, cpu = _jobs(args)
    else:
        import torch
        torch.set_num_threads(1)
        start, cpu0 = time.perf_counter(), time.process_time()
        label = f"shard {args.shard[0]}/{args.shard[1]}: " if args.shard[1] > 1 else ""

        def progress(res, tally):
            if res.disagreements:
                print(f"  {label}case {res.case_id}: " + ", ".join(res.kinds()), file=sys.stderr, flush=True)
            if not args.quiet and tally.cases % 100 == 0:
                print(f"  {label}{tally.cases} cases, {time.perf_counter() - start:.0f} s",
                      file=sys.stderr, flush=True)
            if args.json and tally.cases % 20 == 0:     # a long run's partial figures, readable while it runs
                write_json(args.json, tally, time.perf_counter() - start, time.process_time() - cpu0,
                           shard=list(args.shard), partial=True)

        with tempfile.TemporaryDirectory(prefix="kmr-differential-") as folder:
            tally = sweep(args.cases, folder, extra_settings=args.settings, seed=args.seed, on_result=progress,
                          shard=args.shard)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    print(summary(tally, wall, cpu), end="")
    if args.json:
        write_json(args.json, tally, wall, cpu, shard=list(args.shard) if not (args.merge or args.jobs) else None,
                   partial=False)
    return 0 if not tally.kinds else 1


if __name__ == "__main__":
    raise SystemExit(main())
