"""Which Linear layers of MiniLM lose the most cosine under int8 dynamic quantization?

Usage: python examples/minilm/sensitivity.py [--keep K] [--split train]

For each of the 36 Linear layers alone, quantize it with KMR's own rule
(`quantize(bits = 8)`, int8 dynamic with per-channel weights) and measure the mean
cosine of the sentence embeddings to the fp32 model's on the *train* split (the
budget's `fidelity(texts)` reads the test split, so the choice is not fitted to it).
Then, keeping the K most sensitive feed-forward layers at 16 bits (bf16 storage,
float32 compute) and everything else int8 (embeddings weight-only int8, as
minilm.kmr does), print the cosine for K = 0..8 and the `kmr run --set` arguments for
`--keep K`. Takes a couple of minutes on two cores.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:
    import kmr_dsl  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FFN = ("intermediate.dense", "output.dense")


def is_ffn(name: str) -> bool:
    return name.endswith(FFN) and ".attention." not in name


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=int, default=3)
    parser.add_argument("--split", default="train")
    args = parser.parse_args(argv)

    import minilm_model
    import texts
    import torch
    import torch.nn.functional as F

    from kmr_dsl.rules import quantize
    from kmr_dsl.runtime import layers as kl

    base = minilm_model.make()
    data = texts.load(args.split)
    with torch.no_grad():
        ref = base(data)

    def cosine(model) -> float:
        with torch.no_grad():
            return float(F.cosine_similarity(model(data), ref, dim=1).mean())

    names = [n for n, _ in kl.select_layers(base, ("Linear",))]
    loss = {}
    for name in names:
        model = copy.deepcopy(base)
        quantize.apply(model, [(name, model.get_submodule(name))], bits=8)
        loss[name] = 1 - cosine(model)
    order = sorted(names, key=lambda n: -loss[n])
    print(f"cosine lost by int8 dynamic on one layer alone ({args.split} split), worst first:")
    for name in order[:12]:
        print(f"  {name:45s} {loss[name]:.5f}")

    ffn_order = [n for n in order if is_ffn(n)]
    print("\nall int8 except the K most sensitive FFN layers at 16 bits:")
    for k in range(9):
        model = copy.deepcopy(base)
        quantize.apply(model, kl.select_layers(model, ("Embedding",)), bits=8, scheme="weight_only")
        keep = set(ffn_order[:k])
        quantize.apply(model, [(n, model.get_submodule(n)) for n in names if n in keep], bits=16)
        quantize.apply(model, [(n, model.get_submodule(n)) for n in names if n not in keep], bits=8)
        print(f"  K = {k}: cosine {cosine(model):.4f}" + (f"  (+ {ffn_order[k - 1]})" if k else ""))
    flags = " ".join(f"--set 'ffn[{n}]=16'" for n in ffn_order[:args.keep])
    print(f"\nkmr run examples/minilm/minilm.kmr {flags}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
