"""Hand-built model facts and a fake facts provider, so checker tests never need torch.

The provider picks a model by the loader call's first argument (the factory reference,
the file or the folder), exactly as written in the program:

| first argument            | model                                                          |
|---------------------------|----------------------------------------------------------------|
| "fake:mlp", "mlp.pt"      | 3-layer MLP: fc1 (32->64), fc2 (64->64), fc3 (64->10)          |
| "digits_model:make_mlp"   | the spec's digits MLP 64-128-64-10: fc1, fc2, fc3              |
| "fake:bert", "bert-mini"  | a 2-layer BERT-like tree (embeddings, encoder.layer.N.…, pooler) |
| "fake:cnn"                | conv1, conv2 (Conv2d), bn1 (BatchNorm2d), fc (Linear)           |
| "fake:wide"               | 60 Linear layers block.0 … block.59 (for truncated notes)      |
| "fake:broken"             | raises RuntimeError (-> KMR216)                                 |
| "fake:missing"            | raises KmrError(KMR401) (its own diagnostic passes through)     |
| "fake:pickle"             | raises KmrError(KMR217) unless trusted, else the MLP            |
Anything else raises FileNotFoundError (-> KMR216).
"""

from __future__ import annotations

from kmr_dsl.diagnostics import KmrError, error
from kmr_dsl.facts import LayerFact, ModelFacts


def linear(name: str, i: int, o: int, tokens: int = 1, consumers=()) -> LayerFact:
    return LayerFact(name, "Linear", i, o, (o, i), i * o, o, "float32", 32, 1.0, i * o * tokens, tuple(consumers))


def other(name: str, kind: str, i: int, o: int, params: int) -> LayerFact:
    return LayerFact(name, kind, i, o, (o, i) if params else (), params, 0, "float32", 32, 1.0, 0)


def _facts(layers, input_shape) -> ModelFacts:
    layers = tuple(layers)
    return ModelFacts(layers, sum(layer.params for layer in layers), sum(layer.macs for layer in layers),
                      tuple(input_shape))


def mlp(sizes: tuple[int, ...]) -> ModelFacts:
    n = len(sizes) - 1
    layers = [linear(f"fc{k + 1}", sizes[k], sizes[k + 1], consumers=(f"fc{k + 2}",) if k + 1 < n else ())
              for k in range(n)]
    return _facts(layers, (1, sizes[0]))


def chain(n: int, widths: tuple[int, ...] = (64, 96, 128, 80)) -> ModelFacts:
    """n Linear layers fc0 ... fc{n-1}, each read by the next, whose widths cycle through
    `widths` (as many layer shapes as widths): the verifier's scale benchmarks and tests."""
    layers = [linear(f"fc{i}", widths[i % len(widths)], widths[(i + 1) % len(widths)],
                     consumers=(f"fc{i + 1}",) if i + 1 < n else ()) for i in range(n)]
    return _facts(layers, (1, widths[0]))


def per_layer_program(lines: list[str]) -> str:
    """A program over a chain (`chain`): per-layer sparsity and bit-width families (one
    prune and one quantize step per Linear) and the budget `lines`."""
    budget = "\n".join(f"        {ln}" for ln in lines)
    return f"""import "std"
model deep = factory("bench:mlp")
knob s[l in layers(Linear)] : float in [0.0, 0.9] step 0.05 = 0.0
knob b[l in layers(Linear)] : int in {{4, 8, 16, 32}} = 32
pipeline compress(deep) {{
    for l in layers(Linear) {{
        prune(amount = s[l])
        quantize(bits = b[l])
    }}
    budget {{
{budget}
    }}
}}
"""


