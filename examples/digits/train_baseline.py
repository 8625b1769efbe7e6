"""Train the digits MLP and write `mlp.safetensors` next to this file.

Usage: python examples/digits/train_baseline.py [--epochs N] [--seed S]

Deterministic: fixed seed, one thread, the train split of KMR's own `sklearn("digits")`
loader (so `data train = sklearn("digits", split = "train")` in a program sees exactly
the rows trained on here, and the val and test splits are never touched). Takes a few seconds on
two cores; prints the test accuracy (about 0.97).
"""

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:
    import kmr_dsl  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from digits_model import make_mlp  # noqa: E402
from kmr_dsl.runtime.data import sklearn  # noqa: E402
from kmr_dsl.runtime.training import Adam  # noqa: E402  (torch.optim's import costs ~3.5 s)


def train(epochs: int = 20, seed: int = 0, lr: float = 2e-3, batch_size: int = 32):
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)      # one thread: the same floating-point sums on every machine
    train_set, test_set = sklearn("digits", "train"), sklearn("digits", "test")
    model = make_mlp()
    optimizer = Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    try:
        for _ in range(epochs):
            model.train()
            for x, y in train_set.batches(batch_size, shuffle=True, generator=generator):
                optimizer.zero_grad()
                F.cross_entropy(model(x), y).backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        accuracy = (model(test_set.inputs).argmax(1) == test_set.targets).float().mean().item()
    return model, accuracy


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "mlp.safetensors"))
    args = parser.parse_args(argv)
    model, accuracy = train(args.epochs, args.seed)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)
    print(f"test accuracy {accuracy:.4f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
