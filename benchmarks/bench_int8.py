"""KMR's int8 path against PyTorch's default dynamic int8 on all-MiniLM-L6-v2: paired latency.

Usage: python benchmarks/bench_int8.py [--rounds N] [--threads 1 2] [--layers] [--update-docs]

Issue 14's int8 target asks for latency at or below PyTorch's default dynamic int8 *in the
same paired run*. Both sides run the same fbgemm kernel, so the difference to resolve is
a few percent on a shared, loaded machine; this script measures only the rows that
claim is about, with the statistics it needs:
- rows (built as bench_methods.py builds them): fp32; torch's `quantize_dynamic(model,
  {nn.Linear}, qint8)` (per-tensor weights, fp32 embeddings); a second, identical copy of
  it (an A/A control: its ratio to the first copy is this run's noise floor); KMR
  `quantize(bits = 8)` on every Linear (symmetric, the default) and with `symmetric =
  false`, both with weight-only int8 embeddings, each saved as a KMR artifact and loaded
  back (`artifact.load` links query/key/value into one GEMM: `runtime.fusion`); and the
  first of them with that link undone (`fusion.uninstall`: every Linear its own GEMM,
  the execution before the loader fused them), for a before/after in the same rounds;
- every round runs each model once on the same batch (8 x 128 tokens), the order
  rotating from round to round (`sidebyside.paired_rounds`), at each thread count;
- for each row, its per-round time divided by torch's in the *same* round: median,
  interquartile range, min-max, and in how many rounds it was at or below torch; plus
  the median ratio to fp32, the file ratio (KMR: the artifact's size; torch:
  `torch.save`) and the mean cosine of the sentence embeddings to fp32's (200 test
  sentences).
`--layers` times single layers instead, five calls a round: Linears of MiniLM's shapes
(1,024 rows: 384 -> 384, 384 -> 1536, 1536 -> 384) built the same three ways (the
kernel alone, without the rest of the model), query/key/value as three Linears on one
input (KMR's linked as `artifact.load` links them: one GEMM), and the word-embedding lookup (torch's
fp32 `nn.Embedding` against KMR's weight-only int8 one). `--update-docs` replaces the
whole docs section, the hand-written reading under its tables included.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_methods import BATCH, EXAMPLE, SEQUENCE, rows, torch_bytes  # noqa: E402
from sidebyside import environment, paired_rounds, quartiles, table, update_docs  # noqa: E402

SECTION = "int8 latency against PyTorch on MiniLM"
FP32 = "fp32 baseline"
TORCH = "torch default dynamic int8 (per-tensor, embeddings fp32)"
CONTROL = "torch default, second copy (A/A control)"
KMR_ROWS = ("KMR int8 dynamic (per-channel)", "KMR int8 dynamic, asymmetric weights")
UNFUSED = "KMR int8 dynamic (per-channel), q/k/v as three GEMMs"


def through_artifact(model, base):
    """`model` saved as a KMR artifact and loaded back, as a user runs it (the loader
    links sibling int8 Linears: `runtime.fusion`)."""
    import tempfile

    from kmr_dsl.runtime import artifact

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        artifact.save(model, path)
        return artifact.load(path, base=copy.deepcopy(base))


def build(base) -> dict:
    """name -> (model, kind) for the rows above, from bench_methods' own builders; the
    KMR rows are the artifacts loaded back, and UNFUSED the first of them with its
    sibling Linears unlinked (every Linear its own GEMM, as before the loader fused them)."""
    from kmr_dsl.runtime import fusion

    builders = {name: (make, kind) for name, make, kind in rows(base, None)}
    out = {name: (builders[name][0](), builders[name][1]) for name in (FP32, TORCH)}
    out[CONTROL] = (builders[TORCH][0](), "torch")
    for name in KMR_ROWS:
        out[name] = (through_artifact(builders[name][0](), base), "kmr")
    unfused = copy.deepcopy(out[KMR_ROWS[0]][0])
    fusion.uninstall(unfused)
    out[UNFUSED] = (unfused, "kmr")
    return out


def summary(times: dict[str, list[float]], name: str) -> list[str]:
    per_round = [a / b for a, b in zip(times[name], times[TORCH])]
    lo, q1, med, q3, hi = quartiles(per_round)
    at_or_below = sum(r <= 1.0 for r in per_round)
    to_fp32 = quartiles([a / b for a, b in zip(times[name], times[FP32])])[2]
    return [f"{med:.3f}", f"{q1:.3f}-{q3:.3f}", f"{lo:.3f}-{hi:.3f}", f"{at_or_below}/{len(per_round)}",
            f"{to_fp32:.3f}"]


def layer_rows(threads: list[int], rounds: int) -> str:
    """Per-round ratio to torch's default of single int8 Linears, KMR symmetric and asymmetric."""
    import warnings

    import torch
    from torch import nn

    from kmr_dsl.rules import quantize
    from kmr_dsl.runtime import layers as kl

    from torch.ao.quantization import quantize_dynamic

    from kmr_dsl.runtime import fusion

    def repeat(module):
        return lambda x: [module(x) for _ in range(5)]

    def rows(label: str, module: nn.Module, x, fuse: bool = False) -> list[list[str]]:
        """torch's default dynamic int8 of `module` against KMR's symmetric and asymmetric
        int8 (with `fuse`, its sibling Linears linked as `artifact.load` links them)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            models = {"torch": quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8)}
        for name, symmetric in (("KMR symmetric", True), ("KMR asymmetric", False)):
            model = copy.deepcopy(module)
            quantize.apply(model, kl.select_layers(model, ("Linear",)), bits=8, symmetric=symmetric)
            if fuse:
                fusion.install(model)
            models[name] = model
        out = []
        for n in threads:
            times = paired_rounds({k: repeat(m) for k, m in models.items()}, lambda: x, rounds=rounds, threads=n)
            cells = []
            for name in ("KMR symmetric", "KMR asymmetric"):
                lo, q1, med, q3, hi = quartiles([a / b for a, b in zip(times[name], times["torch"])])
                cells.append(f"{med:.3f} ({q1:.3f}-{q3:.3f})")
            out.append([label, str(n), f"{quartiles(times['torch'])[2] / 5 * 1e3:.2f}", *cells])
        return out

    out = []
    for fan_in, fan_out in ((384, 384), (384, 1536), (1536, 384)):
        x = torch.randn(BATCH * SEQUENCE, fan_in, generator=torch.Generator().manual_seed(0))
        out += rows(f"{fan_in} -> {fan_out}", nn.Sequential(nn.Linear(fan_in, fan_out)), x)

    # query, key and value on one input: torch's three calls against KMR's linked siblings
    # (`runtime.fusion`, as `artifact.load` links them), one GEMM a round of three
    class QKV(nn.Module):
        def __init__(self):
            super().__init__()
            self.query, self.key, self.value = (nn.Linear(384, 384) for _ in range(3))

        def forward(self, x):
            return self.query(x), self.key(x), self.value(x)

    torch.manual_seed(0)
    x = torch.randn(BATCH * SEQUENCE, 384, generator=torch.Generator().manual_seed(0))
    out += rows("query, key, value: 3 x (384 -> 384) on one input (KMR: linked, one GEMM)", QKV(), x, fuse=True)
    # the embeddings: torch's default keeps nn.Embedding in fp32, KMR looks up int8 rows
    embedding = nn.Sequential(nn.Embedding(30522, 384))
    models = {"torch": embedding, "KMR symmetric": copy.deepcopy(embedding)}
    quantize.apply(models["KMR symmetric"], kl.select_layers(models["KMR symmetric"], ("Embedding",)), bits=8,
                   scheme="weight_only")
    ids = torch.randint(0, 30522, (BATCH, SEQUENCE), generator=torch.Generator().manual_seed(0))
    for n in threads:
        times = paired_rounds({k: repeat(m) for k, m in models.items()}, lambda: ids, rounds=rounds, threads=n)
        lo, q1, med, q3, hi = quartiles([a / b for a, b in zip(times["KMR symmetric"], times["torch"])])
        out.append(["Embedding 30522 x 384, 8 x 128 ids (torch: fp32)", str(n),
                    f"{quartiles(times['torch'])[2] / 5 * 1e3:.2f}", f"{med:.3f} ({q1:.3f}-{q3:.3f})", "—"])
    return table(["layer", "threads", "torch ms a call", "KMR symmetric ÷ torch, median (IQR)",
                  "KMR asymmetric ÷ torch, median (IQR)"], out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--layers", action="store_true", help="time single Linears of MiniLM's shapes")
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args(argv)
    if args.layers:
        print(layer_rows(args.threads, args.rounds) + "\n\n" + environment(None, latency_threads=False) + ".")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import torch.nn.functional as F

    from kmr_dsl.runtime import meters

    sys.path.insert(0, str(EXAMPLE))
    import minilm_model
    import texts

    torch.set_num_threads(1)
    base = minilm_model.make()
    models = build(base)
    test = texts.load("test")
    quality = {}
    with torch.no_grad():
        ref = base(test)
        for name, (model, kind) in models.items():
            size = meters.size(model) if kind == "kmr" else torch_bytes(model)
            full = meters.size(base) if kind == "kmr" else torch_bytes(base)
            quality[name] = (size / full, float(F.cosine_similarity(model(test), ref, dim=1).mean()))
    sample = texts.tokenize(texts.texts_of("test")[:BATCH], SEQUENCE)
    timed = {name: model for name, (model, _) in models.items()}
    sections, loads = [], []
    for threads in args.threads:
        start = time.perf_counter()
        times = paired_rounds(timed, lambda: sample, rounds=args.rounds, threads=threads)
        loads.append(os.getloadavg()[0])
        print(f"{threads} thread(s): {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        fp32_ms = quartiles(times[FP32])[2] * 1e3
        body = [[name, *summary(times, name), f"{quality[name][0]:.3f}", f"{quality[name][1]:.4f}"]
                for name in (CONTROL, UNFUSED) + KMR_ROWS]
        body.insert(0, [TORCH, "1", "—", "—", "—", summary(times, TORCH)[4], f"{quality[TORCH][0]:.3f}",
                        f"{quality[TORCH][1]:.4f}"])
        lo, q1, med, q3, hi = quartiles([a / b for a, b in zip(times[KMR_ROWS[0]], times[UNFUSED])])
        sections.append(f"**{threads} thread(s)** (fp32 median {fp32_ms:.0f} ms a batch):\n\n" + table(
            ["row", "÷ torch, median", "÷ torch, IQR", "÷ torch, min-max", "rounds at or below torch",
             "÷ fp32, median", "file ratio", "cosine (mean)"], body)
            + f"\n\nKMR per-channel, q/k/v fused ÷ the same artifact with three GEMMs, same round: median "
            f"{med:.3f} (IQR {q1:.3f}-{q3:.3f}, min-max {lo:.3f}-{hi:.3f}).")
    text = "\n".join([
        f"Measured with `HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_int8.py --rounds {args.rounds} "
        f"--threads {' '.join(map(str, args.threads))}`: {args.rounds} paired rounds per thread count at batch "
        f"{BATCH} x {SEQUENCE} tokens, the order of the {len(timed)} models rotating from round to round; each "
        "\"÷ torch\" figure is a row's time divided by torch's default dynamic int8 in the same round. "
        f"Load average at the end of each thread count: {', '.join(f'{x:.1f}' for x in loads)}.",
        "",
        "\n\n".join(sections),
        "",
        environment(None, latency_threads=False) + ".",
    ])
    print(text)
    if args.update_docs:
        update_docs(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