def shared_knobs_program(lines: list[str], count: int) -> str:
    """A program over a chain (`chain`): `count` scalar sparsity knobs, each pruning every
    Linear, one bit-width knob, and the budget `lines`: one group of count + 1 knobs."""
    knobs = "\n".join(f"knob k{i} : float in [0.0, 0.5] step 0.05 = 0.0" for i in range(count))
    steps = "\n".join(f"        prune(amount = k{i})" for i in range(count))
    budget = "\n".join(f"        {ln}" for ln in lines)
    return f"""import "std"
model deep = factory("bench:mlp")
{knobs}
knob b : int in {{4, 8, 16, 32}} = 32
pipeline compress(deep) {{
    for l in layers(Linear) {{
{steps}
        quantize(bits = b)
    }}
    budget {{
{budget}
    }}
}}
"""


def bert(n_layers: int = 2, hidden: int = 32, ffn: int = 128, vocab: int = 1000, tokens: int = 16) -> ModelFacts:
    layers = [
        LayerFact("embeddings.word_embeddings", "Embedding", hidden, vocab, (vocab, hidden), vocab * hidden, 0,
                  "float32", 32, 1.0, 0),
        LayerFact("embeddings.position_embeddings", "Embedding", hidden, 64, (64, hidden), 64 * hidden, 0,
                  "float32", 32, 1.0, 0),
        other("embeddings.LayerNorm", "LayerNorm", hidden, hidden, 2 * hidden),
    ]
    for i in range(n_layers):
        p = f"encoder.layer.{i}"
        layers += [
            linear(f"{p}.attention.self.query", hidden, hidden, tokens),
            linear(f"{p}.attention.self.key", hidden, hidden, tokens),
            linear(f"{p}.attention.self.value", hidden, hidden, tokens),
            linear(f"{p}.attention.output.dense", hidden, hidden, tokens),
            other(f"{p}.attention.output.LayerNorm", "LayerNorm", hidden, hidden, 2 * hidden),
            linear(f"{p}.intermediate.dense", hidden, ffn, tokens, consumers=(f"{p}.output.dense",)),
            linear(f"{p}.output.dense", ffn, hidden, tokens),
            other(f"{p}.output.LayerNorm", "LayerNorm", hidden, hidden, 2 * hidden),
        ]
    layers.append(linear("pooler.dense", hidden, hidden))
    return _facts(layers, (1, tokens))


def cnn() -> ModelFacts:
    layers = [
        LayerFact("conv1", "Conv2d", 1, 8, (8, 1, 3, 3), 72, 8, "float32", 32, 1.0, 72 * 26 * 26, ("conv2",), (3, 3)),
        other("bn1", "BatchNorm2d", 8, 8, 16),
        LayerFact("conv2", "Conv2d", 8, 16, (16, 8, 3, 3), 1152, 16, "float32", 32, 1.0, 1152 * 24 * 24, (), (3, 3)),
        linear("fc", 16, 10),
    ]
    return _facts(layers, (1, 1, 28, 28))


def wide(n: int = 60) -> ModelFacts:
    return _facts([linear(f"block.{k}", 16, 16) for k in range(n)], (1, 16))


MLP = mlp((32, 64, 64, 10))
DIGITS = mlp((64, 128, 64, 10))
BERT = bert()
CNN = cnn()
WIDE = wide()

MODELS: dict[str, ModelFacts] = {
    "fake:mlp": MLP, "mlp.pt": MLP,
    "digits_model:make_mlp": DIGITS,
    "fake:bert": BERT, "bert-mini": BERT,
    "fake:cnn": CNN,
    "fake:wide": WIDE,
}


def provider(spec, trust: bool, span) -> ModelFacts:
    ref = spec.args[0] if spec.args else None
    if ref == "fake:broken":
        raise RuntimeError("size mismatch for fc1.weight: copying a param with shape [64, 32]")
    if ref == "fake:missing":
        raise KmrError(error("KMR401", span, "model file `missing.pt` not found"))
    if ref == "fake:pickle":
        if not trust:
            raise KmrError(error("KMR217", span, "`model.pt` is a pickle that can run code when loaded"))
        return MLP
    if ref not in MODELS:
        raise FileNotFoundError(f"no fake model for {ref!r}")
    return MODELS[ref]


__all__ = ["BERT", "CNN", "DIGITS", "MLP", "MODELS", "WIDE", "provider"]
