"""Loading an artifact for export, sample inputs, and the agreement check.

Contract:
- `load_artifact(path, trust, base_dir)` loads `OUT/model.safetensors` with the runtime's
  data-only loader (`kmr_dsl.runtime.artifact.load`: no pickle; the architecture is
  rebuilt by the program's own loader, from `base_dir` when given) and returns
  (model, loader spec).
- `sample_inputs(model, spec, n)` gives n deterministic batches shaped like the
  model's example input (the loader's `input_shape`, or the model's own
  `example_input`): seeded normal values for float inputs, seeded token ids below the
  largest embedding's size for integer ones (all-zero ids would check almost nothing).
  With `vary`, the last batch has another batch size and, for token ids, another
  sequence length (`varied_shape`): the axes an exported graph declares dynamic.
- `primary(out)` is the tensor an exported graph returns: a tensor as is, a Hugging
  Face output's `last_hidden_state` (or `logits`), a tuple's first element.
- `Agreement` compares two outputs: max absolute difference, relative L2 error, mean
  cosine; `within(tol)` states the tolerance it was judged by.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from kmr_dsl.diagnostics import KmrError, Span, error
from kmr_dsl.facts import LoaderSpec


def load_artifact(path: str, trust: bool = False, base_dir: str | None = None) -> tuple[nn.Module, LoaderSpec | None]:
    from kmr_dsl.runtime.artifact import load, program_folder, read_recipe

    p = Path(path)
    if not p.is_file():
        raise KmrError(error("KMR501", Span.unknown(path), f"no such artifact: {path}",
                             hint="pass the model.safetensors that `kmr run` or `kmr search` wrote"))
    recipe = read_recipe(p)
    model = load(p, trust=trust, base_dir=base_dir).eval()     # the recipe's base checked here
    base = recipe.get("base") or {}
    spec = None
    if base:
        folder = str(base_dir) if base_dir is not None else program_folder(base, p.resolve())
        spec = LoaderSpec(base["kind"], tuple(base.get("args", ())),
                          tuple((k, v) for k, v in base.get("kwargs", ())), folder)
    return model, spec


def _vocab(model: nn.Module) -> int:
    sizes = [m.num_embeddings for m in model.modules() if hasattr(m, "num_embeddings")]
    return max(sizes) if sizes else 2


def sample_inputs(model: nn.Module, spec: LoaderSpec | None, n: int = 4, batch: int = 3,
                  vary: bool = False) -> list[torch.Tensor]:
    from kmr_dsl.runtime.introspect import example_input_shape

    shape, dtype = example_input_shape(spec, model)
    shape = (batch,) + tuple(int(s) for s in shape[1:])
    longest = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    tokens = dtype in ("int64", "long", "int32")
    if tokens and isinstance(longest, int) and len(shape) == 2 and shape[1] > longest:
        shape = (batch, longest)  # a sequence the model's positions cover
    shapes = [shape] * n
    if vary and n > 1:
        shapes[-1] = varied_shape(shape, tokens)
    gen = torch.Generator().manual_seed(0)
    if tokens:
        vocab = _vocab(model)
        return [torch.randint(0, vocab, s, generator=gen) for s in shapes]
    return [torch.randn(s, generator=gen) for s in shapes]


def varied_shape(shape: tuple[int, ...], tokens: bool) -> tuple[int, ...]:
    """Another batch size, and for token ids another sequence length: the axes an
    exported graph declares dynamic, so a graph that baked in the traced sizes fails the
    check instead of passing it."""
    out = (max(1, shape[0] - 1),) + tuple(shape[1:])
    if tokens and len(shape) == 2 and shape[1] > 1:
        out = (out[0], shape[1] - max(1, shape[1] // 3))
    return out


def primary(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    for key in ("last_hidden_state", "logits"):
        value = getattr(out, key, None)
        if value is None and isinstance(out, dict):
            value = out.get(key)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"cannot read a tensor from a {type(out).__name__} output")


class Primary(nn.Module):
    """The model with one tensor output, as an exporter traces it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return primary(self.model(x))


