"""Verification at scale: several budget lines (with `>=`), per-layer families, a 70B meta model.

Grid: N in {100, 1000, 3000} Linear layers x {1, 2, 3} budget lines x {feasible,
infeasible}. The model is a chain of Linear layers whose widths cycle through 64, 96,
128, 80 (four layer shapes; ModelFacts written by hand, no torch), and the program
(tests/check/fakes.py `per_layer_program`)

    knob s[l in layers(Linear)] : float in [0.0, 0.9] step 0.05 = 0.0
    knob b[l in layers(Linear)] : int in {4, 8, 16, 32} = 32
    for l in layers(Linear) { prune(amount = s[l])  quantize(bits = b[l]) }
    budget { LINES }

with the lines of LINES below (the defaults, no compression, meet no size line, so a
feasible cell needs a real search: per-line minimisers, then the knapsack). Each cell is checked once (not timed), then
`kmr_dsl.verify.verify` runs end to end (symbolic state, every obligation, warnings)
--runs times with the verifier's caches cleared before each run; the median wall
time is reported with the process's CPU time. Peak RSS is per N (one process per N,
`ru_maxrss`), to judge that memory grows at most linearly.

Beside it, "Z3 alone": the same feasibility obligation decided by Z3 only
(`use_bounds=False`, case-split encoding, core minimisation when infeasible), each
solver call capped at --cap seconds (the verdict column says "cap" when it hit it).

The 70B row: a Llama-2-70B config.json (80 blocks x 7 Linear, embeddings, head; hidden
8192) is written to a temporary folder and loaded with `hf(PATH, weights = false)`
(meta device). "cold" is the facts extraction (build on meta + a traced forward);
"warm" is `kmr check` with the facts cached: checking the program and verifying it
with per-layer bit and sparsity families and three budget lines.

The 25-knob row: 25 scalar sparsity knobs, each pruning every layer, and one bit-width
knob (one component of 26 knobs, 11^25 x 4 points, products of the knobs) on 20
layers (--knobs-layers); feasible (a witness by descent search), infeasible (one line out
of reach) and jointly infeasible (two lines each met alone, not together: a certificate
over the layers' shared counts, verify/joint.py). `--child-knobs` runs only this case
and prints its JSON.

`--no-z3` leaves the "Z3 alone" column out (a run of `verify` only); `--stat min`
reports the fastest of the runs instead of the median (for paired before/after
comparisons on a loaded machine, where the slow runs are the noise). Each N's rows go
to stderr as JSON with both (cpu_min, cpu_median, wall_min, wall_median).

Run: .venv/bin/python benchmarks/bench_verify_scale.py [--layers 100 1000 3000] [--runs 3] [--cap 20] [--no-70b] [--no-knobs] [--knobs-layers 20]
     [--no-z3] [--stat median|min]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WIDTHS = (64, 96, 128, 80)
LINES = {
    (1, "feasible"): ["size <= 25% * baseline.size"],
    (1, "infeasible"): ["size <= 5% * baseline.size"],
    (2, "feasible"): ["size <= 20% * baseline.size", "nonzero >= 40% * baseline.nonzero"],
    (2, "infeasible"): ["size <= 12% * baseline.size", "nonzero >= 90% * baseline.nonzero"],
    (3, "feasible"): ["size <= 20% * baseline.size", "nonzero >= 40% * baseline.nonzero",
                      "nonzero <= 95% * baseline.nonzero"],
    (3, "infeasible"): ["size <= 12% * baseline.size", "nonzero >= 88% * baseline.nonzero",
                        "nonzero <= 95% * baseline.nonzero"],
}
LLAMA_70B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192,
             "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
             "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 4096,
             "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "float16"}
LLAMA_PROGRAM = """import "std"
model llm = hf("llama70b", weights = false)
knob s[l in layers(Linear)] : float in [0.0, 0.9] step 0.05 = 0.0
knob b[l in layers(Linear)] : int in {{4, 8, 16}} = 16
pipeline compress(llm) {{
    for l in layers(Linear) {{
        prune(amount = s[l])
        quantize(bits = b[l])
    }}
    budget {{
        size <= {size}% * baseline.size
        nonzero >= 50% * baseline.nonzero
        nonzero <= 90% * baseline.nonzero
    }}
}}
"""


def chain_facts(n: int):
    """n Linear layers whose widths cycle through WIDTHS (tests/check/fakes.py `chain`)."""
    from tests.check.fakes import chain

    return chain(n, WIDTHS)


KNOBS25 = 25
MANY_KNOBS_LAYERS = 20
MANY_KNOBS = {"feasible": ["size <= 30% * baseline.size", "nonzero >= 10% * baseline.nonzero"],
              "infeasible": ["size <= 1% * baseline.size", "nonzero >= 10% * baseline.nonzero"],
              "jointly infeasible": ["size <= 12% * baseline.size", "nonzero >= 90% * baseline.nonzero"]}


def many_knobs_program(lines: list[str]) -> str:
    """25 scalar sparsity knobs, each pruning every layer, and one bit-width knob."""
    from tests.check.fakes import shared_knobs_program

    return shared_knobs_program(lines, KNOBS25)


def many_knobs(runs: int, layers: int = MANY_KNOBS_LAYERS) -> dict:
    """The 25-knob case, in its own process (peak RSS is its own)."""
    facts = chain_facts(layers)
    out = {}
    for kind, lines in MANY_KNOBS.items():
        _, report, feas, wall, cpu = _timed_verify(many_knobs_program(lines), "many.kmr", facts, runs)
        out[kind] = {"verdict": feas.verdict.value, "method": feas.method, "wall": wall, "cpu": cpu}
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


STAT = statistics.median      # or min (--stat min)


def _timed_verify(src: str, name: str, facts, runs: int):
    """(program, last report, its feasibility result, median (or min) wall s, CPU s) of
    `verify` on `src` over `runs` runs, each with cold verifier caches."""
    from kmr_dsl.check import check_source
    from kmr_dsl.verify import verify
    from kmr_dsl.verify.obligations import clear_caches

    program, diags = check_source(src, name, facts_provider=lambda spec, trust, span: facts)
    if program is None:
        raise SystemExit("\n".join(d.message for d in diags))
    walls, cpus, report = [], [], None
    for _ in range(runs):
        clear_caches()
        t, c = time.perf_counter(), _cpu()
        report = verify(program)
        walls.append(time.perf_counter() - t)
        cpus.append(_cpu() - c)
    feas = next(r for r in report.results if r.kind == "feasibility")
    LAST_RUNS.update(cpu_min=min(cpus), cpu_median=statistics.median(cpus), wall_min=min(walls),
                     wall_median=statistics.median(walls))
    return program, report, feas, STAT(walls), STAT(cpus)


LAST_RUNS: dict = {}     # both statistics of the last _timed_verify (the cells' JSON lines carry them)


def one_n(n: int, runs: int, cap: float, z3_alone: bool = True) -> dict:
    """Every cell for one N, in this process (run in a child per N: peak RSS is per N)."""
    from kmr_dsl.verify.budget import budget_lines
    from kmr_dsl.verify.feasibility import check_feasibility
    from kmr_dsl.verify.obligations import clear_caches, pipeline_model
    from kmr_dsl.verify.report import Limits
    from tests.check.fakes import per_layer_program

    facts = chain_facts(n)
    rows = []
    for (k, kind), lines in LINES.items():
        src = per_layer_program(lines)
        program, report, feas, wall, cpu = _timed_verify(src, "bench.kmr", facts, runs)
        row = {"n": n, "lines": k, "kind": kind, "verdict": feas.verdict.value, "method": feas.method,
               "wall": wall, "cpu": cpu,
               "certificate": (feas.certificate or {}).get("kind"), "report_lines": len(report.render()),
               **LAST_RUNS}
        if not z3_alone:
            row.update(z3_wall=float("nan"), z3_cpu=float("nan"), z3_verdict="-")
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            continue
        # Z3 alone on the same feasibility obligation
        clear_caches()
        model = pipeline_model(program, "compress")
        blines, _ = budget_lines(model)
        c = _cpu()
        t = time.perf_counter()
        z3res, _ = check_feasibility(model, blines, Limits(10 ** 12, cap), use_bounds=False)
        row["z3_wall"] = time.perf_counter() - t
        row["z3_cpu"] = _cpu() - c
        capped = z3res.verdict.value == "unknown" and "limit" in (z3res.reason or "")
        row["z3_verdict"] = "cap" if capped else z3res.verdict.value
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": rows, "peak_mb": peak}


def llama(runs: int) -> dict:
    from kmr_dsl.check import check_source
    from kmr_dsl.runtime import introspect
    from kmr_dsl.verify import verify
    from kmr_dsl.verify.obligations import clear_caches

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "llama70b"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(LLAMA_70B))
        cache: dict = {}

        def provider(spec, trust, span):
            key = (spec.kind, spec.args)
            if key not in cache:
                t, c = time.perf_counter(), _cpu()
                cache[key] = introspect.model_facts(spec, trust=trust, span=span)
                out["cold_wall"], out["cold_cpu"] = time.perf_counter() - t, _cpu() - c
            return cache[key]

        check_source(LLAMA_PROGRAM.format(size=30), str(Path(tmp) / "llm.kmr"), facts_provider=provider)
        for size, kind in ((30, "feasible"), (10, "infeasible")):
            src = LLAMA_PROGRAM.format(size=size)
            walls, cpus, verdict = [], [], None
            for _ in range(runs):
                clear_caches()
                t, c = time.perf_counter(), _cpu()
                program, diags = check_source(src, str(Path(tmp) / "llm.kmr"), facts_provider=provider)
                if program is None:
                    raise SystemExit("\n".join(d.message for d in diags))
                report = verify(program)
                walls.append(time.perf_counter() - t)
                cpus.append(_cpu() - c)
                verdict = next(r for r in report.results if r.kind == "feasibility")
            facts = next(iter(cache.values()))
            out[kind] = {"warm_wall": STAT(walls), "warm_cpu": STAT(cpus), "verdict": verdict.verdict.value,
                         "method": verdict.method, "certificate": (verdict.certificate or {}).get("kind"),
                         "layers": len(facts.layers),
                         "linear": sum(1 for f in facts.layers if f.kind == "Linear"),
                         "params": facts.total_params}
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, nargs="+", default=[100, 1000, 3000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cap", type=float, default=20.0)
    ap.add_argument("--no-70b", action="store_true")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-70b", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-knobs", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-knobs", action="store_true", help="skip the 25-knob case")
    ap.add_argument("--knobs-layers", type=int, default=MANY_KNOBS_LAYERS, help="layers of the 25-knob case")
    ap.add_argument("--no-z3", action="store_true", help="skip the Z3-alone column")
    ap.add_argument("--stat", choices=("median", "min"), default="median")
    args = ap.parse_args()
    global STAT
    STAT = min if args.stat == "min" else statistics.median
    extra = (["--no-z3"] if args.no_z3 else []) + ["--stat", args.stat]
    if args.child is not None:
        print(json.dumps(one_n(args.child, args.runs, args.cap, not args.no_z3)))
        return
    if args.child_70b:
        print(json.dumps(llama(args.runs)))
        return
    if args.child_knobs:
        print(json.dumps(many_knobs(args.runs, args.knobs_layers)))
        return
    results = {}
    for n in args.layers:
        cmd = [sys.executable, __file__, "--child", str(n), "--runs", str(args.runs), "--cap", str(args.cap), *extra]
        results[n] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print(json.dumps(results[n]), file=sys.stderr, flush=True)     # every row, both statistics
    print("| N | lines | budget | verdict (method, certificate) | kmr verify wall s | CPU s | report lines "
          "| Z3 alone wall s | Z3 verdict |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, res in results.items():
        for r in res["rows"]:
            print(f"| {r['n']:,} | {r['lines']} | {r['kind']} | {r['verdict']} ({r['method']}, "
                  f"{r['certificate'] or '-'}) | {r['wall']:.2f} | {r['cpu']:.2f} | {r['report_lines']} "
                  f"| {r['z3_wall']:.1f} | {r['z3_verdict']} |")
    print()
    print("| N | peak RSS MB (one process: checker, 6 cells, Z3 runs) |")
    print("|---|---|")
    for n, res in results.items():
        print(f"| {n:,} | {res['peak_mb']:.0f} |")
    if not args.no_knobs:
        cmd = [sys.executable, __file__, "--child-knobs", "--runs", str(args.runs), "--knobs-layers",
               str(args.knobs_layers), *extra]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print()
        print(f"{KNOBS25} scalar sparsity knobs + 1 bit-width knob on every layer of {args.knobs_layers} layers "
              f"(one component of 26 knobs), peak RSS {res['peak_mb']:.0f} MB")
        for kind in MANY_KNOBS:
            r = res[kind]
            print(f"- {kind}: {r['verdict']} ({r['method']}), {r['wall']:.2f} s wall, {r['cpu']:.2f} s CPU (median)")
    if not args.no_70b:
        cmd = [sys.executable, __file__, "--child-70b", "--runs", str(args.runs), *extra]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print()
        print(f"Llama-2-70B on meta ({res['feasible']['layers']} layers, {res['feasible']['linear']} Linear, "
              f"{res['feasible']['params']:,} parameters): facts cold {res['cold_wall']:.1f} s wall "
              f"({res['cold_cpu']:.1f} s CPU), peak RSS {res['peak_mb']:.0f} MB")
        for kind in ("feasible", "infeasible"):
            r = res[kind]
            print(f"- {kind}: {r['verdict']} ({r['method']}, {r['certificate'] or '-'}), "
                  f"warm check + verify {r['warm_wall']:.2f} s wall, {r['warm_cpu']:.2f} s CPU (median)")


if __name__ == "__main__":
    main()
