"""Channel pruning through squeeze-and-excitation blocks: MobileNetV3-Small on CPU.

Usage: python benchmarks/bench_mobilenet_v3.py [--rounds N] [--threads T] [--batch B] [--size S]
                                               [--width W] [--update-docs]

Builds the paper's MobileNetV3-Small (tests/runtime/mobilenet_v3.py: transformers has
no MobileNetV3 and torchvision does not load with this torch; random weights, no
download) and applies KMR's own `prune(method = channel)` as `kmr run` does (the run
context carries the example input; `runtime/depgraph.py` groups the channels) to two
selections at amount 0.5: `se` (every block's expansion: its group is the expansion, the
depthwise conv and the SE's second conv, read by the SE's first conv and the
projection) and `all` (every conv: residual streams, SE groups, SE hidden widths, the
head conv). Times each pruned model against the unpruned one in paired rounds (the
order rotating from round to round; `sidebyside.paired_latency`) and prints the table
(`--update-docs` writes it into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "runtime"))

from sidebyside import environment, paired_latency, table, update_docs  # noqa: E402

SECTION = "MobileNetV3 channel pruning through squeeze-and-excitation"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args(argv)
    import torch

    import mobilenet_v3
    from kmr_dsl.rules import prune
    from kmr_dsl.runtime import context, depgraph, layers as kl, meters

    shape = (1, 3, args.size, args.size)
    base = mobilenet_v3.make_mobilenet_v3(width=args.width, classes=1000)
    links = depgraph.channel_links(base, torch.zeros(shape))
    convs = [n for n, m in kl.logical_layers(base) if kl.kind_of(m) == "Conv2d"]
    weights = [n for n, m in kl.logical_layers(base) if kl.kind_of(m) in ("Conv2d", "Linear")]
    se = [n for n in convs if n.endswith(".expand.conv") and n in links
          and any(c.endswith(".se.fc2") for c in links[n].coupled)]
    selections = {"se": se, "all": convs}
    models = {"unpruned": base}
    for label, names in selections.items():
        model = copy.deepcopy(base)
        with context.use(context.RunContext(example=(shape, "float32"))):
            prune.apply(model, [(n, kl.get_module(model, n)) for n in names], amount=0.5, method="channel")
        models[label] = model
    x = torch.randn(args.batch, *shape[1:])
    lat = paired_latency(models, lambda: x, rounds=args.rounds, threads=args.threads, warmup=3)
    rows = []
    for label, model in models.items():
        rows.append([label, str(len(selections.get(label, []))), f"{meters.params(model):,}",
                     f"{meters.macs(model, shape):,}", f"{lat[label]['median_s'] * 1e3:.1f}",
                     f"{lat[label]['ratio']:.2f}"])
    se_groups = len(selections["se"])
    text = "\n".join([
        f"Measured with `python benchmarks/bench_mobilenet_v3.py --rounds {args.rounds} --threads {args.threads} "
        f"--batch {args.batch} --size {args.size} --width {args.width:g}`: MobileNetV3-Small "
        f"(tests/runtime/mobilenet_v3.py, the paper's Table 2 at width {args.width:g}, random weights, 1000 "
        f"classes), batch {args.batch} at {args.size}x{args.size}. The traced dependency graph links "
        f"{sum(n in links for n in weights)} of its {len(weights)} convolutions and Linears (all but the "
        f"logits); `se` prunes the {se_groups} expansions whose group holds a squeeze-and-excitation block "
        "(expansion, depthwise conv and the SE's second conv lose the same channels; the SE's first conv and "
        "the projection lose those inputs), `all` every conv, each at amount 0.5 with KMR's "
        "`prune(method = channel)`. Latency: the median of paired rounds (every round runs all three "
        "models on the same batch, the order rotating), the ratio the median of each round's time over "
        "the unpruned model's in that round.",
        "",
        table(["model", "convs selected", "params", "MACs (1 image)", "latency (ms)", "latency ratio (paired)"],
              rows),
        "",
        environment(args.threads) + ".",
    ])
    print(text)
    if args.update_docs:
        update_docs(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
