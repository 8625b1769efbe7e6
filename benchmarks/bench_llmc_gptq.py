"""KMR's GPTQ against llm-compressor's GPTQ on one tiny Llama (CPU).

Usage: python benchmarks/bench_llmc_gptq.py [--group-size N] [--samples N] [--update-docs]

The llm-compressor row needs an interpreter that has llm-compressor installed; without
it that row says so and the others are measured (llm-compressor pins transformers <= 5.17
and its own compressed-tensors, so it lives in a separate environment from KMR's: it
needs only torch and transformers from there, since KMR's GPTQ path is torch-only).

One process, one seeded tiny Llama built from a `LlamaConfig` (no download: 2 layers,
hidden 128, MLP 256, 4 heads, vocabulary 512, random weights), calibration
and evaluation on seeded random token ids (`--samples` sequences of 64 tokens each,
disjoint sets). Both quantize every Linear except `lm_head` to 4 bits, symmetric, one
scale per `--group-size` inputs, dampening 0.01, no activation ordering:

- KMR: `gptq.apply(model, layers, bits = 4, group_size = G, calibration = ...)`
  (KMR's grid: zero-preserving midrise levels, docs/stdlib.md);
- llm-compressor: `oneshot(model, dataset, recipe = GPTQModifier(config_groups = {int4,
  symmetric, group G}, ignore = ["lm_head"]))`, its model run as it leaves `oneshot`
  (fake-quantized weights);
- the reference GPTQ (IST-DASLab `quant.py` + `fasterquant`, re-implemented in
  tests/runtime/reference_gptq.py: integer codes [-8, 7], scale 2 max|w| / 15), layer by
  layer in the order the forward pass calls them, each on the inputs it receives once the
  earlier ones are quantized (as KMR's), weights replaced by their quantized values; and
  the same with KMR's exact-density rule (a non-zero weight never gets code 0), which is
  what the reference grid would cost inside KMR.

Columns: per-layer relative output error ||Q(X) - W(X)|| / ||W(X)|| on the *float*
model's inputs to that layer over the evaluation tokens (mean and max over the 14
Linears), the mean cosine of the final logits per token to the float model's, and the
wall time of each quantization pass.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from sidebyside import environment, update_docs  # noqa: E402

SECTION = "GPTQ against llm-compressor on a tiny Llama"
SEQ = 64


def tiny_llama():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


def linears(model):
    import torch.nn as nn
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and not n.endswith("lm_head")]


def layer_inputs(model, tokens):
    """{name: the float model's inputs to each Linear} over `tokens`."""
    import torch
    seen, hooks = {}, []

    def keep(name):
        def hook(module, args, out):
            seen[name] = args[0].detach()       # returns None: the output stays
        return hook
    for name, mod in linears(model):
        hooks.append(mod.register_forward_hook(keep(name)))
    with torch.no_grad():
        model(input_ids=tokens)
    for h in hooks:
        h.remove()
    return seen


def measure(fp32, quantized, tokens, inputs):
    import torch
    import torch.nn.functional as F
    errors = []
    mods = dict(quantized.named_modules())
    with torch.no_grad():
        for name, mod in linears(fp32):
            want, got = mod(inputs[name]), mods[name](inputs[name])
            errors.append(float((got - want).norm() / want.norm()))
        ref = fp32(input_ids=tokens).logits.reshape(-1, fp32.config.vocab_size)
        out = quantized(input_ids=tokens).logits.reshape(-1, fp32.config.vocab_size)
    cos = F.cosine_similarity(out, ref, dim=1)
    return sum(errors) / len(errors), max(errors), float(cos.mean())


def kmr_gptq(model, calib, group_size):
    from kmr_dsl.rules import gptq
    from kmr_dsl.runtime.data import Dataset

    # KMR feeds calibration inputs positionally: a Llama's first argument is input_ids
    return gptq.apply(model, linears(model), bits=4, group_size=group_size,
                      calibration=Dataset(calib, None, "calib"), samples=len(calib))


def reference_gptq(model, calib, group_size, keep_density=False):
    import torch

    from tests.runtime.reference_gptq import fasterquant

    order = []
    hooks = [mod.register_forward_hook(lambda m, a, o, n=name: order.append(n) and None)
             for name, mod in linears(model)]
    with torch.no_grad():
        model(input_ids=calib[:1])
    for h in hooks:
        h.remove()
    mods = dict(model.named_modules())
    for name in dict.fromkeys(order):
        mod = mods[name]
        h_sum, count = None, 0

        def collect(m, args, out):
            nonlocal h_sum, count
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            h_sum = x.T @ x if h_sum is None else h_sum + x.T @ x
            count += x.shape[0]
        handle = mod.register_forward_hook(collect)
        with torch.no_grad():
            model(input_ids=calib)
        handle.remove()
        values, _ = fasterquant(mod.weight, 2.0 / count * h_sum, 4, group_size, keep_density=keep_density)
        mod.weight.data = values.to(mod.weight.dtype)
    return model


def word_tokenizer(vocab: int):
    """An in-memory tokenizer ("0" ... "N-1" are the ids): oneshot insists on a processor
    even for a pre-tokenized dataset, and nothing may be downloaded."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({str(i): i for i in range(vocab)}, unk_token="0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="0", pad_token="0")


def llmc_gptq(model, calib, group_size):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from datasets import Dataset as HFDataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier

    weights = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=group_size)
    recipe = GPTQModifier(config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=weights)},
                          ignore=["lm_head"], dampening_frac=0.01)
    data = HFDataset.from_dict({"input_ids": calib.tolist(), "attention_mask": [[1] * calib.shape[1]] * len(calib)})
    # oneshot re-reads the model's config from `name_or_path` on disk: give it a folder
    folder = tempfile.mkdtemp(prefix="tiny-llama-")
    model.config.save_pretrained(folder)
    model.config._name_or_path = folder
    oneshot(model=model, dataset=data, recipe=recipe, num_calibration_samples=len(calib), max_seq_length=SEQ,
            processor=word_tokenizer(model.config.vocab_size))
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group-size", type=int, default=32)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import llmcompressor
        llmc = f"llm-compressor {llmcompressor.__version__}"
    except ImportError:
        llmcompressor, llmc = None, "no llm-compressor"
    import torch

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(1)
    calib = torch.randint(0, 512, (args.samples, SEQ), generator=gen)
    tokens = torch.randint(0, 512, (32, SEQ), generator=gen)
    fp32 = tiny_llama()
    inputs = layer_inputs(fp32, tokens)
    rows = []
    runs = (("KMR gptq", kmr_gptq), ("llm-compressor GPTQModifier", llmc_gptq),
            ("reference GPTQ (re-implemented)", reference_gptq),
            ("reference grid with KMR's exact density",
             lambda model, calib, g: reference_gptq(model, calib, g, keep_density=True)))
    for name, run in runs:
        if run is llmc_gptq and llmcompressor is None:
            rows.append(f"| {name} | — | — | — | — | not installed in this environment |")
            continue
        model = copy.deepcopy(fp32)
        start = time.perf_counter()
        try:
            model = run(model, calib, args.group_size)
        except Exception as exc:      # noqa: BLE001 - a benchmark row records why it has no numbers
            rows.append(f"| {name} | — | — | — | — | failed: {type(exc).__name__}: {str(exc)[:160]} |")
            continue
        seconds = time.perf_counter() - start
        mean_err, max_err, cos = measure(fp32, model, tokens, inputs)
        rows.append(f"| {name} | {mean_err:.4f} | {max_err:.4f} | {cos:.4f} | {seconds:.1f} | |")
    text = "\n".join([
        f"Measured with `python benchmarks/bench_llmc_gptq.py --group-size {args.group_size} --samples "
        f"{args.samples}` in an environment holding {llmc} "
        f"({environment(1, ('transformers',))}): "
        f"tiny Llama (2 layers, hidden 128, random seeded weights), int4 symmetric g{args.group_size}, "
        f"{args.samples} x {SEQ} calibration tokens, errors on 32 x {SEQ} other tokens.",
        "",
        "| GPTQ | layer error (mean) | layer error (max) | logits cosine (mean) | seconds | note |",
        "|---|---:|---:|---:|---:|---|",
        *rows,
    ])
    print(text)
    if args.update_docs:
        update_docs(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
