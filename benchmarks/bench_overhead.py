"""KMR's interpreter overhead against the same compression written directly in torch.

Usage: python benchmarks/bench_overhead.py [--rounds N] [--threads T] [--update-docs]

The pipeline is examples/digits/digits.kmr at its defaults: magnitude pruning of 50% of
each Linear's weights, one epoch of fine-tuning (Adam, lr 0.001, batch 64, seed 0) on
the digits train split, int8 dynamic quantization with per-channel weights. It is done
three ways, interleaved round by round in one process:

1. **kmr**: `PipelineSession.apply(setting)`, what `kmr run` and every `kmr search`
   trial call: deep copy, per step the impl lookup, argument evaluation, layer
   selection and run context, then the rule functions;
2. **rules**: the same rule functions (`kmr_dsl.rules.prune/finetune/quantize.apply`)
   called by hand: no interpreter. kmr / rules is the interpreter's overhead;
3. **torch**: hand-written torch, no KMR at all: `torch.nn.utils.prune.l1_unstructured`,
   a `torch.optim.Adam` loop over the same batches, `prune.remove`, and
   `torch.ao.quantization.quantize_dynamic` with `per_channel_dynamic_qconfig`.

Then the meters of the three results: size (the KMR artifact's bytes, and for the
torch result also `torch.save(state_dict)`), latency (paired, batch 1024), accuracy and
fidelity (argmax agreement with the baseline) on the test split.

It also writes the "Digits example" section: `kmr run examples/digits/digits.kmr`
(as a subprocess, its own report.json) and the CPU latency of its artifact against the
baseline.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from sidebyside import (  # noqa: E402
    ROOT,
    environment,
    kmr_session,
    paired_latency,
    table,
    update_docs,
)

DIGITS = ROOT / "examples" / "digits"


def ensure_weights() -> None:
    if not (DIGITS / "mlp.safetensors").is_file():
        subprocess.run([sys.executable, str(DIGITS / "train_baseline.py")], check=True)


def by_rules(base, train):
    from kmr_dsl.rules import finetune, prune, quantize
    from kmr_dsl.runtime import context
    from kmr_dsl.runtime import layers as kl

    model = copy.deepcopy(base)
    with context.use(context.RunContext(seed=0, baseline=base)):
        prune.apply(model, kl.select_layers(model, ("Linear",)), amount=0.5)
        finetune.apply(model, [], train, epochs=1, lr=0.001, batch_size=64)
        quantize.apply(model, kl.select_layers(model, ("Linear",)), bits=8)
    return model.eval()


def by_torch(base, train):
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.nn.utils import prune

    model = copy.deepcopy(base)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for m in linears:
        prune.l1_unstructured(m, "weight", amount=0.5)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    generator = torch.Generator().manual_seed(0)
    x_all, y_all = train.inputs, train.targets
    model.train()
    order = torch.randperm(len(x_all), generator=generator)
    for start in range(0, len(x_all), 64):
        idx = order[start:start + 64]
        optimizer.zero_grad()
        F.cross_entropy(model(x_all[idx]), y_all[idx]).backward()
        optimizer.step()
    model.eval()
    for m in linears:
        prune.remove(m, "weight")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def time_paths(paths: dict, rounds: int) -> dict:
    times = {n: [] for n in paths}
    for name, fn in paths.items():      # warm-up: lazy imports (torch.optim, quantization)
        fn()
    names = list(paths)
    for r in range(rounds):
        # rotate the order every round, so no path always runs first (caches, allocator)
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            paths[name]()
            times[name].append(time.perf_counter() - start)
    return times


def dispatch_only(session, setting, repeats: int = 200) -> tuple[float, float]:
    """Median ms of `session.apply` with every rule impl replaced by a no-op (what is
    left is the interpreter: deep copy, impl lookup, arguments, selection, context),
    and of the deep copy alone (which the hand-written paths do too)."""
    from kmr_dsl.rules import finetune, prune, quantize

    saved = [(mod, mod.apply) for mod in (prune, finetune, quantize)]
    for mod, _ in saved:
        mod.apply = lambda model, layers, **kwargs: model
    try:
        applied, copied = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            session.apply(setting)
            applied.append(time.perf_counter() - start)
            start = time.perf_counter()
            copy.deepcopy(session.baseline)
            copied.append(time.perf_counter() - start)
    finally:
        for mod, fn in saved:
            mod.apply = fn
    return statistics.median(applied) * 1e3, statistics.median(copied) * 1e3


def overhead_section(args) -> str:
    import torch

    from kmr_dsl.runtime import meters
    from kmr_dsl.runtime.data import sklearn

    program, session = kmr_session(DIGITS / "digits.kmr")
    setting = program.default_setting(session.pipeline)
    base = session.baseline
    train, test = sklearn("digits", "train"), sklearn("digits", "test")
    results = {}
    paths = {
        "kmr (PipelineSession.apply)": lambda: results.__setitem__("kmr", session.apply(setting)),
        "rules (rule functions by hand)": lambda: results.__setitem__("rules", by_rules(base, train)),
        "torch (hand-written)": lambda: results.__setitem__("torch", by_torch(base, train)),
    }
    times = time_paths(paths, args.rounds)
    dispatch_ms, copy_ms = dispatch_only(session, setting)
    med = {n: statistics.median(t) for n, t in times.items()}
    names = list(paths)
    per_round = [a / b for a, b in zip(times[names[0]], times[names[1]])]
    overhead_s = statistics.median([a - b for a, b in zip(times[names[0]], times[names[1]])])
    rows = [[n, f"{med[n] * 1e3:.1f}", f"{min(times[n]) * 1e3:.1f}", f"{med[n] / med[names[1]]:.3f}"] for n in names]
    timing = table(["path", "median ms", "min ms", "÷ rules"], rows)

    models = {"baseline (fp32)": base, "kmr": results["kmr"], "rules": results["rules"], "torch": results["torch"]}
    lat = paired_latency(models, lambda: torch.randn(1024, 64, generator=torch.Generator().manual_seed(0)),
                         rounds=max(20, args.rounds), threads=args.threads)
    base_size = meters.size(base)
    mrows = []
    for name, model in models.items():
        size = meters.size(model)
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        mrows.append([name, f"{size:,}", f"{size / base_size:.3f}", f"{len(buffer.getvalue()):,}",
                      f"{lat[name]['ratio']:.2f}", f"{meters.accuracy(model, test):.4f}",
                      f"{meters.fidelity(model, base, test):.4f}"])
    quality = table(["result", "KMR artifact (B)", "size ratio", "torch.save (B)", "latency ratio b=1024",
                     "accuracy(test)", "fidelity(test)"], mrows)
    return "\n".join([
        "Measured with `.venv/bin/python benchmarks/bench_overhead.py --update-docs`: the digits pipeline "
        "(`examples/digits/digits.kmr` at its defaults: magnitude prune 50% of each Linear, 1 epoch of "
        "fine-tuning, int8 dynamic per-channel) done three ways, interleaved, "
        f"{args.rounds} rounds after a warm-up. **kmr** is `PipelineSession.apply` (what `kmr run` and each "
        "`kmr search` trial run: deep copy, impl lookup, argument evaluation, layer selection, run context); "
        "**rules** calls the same rule functions by hand; **torch** is hand-written torch "
        "(`torch.nn.utils.prune.l1_unstructured`, a `torch.optim.Adam` loop over the same batches, "
        "`prune.remove`, `quantize_dynamic` with `per_channel_dynamic_qconfig`).",
        "",
        timing,
        "",
        f"Interpreter overhead (kmr ÷ rules): **{statistics.median(per_round):.3f}×** median per round "
        f"(target ≤ 1.05×), {overhead_s * 1e3:.1f} ms a run (median of the per-round differences). "
        f"Timed alone, with every rule impl replaced by a no-op, one `PipelineSession.apply` of this "
        f"3-step pipeline costs {dispatch_ms:.2f} ms, of which {copy_ms:.2f} ms is the deep copy of the input "
        f"model that the hand-written paths make too: the interpreter itself costs "
        f"{dispatch_ms - copy_ms:.2f} ms a pipeline, {(dispatch_ms - copy_ms) / (med[names[1]] * 1e3) * 100:.1f}% "
        "of this pipeline's work. The three results:",
        "",
        quality,
        "",
        environment(args.threads) + ".",
        "",
        "Reading it: the interpreter's cost is per pipeline step (looking up the impl, evaluating "
        "arguments, selecting layers), never per batch or per epoch, so it shrinks relative to any real "
        "pipeline's work; the paired ratio above is within this machine's noise. kmr and rules run the same "
        "functions with the same seed, so they give the same model. The hand-written torch path trains with `torch.optim.Adam` (KMR's rules use an "
        "arithmetically identical Adam that avoids importing torch._dynamo) over the same batches in the same "
        "order, and torch's pruning and per-channel quantization; its time difference to rules is "
        "implementation, not interpretation. Size: "
        "`torch.save` of the torch result keeps the pruned zeros as dense int8 (plus pickle framing), while "
        "KMR's artifact stores a half-empty tensor as bitmap + values: the same model, a smaller file. "
        "The 50% sparsity itself gives no CPU speedup (dense kernels run); latency: see the next section.",
    ])


def digits_section(args) -> str:
    import torch

    from kmr_dsl.runtime import artifact, meters
    from kmr_dsl.runtime.data import sklearn

    with tempfile.TemporaryDirectory(prefix="kmr-digits-") as tmp:
        cmd = [sys.executable, "-m", "kmr_dsl", "run", str(DIGITS / "digits.kmr"), "--out", tmp]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        report = json.loads((Path(tmp) / "report.json").read_text())
        model = artifact.load(Path(tmp) / "model.safetensors", base_dir=DIGITS)
    _, session = kmr_session(DIGITS / "digits.kmr")
    base = session.baseline
    lat = {}
    for batch in (1, 256):
        lat[batch] = paired_latency({"baseline": base, "kmr": model},
                                    lambda b=batch: torch.randn(b, 64, generator=torch.Generator().manual_seed(0)),
                                    rounds=max(30, args.rounds), threads=args.threads)
    m, b = report["meters"], report["baseline"]
    test = sklearn("digits", "test")
    rows = [
        ["size", f"{b['size']:,.0f} B", f"{m['size']:,.0f} B", f"{m['size'] / b['size']:.3f}× ({b['size'] / m['size']:.1f}× smaller)"],
        ["accuracy(test)", f"{b['accuracy(test)']:.4f}", f"{m['accuracy(test)']:.4f}",
         f"{(m['accuracy(test)'] - b['accuracy(test)']) * 100:+.2f} points"],
        ["nonzero weights", f"{b['nonzero']:,.0f}", f"{m['nonzero']:,.0f}", f"{m['nonzero'] / b['nonzero']:.3f}×"],
        ["fidelity(test) (argmax agreement)", "1", f"{meters.fidelity(model, base, test):.4f}", ""],
    ]
    for batch, res in lat.items():
        r = res["kmr"]["ratio"]
        rows.append([f"CPU latency, batch {batch}", f"{res['baseline']['median_s'] * 1e6:.0f} µs",
                     f"{res['kmr']['median_s'] * 1e6:.0f} µs",
                     f"{r:.2f}× the time ({'faster' if r < 1 else 'slower'})"])
    met = "met" if proc.returncode == 0 else f"NOT met (exit {proc.returncode})"
    return "\n".join([
        "Measured with `.venv/bin/python benchmarks/bench_overhead.py --update-docs`, which runs "
        "`kmr run examples/digits/digits.kmr --out TMP` (defaults: sparsity 0.5, bits 8) and reads its "
        "report.json, then loads the artifact back (`kmr_dsl.runtime.artifact.load`) and times it against "
        "the baseline, paired, in one session.",
        "",
        table(["meter", "baseline", "kmr run result", "change"], rows, "lrrr"),
        "",
        f"Budget {met}; `kmr run` took {wall:.1f} s wall in all (start-up, check, verification, "
        "baseline meters, the pipeline, result meters, artifact). " + environment(args.threads) + ".",
        "",
        latency_reading(lat),
    ])


def latency_reading(lat: dict) -> str:
    """Say what the measured latency ratios show, whichever way they went."""
    slower = [b for b, res in lat.items() if res["kmr"]["ratio"] > 1.05]
    faster = [b for b, res in lat.items() if res["kmr"]["ratio"] < 0.95]
    parts = ["The digits pipeline is a size pipeline: its 50% sparsity shrinks the file (bitmap + values) "
             "but not the work, and int8 dynamic is the only step that changes the kernels."]
    if slower:
        parts.append(f"On this tiny MLP (17 K weights) int8 dynamic is *slower* at batch {', '.join(map(str, slower))}: "
                     "each int8 Linear quantizes its input, runs a small int8 GEMM and dequantizes, and "
                     "for 64-128-64-10 layers that fixed per-call work costs more than the multiplications it saves.")
    if faster:
        parts.append(f"At batch {', '.join(map(str, faster))} int8's kernels win.")
    if not slower and not faster:
        parts.append("Latency is unchanged within noise.")
    parts.append("For real CPU speedups see the digits CNN (structured pruning) and MiniLM (int8 on large Linears).")
    return " ".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    ensure_weights()
    overhead = overhead_section(args)
    print("## Runtime overhead\n\n" + overhead + "\n")
    digits = digits_section(args)
    print("## Digits example\n\n" + digits)
    if args.update_docs:
        update_docs("Runtime overhead", overhead)
        update_docs("Digits example", digits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
