"""Attention-head pruning and SwiGLU channel pruning on real-size transformers shapes, CPU.

Usage: python benchmarks/bench_heads.py [--rounds N] [--threads T] [--seq S] [--layers L]

Builds (random weights, no download) transformers' BertModel with BERT-base's shape
(hidden 768, 12 heads, intermediate 3072; `--layers` of its 12 layers) and a Llama with
grouped-query attention (hidden 1024, 16 query heads sharing 4 key/value heads,
intermediate 2816, SwiGLU MLP), and applies KMR's own rules as `kmr run` does:
`prune(method = head)` on every attention (BERT: heads; Llama: key/value heads with
their query heads) and, on Llama, `prune(method = channel)` on every `gate_proj` (the
gated unit: gate, up and down's inputs shrink together). Prints params, MACs and the
paired latency (`meters.latency_paired`: the pruned model and the baseline timed in
alternating rounds) at each amount.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from kmr_dsl.rules import prune  # noqa: E402
from kmr_dsl.runtime import context, heads, layers as kl, meters  # noqa: E402


def bert_base(layers: int):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(num_hidden_layers=layers), add_pooling_layer=False).eval()


def llama_gqa(layers: int):
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=layers,
                         num_attention_heads=16, num_key_value_heads=4, use_cache=False)
    return LlamaModel(config).eval()


def _row(label, model, base, shape, args):
    got, ref = meters.latency_paired(model, base, batch=1, input_shape=shape, repeats=args.rounds, warmup=2,
                                     threads=args.threads, input_dtype="int64")
    print(f"| {label} | {meters.params(model):,} / {meters.params(base):,} | "
          f"{meters.macs(model, shape, 'int64'):,} / {meters.macs(base, shape, 'int64'):,} | "
          f"{got * 1e3:.1f} | {ref * 1e3:.1f} | {got / ref:.2f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args(argv)
    shape = (1, args.seq)
    for name, build in (("BERT-base shape", bert_base), ("Llama GQA + SwiGLU", llama_gqa)):
        base = build(args.layers)
        found = heads.attentions(base)
        print(f"\n{name}, {args.layers} layers: {len(found)} attentions recognised, "
              f"{next(iter(found.values())).units} head units each")
        print("| pruning | params | MACs | latency (ms) | baseline (ms) | ratio |")
        print("|---|---|---|---|---|---|")
        for amount in (0.25, 0.5):
            model = copy.deepcopy(base)
            prune.apply(model, [(a.projections[0], kl.get_module(model, a.projections[0])) for a in found.values()],
                        amount=amount, method="head")
            _row(f"heads {amount:.2f}", model, base, shape, args)
        if "Llama" in name:
            model = copy.deepcopy(base)
            gates = [(n, m) for n, m in kl.logical_layers(model) if n.endswith("gate_proj")]
            with context.use(context.RunContext(example=(shape, "int64"))):
                prune.apply(model, gates, amount=0.5, method="channel")
            _row("SwiGLU channels 0.50", model, base, shape, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
