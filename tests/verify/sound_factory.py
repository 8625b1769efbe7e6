"""Small models and data for the end-to-end soundness suite (tests/verify/soundness.py).

The suite copies this file beside each generated program, whose `model` and `data`
declarations call it as a factory:

    model m = factory("sound_factory:make", family = "mlp", sizes = "8,16,4", bias = "10", seed = 3)
    data train = factory("sound_factory:data", family = "mlp", sizes = "8,16,4", n = 16)

Families (sizes are comma-separated integers, bias one 0/1 flag per weight layer):
- `mlp`: sizes (in, hidden..., out): Linear layers with ReLU between, each read through
  a LayerNorm when `norm` = 1 (a pre-norm MLP: what smoothquant and awq fold into);
- `cnn`: sizes (c_in, c1, c2, out, spatial): Conv2d (3x3, same padding) -> [BatchNorm2d
  when `norm` = 1] -> ReLU -> Conv2d -> ReLU -> Flatten -> Linear;
- `embed`: sizes (vocab, dim, seq, out): Embedding -> Flatten -> Linear;
- `residual`: sizes (in, d, h, out): Linear(in, d) -> a block x + fc2(relu(fc1(x))) with
  fc1 d -> h, fc2 h -> d -> Linear(d, out) (fc2's outputs are added to the skip path, so
  pruning its channels alone cannot keep the shapes);
- `tied`: sizes (vocab, dim, seq): Embedding(vocab, dim) -> Linear(dim, dim) -> ReLU ->
  a head Linear(dim, vocab) whose weight IS the embedding's (tied), logits averaged over
  the seq tokens: a classifier over `vocab` classes;
- `resnet`: sizes (c_in, c1, c2, out, spatial): a ResNet stem Conv2d(c_in, c1) ->
  BatchNorm2d -> ReLU, a basic block on that stream (x + bn(conv(relu(bn(conv(x)))))),
  a second stage c1 -> c2 with a 1x1 projection shortcut (Conv2d + BatchNorm2d), ReLU,
  Flatten -> Linear: two residual streams whose producers are coupled channel groups;
- `gated`: sizes (in, d, h, out): Linear(in, d) -> transformers' LlamaMLP (gate_proj and
  up_proj d -> h, their outputs multiplied after SiLU, down_proj h -> d) -> Linear(d, out);
- `bert`: sizes (vocab, hidden, heads, inter, seq, labels): transformers'
  BertForSequenceClassification, one encoder layer (query/key/value/output.dense: head
  pruning's bert layout), built from a config (no download);
- `llama`: sizes (vocab, hidden, heads, kv_heads, inter, seq): transformers'
  LlamaForCausalLM, one decoder layer (grouped-query attention when kv_heads < heads,
  a gated MLP), a classifier over `vocab` classes (the last token's logits).
For `bert` and `llama`, `eager` = 1 builds the eager attention (its score and value
matmuls are operations the MAC counter sees) instead of torch's fused kernel, and the
`bias` flags are the attention's and the MLP's biases (`llama`) or ignored (`bert`).
The model carries its example input as the attribute `example_input` (zeros of shape
(1, ...), token ids for the families that start with an Embedding). Weights are torch's default initialisation under `torch.manual_seed(seed)`, the global
RNG restored after. `data` draws n labelled examples of the model's input (seeded).
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _ints(text: str) -> list[int]:
    return [int(t) for t in str(text).split(",") if t.strip()]


def _flags(text: str, n: int) -> list[bool]:
    text = str(text or "")
    return [(text[i] == "1") if i < len(text) else True for i in range(n)]


class Residual(nn.Module):
    def __init__(self, d: int, h: int, bias: bool):
        super().__init__()
        self.fc1 = nn.Linear(d, h, bias=bias)
        self.fc2 = nn.Linear(h, d, bias=bias)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))


class Tied(nn.Module):
    def __init__(self, vocab: int, dim: int, bias: bool):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.hidden = nn.Linear(dim, dim, bias=bias)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x):
        return self.head(torch.relu(self.hidden(self.emb(x)))).mean(dim=1)


class Block(nn.Module):
    """A ResNet basic block: conv-bn-relu-conv-bn plus the shortcut (a 1x1 conv and bn
    when the width changes), then ReLU."""

    def __init__(self, cin: int, cout: int, bias: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)) \
            if cin != cout else nn.Identity()

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + self.shortcut(x))


def _gated(d: int, h: int, bias: bool) -> nn.Module:
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    return LlamaMLP(LlamaConfig(hidden_size=d, intermediate_size=h, num_attention_heads=1, head_dim=2,
                                num_key_value_heads=1, mlp_bias=bias, hidden_act="silu"))


def _bert(s: list[int], eager: bool) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    vocab, hidden, heads, inter, seq, labels = s
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=heads,
                        intermediate_size=inter, max_position_embeddings=seq, num_labels=labels)
    config._attn_implementation = "eager" if eager else "sdpa"
    return BertForSequenceClassification(config)


def _llama(s: list[int], b: list[bool], eager: bool) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab, hidden, heads, kv, inter, seq = s
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=1,
                         num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=seq,
                         attention_bias=b[0], mlp_bias=b[1], tie_word_embeddings=False, use_cache=False,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0)
    config._attn_implementation = "eager" if eager else "sdpa"
    return LlamaForCausalLM(config)


def _modules(family: str, s: list[int], b: list[bool], norm: bool, eager: bool = False) -> nn.Module:
    if family == "mlp":
        mods: list[nn.Module] = []
        for i, (a, c) in enumerate(zip(s[:-1], s[1:])):
            if i:
                mods.append(nn.ReLU())
            if norm:
                mods.append(nn.LayerNorm(a))
            mods.append(nn.Linear(a, c, bias=b[i]))
        return nn.Sequential(*mods)
    if family == "cnn":
        c_in, c1, c2, out, spatial = s
        mods = [nn.Conv2d(c_in, c1, 3, padding=1, bias=b[0])]
        if norm:
            mods.append(nn.BatchNorm2d(c1))
        mods += [nn.ReLU(), nn.Conv2d(c1, c2, 3, padding=1, bias=b[1]), nn.ReLU(), nn.Flatten(),
                 nn.Linear(c2 * spatial * spatial, out, bias=b[2])]
        return nn.Sequential(*mods)
    if family == "embed":
        vocab, dim, seq, out = s
        return nn.Sequential(nn.Embedding(vocab, dim), nn.Flatten(), nn.Linear(seq * dim, out, bias=b[0]))
    if family == "residual":
        fin, d, h, out = s
        return nn.Sequential(nn.Linear(fin, d, bias=b[0]), nn.ReLU(), Residual(d, h, b[1]), nn.Linear(d, out, bias=b[2]))
    if family == "tied":
        vocab, dim, _seq = s
        return Tied(vocab, dim, b[0])
    if family == "resnet":
        c_in, c1, c2, out, spatial = s
        return nn.Sequential(nn.Conv2d(c_in, c1, 3, padding=1, bias=b[0]), nn.BatchNorm2d(c1), nn.ReLU(),
                             Block(c1, c1, b[1]), Block(c1, c2, b[1]), nn.Flatten(),
                             nn.Linear(c2 * spatial * spatial, out, bias=b[2]))
    if family == "gated":
        fin, d, h, out = s
        return nn.Sequential(nn.Linear(fin, d, bias=b[0]), _gated(d, h, b[1]), nn.Linear(d, out, bias=b[2]))
    if family == "bert":
        return _bert(s, eager)
    if family == "llama":
        return _llama(s, b, eager)
    raise ValueError(f"unknown family {family!r}")


TOKENS = ("embed", "tied", "bert", "llama")     # families whose input is token ids


def make(family: str, sizes: str, bias: str = "", norm: int = 0, seed: int = 0, eager: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = _modules(family, _ints(sizes), _flags(bias, 3), bool(norm), bool(eager))
        if norm or family == "resnet":
            for mod in model.modules():
                if isinstance(mod, nn.BatchNorm2d):
                    mod.running_mean.normal_(0.0, 0.1)
                    mod.running_var.uniform_(0.5, 1.5)
    # the example input the facts are measured on (introspect reads this attribute)
    model.example_input = torch.zeros(input_shape(family, sizes),
                                      dtype=torch.int64 if family in TOKENS else torch.float32)
    return model.eval()


def input_shape(family: str, sizes: str) -> list[int]:
    s = _ints(sizes)
    if family in ("cnn", "resnet"):
        return [1, s[0], s[4], s[4]]
    if family in ("embed", "tied"):
        return [1, s[2]]
    if family == "bert":
        return [1, s[4]]
    if family == "llama":
        return [1, s[5]]
    return [1, s[0]]


def data(family: str, sizes: str, n: int = 16, seed: int = 0):
    s = _ints(sizes)
    gen = torch.Generator().manual_seed(int(seed))
    shape = [int(n)] + input_shape(family, sizes)[1:]
    if family in TOKENS:
        x = torch.randint(0, s[0], shape, generator=gen)
    else:
        x = torch.randn(shape, generator=gen)
    classes = s[0] if family in ("tied", "llama") else s[3] if family in ("cnn", "resnet") else s[-1]
    return x, torch.randint(0, classes, (int(n),), generator=gen)