@dataclass(frozen=True)
class Agreement:
    max_abs: float
    rel_l2: float
    cosine: float
    ref_max: float

    @staticmethod
    def of(ref: torch.Tensor, got: torch.Tensor) -> "Agreement":
        ref, got = ref.detach().double().flatten(1), got.detach().double().flatten(1)
        diff = (ref - got)
        cos = torch.nn.functional.cosine_similarity(ref, got, dim=1, eps=1e-12).mean()
        return Agreement(float(diff.abs().max()), float(diff.norm() / ref.norm().clamp_min(1e-12)), float(cos),
                         float(ref.abs().max()))

    def worst(self, other: "Agreement") -> "Agreement":
        return Agreement(max(self.max_abs, other.max_abs), max(self.rel_l2, other.rel_l2),
                         min(self.cosine, other.cosine), max(self.ref_max, other.ref_max))

    def within(self, atol: float, rel_l2: float) -> bool:
        """max |a - b| <= atol * max(1, max |ref|) and ||a - b|| / ||ref|| <= rel_l2."""
        return self.max_abs <= atol * max(1.0, self.ref_max) and self.rel_l2 <= rel_l2

    def summary(self) -> str:
        return f"max |diff| {self.max_abs:.3g} (outputs up to {self.ref_max:.3g}), relative L2 {self.rel_l2:.3g}, " \
               f"cosine {self.cosine:.6f}"


@dataclass(frozen=True)
class Check:
    """The export checked on sample inputs, and the rule it was judged by.

    Without int8 activations an export must compute the artifact's function up to
    float32 rounding: max |diff| <= 1e-4 * max(1, max |ref|) and relative L2 <= 1e-4.
    With int8 dynamic activations two runtimes round activations differently (torch's
    fbgemm kernels to 7-bit asymmetric steps, onnxruntime to 8-bit ones, compressed-
    tensors symmetric), and on a deep model each is some way from the float model; so
    the export is judged against the float model (the artifact's dequantized weights):
    its relative L2 error may be at most max(0.05, 1.5 x the artifact's own)."""

    vs_artifact: Agreement
    vs_float: Agreement | None = None
    artifact_vs_float: Agreement | None = None

    @property
    def bound(self) -> float | None:
        return None if self.artifact_vs_float is None else max(0.05, 1.5 * self.artifact_vs_float.rel_l2)

    @property
    def ok(self) -> bool:
        if self.vs_float is None:
            return self.vs_artifact.within(1e-4, 1e-4)
        return self.vs_float.rel_l2 <= self.bound

    def rule(self) -> str:
        if self.vs_float is None:
            return "max |diff| <= 1e-4 * max(1, max |ref|) and relative L2 <= 1e-4 against the artifact"
        return (f"int8 activations: relative L2 to the float model {self.vs_float.rel_l2:.3g} <= max(0.05, 1.5 x "
                f"the artifact's own {self.artifact_vs_float.rel_l2:.3g}) = {self.bound:.3g}")

    def to_json(self) -> dict:
        out = {"max_abs": self.vs_artifact.max_abs, "rel_l2": self.vs_artifact.rel_l2,
               "cosine": self.vs_artifact.cosine, "ok": self.ok, "rule": self.rule()}
        if self.vs_float is not None:
            out.update(rel_l2_to_float=self.vs_float.rel_l2, artifact_rel_l2_to_float=self.artifact_vs_float.rel_l2,
                       bound=self.bound)
        return out


def outputs(model: nn.Module, samples, run=None) -> list[torch.Tensor]:
    run = run or model
    with torch.no_grad():
        return [primary(run(x)).detach().float().clone() for x in samples]


def judge(artifact_out, float_out, got, dynamic: bool) -> Check:
    def worst(refs, outs):
        result = None
        for r, o in zip(refs, outs):
            a = Agreement.of(r, o)
            result = a if result is None else result.worst(a)
        return result

    vs_art = worst(artifact_out, got)
    if not dynamic:
        return Check(vs_art)
    return Check(vs_art, worst(float_out, got), worst(float_out, artifact_out))


__all__ = ["Agreement", "Check", "Primary", "judge", "load_artifact", "outputs", "primary", "sample_inputs",
           "varied_shape"]
