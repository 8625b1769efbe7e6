"""Small generated models and data for the recipes in this folder (no downloads).

Contract:
- `make_mlp()`: the digits MLP (64-128-64-10, Linear layers `fc1`, `fc2`, `fc3`),
  random weights from a fixed seed; the recipes that train start from it.
- `make_cnn()`: a small digits CNN (`conv1`, `conv2`: Conv2d; `fc`: the Linear
  classifier), seeded; input (1, 1, 8, 8).
- `make_lm()`: a two-block decoder-shaped model with Llama's layer names
  (`embed_tokens`, `layers.N.self_attn.{q,k,v,o}_proj`, `layers.N.mlp.{gate,up,down}_proj`,
  `norm`, `lm_head`), hidden 32, vocabulary 64, seeded. Its forward is a simplified
  block (causal mean-mixing instead of softmax attention: the layer names and shapes
  are what the recipes select on); it returns next-token logits (batch, tokens, vocab).
- `tokens(split = "val" | "test", n = 64, length = 12)`: seeded random token ids, no
  targets, so `fidelity` compares the compressed model's logits to the original's.
- `digits_images(split)`: the scikit-learn digits as (N, 1, 8, 8) images with labels,
  through KMR's own seeded, stratified split.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB, HIDDEN, FFN = 64, 32, 64


def make_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(64, 128))
    model.add_module("relu1", nn.ReLU())
    model.add_module("fc2", nn.Linear(128, 64))
    model.add_module("relu2", nn.ReLU())
    model.add_module("fc3", nn.Linear(64, 10))
    return model


def make_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(1, 8, 3, padding=1))
    model.add_module("relu1", nn.ReLU())
    model.add_module("conv2", nn.Conv2d(8, 16, 3, padding=1))
    model.add_module("relu2", nn.ReLU())
    model.add_module("pool", nn.AdaptiveAvgPool2d(2))
    model.add_module("flat", nn.Flatten())
    model.add_module("fc", nn.Linear(64, 10))
    return model


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj, self.k_proj = nn.Linear(HIDDEN, HIDDEN, bias=False), nn.Linear(HIDDEN, HIDDEN, bias=False)
        self.v_proj, self.o_proj = nn.Linear(HIDDEN, HIDDEN, bias=False), nn.Linear(HIDDEN, HIDDEN, bias=False)

    def forward(self, x):
        # causal mean of the values, gated by a query-key agreement: cheap, deterministic
        gate = torch.sigmoid((self.q_proj(x) * self.k_proj(x)).sum(-1, keepdim=True) / HIDDEN ** 0.5)
        steps = torch.arange(1, x.shape[1] + 1, device=x.device).view(1, -1, 1)
        mixed = self.v_proj(x).cumsum(dim=1) / steps
        return self.o_proj(gate * mixed)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate_proj = nn.Linear(HIDDEN, FFN, bias=False)
        self.up_proj = nn.Linear(HIDDEN, FFN, bias=False)
        self.down_proj = nn.Linear(FFN, HIDDEN, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(HIDDEN)
        self.self_attn = Attention()
        self.post_attention_layernorm = nn.LayerNorm(HIDDEN)
        self.mlp = MLP()

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class TinyLM(nn.Module):
    def __init__(self, blocks: int = 2):
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, HIDDEN)
        self.layers = nn.ModuleList(Block() for _ in range(blocks))
        self.norm = nn.LayerNorm(HIDDEN)
        self.lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)

    def forward(self, ids):
        x = self.embed_tokens(ids)
        for block in self.layers:
            x = block(x)
        return self.lm_head(self.norm(x))


def make_lm(seed: int = 0, blocks: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    return TinyLM(blocks)


def tokens(split: str = "val", n: int = 64, length: int = 12) -> torch.Tensor:
    seed = {"val": 1, "test": 2, "calib": 3}[split]
    return torch.randint(0, VOCAB, (int(n), int(length)), generator=torch.Generator().manual_seed(seed))


def digits_images(split: str = "train"):
    from kmr_dsl.runtime.data import sklearn

    data = sklearn("digits", split)
    return data.inputs.reshape(-1, 1, 8, 8), data.targets
