"""Train the tiny Llama on its generated text and write `llama.safetensors` next to this file.

Usage: python examples/tiny_llama/train_baseline.py [--steps N] [--seed S] [--out FILE]

Deterministic (fixed seeds, one thread). Every position of a sequence is a training
target (the usual causal-LM loss). Takes a few seconds on one core; prints the
next-token accuracy on the "test" split (the chain's ceiling is 0.7).
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
from safetensors.torch import save_file  # noqa: E402

from kmr_dsl.runtime.training import Adam  # noqa: E402  (torch.optim's import costs seconds)
from llama_model import make_llama, make_text, sequences  # noqa: E402


def train(steps: int = 300, seed: int = 0, lr: float = 3e-3, batch_size: int = 32):
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = make_llama()
    data = sequences(steps * batch_size, seed=100 + seed)
    optimizer = Adam(model.parameters(), lr=lr)
    try:
        model.train()
        for step in range(steps):
            batch = data[step * batch_size:(step + 1) * batch_size]
            optimizer.zero_grad()
            model(batch, labels=batch).loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    ids, targets = make_text("test")
    with torch.no_grad():
        accuracy = (model(ids).logits[:, -1].argmax(-1) == targets).float().mean().item()
    return model, accuracy


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "llama.safetensors"))
    args = parser.parse_args(argv)
    model, accuracy = train(args.steps, args.seed)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)
    print(f"wrote {args.out}; next-token accuracy on the test split: {accuracy:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
