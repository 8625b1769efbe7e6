"""Channel pruning through residual blocks: a ResNet-18-shaped transformers model on CPU.

Usage: python benchmarks/bench_resnet.py [--rounds N] [--threads T] [--batch B] [--size S]

Builds transformers' ResNetForImageClassification with ResNet-18's shape (basic blocks,
[64, 128, 256, 512] channels, depths [2, 2, 2, 2]; random weights, no download), and
applies KMR's own `prune(method = channel)` as `kmr run` does (the run context carries
the example input, `runtime/depgraph.py` groups the channels) to two selections:
`inner` (the first conv of every block: groups with one member, what was prunable
before residual groups) and `all` (every conv: each residual stream, its stem or block
outputs, projection shortcuts and BatchNorms, is one group pruned together). Prints the
groups, params, MACs and the paired latency (`meters.latency_paired`: the pruned model
and the baseline timed in alternating rounds) at each amount.
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
from kmr_dsl.runtime import context, depgraph, forward, layers as kl, meters  # noqa: E402


def resnet18():
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2],
                          layer_type="basic", num_labels=10)
    return ResNetForImageClassification(config).eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    shape = (1, 3, args.size, args.size)
    base = resnet18()
    x = forward.example_input(shape)
    links = depgraph.channel_links(base, x)
    convs = [n for n, m in kl.logical_layers(base) if kl.kind_of(m) == "Conv2d"]
    inner = [n for n in convs if n in links and not links[n].coupled]
    streams = {tuple(sorted([n, *links[n].coupled])) for n in convs if n in links and links[n].coupled}
    print(f"Conv2d layers: {len(convs)}, linked: {len(links)} ({len(inner)} alone in their group, "
          f"{len(streams)} residual streams of {sum(len(s) for s in streams)} members)")
    print("| selection | amount | params | MACs | latency (ms) | baseline (ms) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for label, names in (("inner", inner), ("all", convs)):
        for amount in (0.25, 0.5, 0.75):
            model = copy.deepcopy(base)
            with context.use(context.RunContext(example=(shape, "float32"))):
                prune.apply(model, [(n, kl.get_module(model, n)) for n in names], amount=amount, method="channel")
            got, ref = meters.latency_paired(model, base, batch=args.batch, input_shape=shape, repeats=args.rounds,
                                             warmup=3, threads=args.threads)
            print(f"| {label} | {amount:.2f} | {meters.params(model):,} / {meters.params(base):,} | "
                  f"{meters.macs(model, shape):,} / {meters.macs(base, shape):,} | {got * 1e3:.1f} | "
                  f"{ref * 1e3:.1f} | {got / ref:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
