"""`kmr export --format hf`: a KMR artifact of a transformers model as a
`save_pretrained` folder whose quantized weights are in the compressed-tensors format.

Contract: `export_hf(artifact, out_dir, dense, trust, base_dir) -> ExportResult` writes
`out_dir/` (config.json, model.safetensors) such that the artifact's transformers class
(`export_class`: LlamaForCausalLM for a causal LM; `AutoModel` loads its base) loads it
with `from_pretrained(out_dir)` on CPU (with the `compressed-tensors` package installed
when a layer is quantized) and computes what the artifact computes. The folder appears only when that check passes (written to a
temporary folder beside it, loaded back with transformers, compared on sample inputs,
then moved into place); otherwise KMR522.

The compressed-tensors package (llm-compressor's checkpoint format, read by vLLM) is
the writer: KMR's per-row scales are set on the schemes it attaches, and its own
compressor turns the weights into codes (exactly KMR's codes: the weights are already
on that grid). Encodings:
- int8 weight-only -> a `W8A16` group: int8, per-channel symmetric weights, float
  activations (compressed-tensors packs them, format `pack-quantized`; embeddings in
  their own group, stored as int8 tensors, format `int-quantized`);
- int8 dynamic -> a `W8A8` group: the same weights plus dynamic per-tensor int8
  input activations (format `int-quantized`);
- float32; bfloat16 widened to float32 (exact); pruned weights dense (same values);
- refused with the layer's name (KMR520) unless `dense`: int4/int2 (KMR's midrise grid
  is not compressed-tensors' integer grid), low-rank factorized layers and unmerged
  LoRA adapters and layers scaled by an explicit input vector (no place for them in the
  architecture), int8 transformers `Conv1D` layers (GPT-2's projections:
  compressed-tensors quantizes only nn.Linear and nn.Embedding), an int8 Linear whose
  weight is tied to the input embedding (transformers ties by sharing the `weight` that
  compressed-tensors replaces with codes) — `dense` writes their float values (factors
  multiplied out, adapters merged, explicit input scales multiplied into their weights,
  int8 codes dequantized);
- head- and channel-pruned widths: written into config.json where the config can state
  them (`hf_config.fit_config`: Llama head counts and `head_dim`, `intermediate_size`);
  otherwise refused with the layer's name (KMR520) unless `dense` (zero padding to a
  width the config states: the same function).
Tolerances as for ONNX: 1e-4 without dynamic layers; 0.1 / 0.05 with them (the loaded
model fake-quantizes activations symmetrically, torch's kernels asymmetrically).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from kmr_dsl.diagnostics import KmrError, Span, error
from kmr_dsl.export.hf_config import fit_config
from kmr_dsl.export.onnx_export import ExportResult, refuse
from kmr_dsl.export.samples import judge, load_artifact, outputs, sample_inputs
from kmr_dsl.export.twin import Leaf, float_twin
from kmr_dsl.runtime import layers as kl, modules as km, tied

_INT8 = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False}
_DYNAMIC_ACT = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "tensor", "dynamic": True}


def export_hf(artifact: str, out_dir: str | Path, dense: bool = False, trust: bool = False,
              base_dir: str | None = None) -> ExportResult:
    from transformers import PreTrainedModel

    model, spec = load_artifact(artifact, trust, base_dir)
    if not isinstance(model, PreTrainedModel):
        raise KmrError(error("KMR523", Span.unknown(artifact),
                             f"`--format hf` needs a transformers model; this artifact holds a {type(model).__name__}",
                             hint="use --format onnx, or build the model with the hf(...) loader"))
    cls = export_class(model)
    twin, plan = float_twin(model)
    result = ExportResult(Path(out_dir))
    dense_dynamic = _densify(twin, plan, dense, result)
    fit = fit_config(twin, cls, plan, dense)
    twin.config = fit.config
    result.config_changes = dict(fit.changes)
    for layer, was in fit.densified.items():
        result.encodings[layer] = f"float32 (dense, from {was}: compressed-tensors holds no Conv1D)"
    for layer in sorted({key.rpartition(".")[0] for key in fit.padded}):
        if layer in result.encodings:
            result.encodings[layer] += " (zero-padded to the config's width)"
    samples = sample_inputs(model, spec)
    artifact_out = outputs(model, samples, _architecture_forward(model, cls))
    float_out = outputs(twin, samples, _architecture_forward(twin, cls))
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        # a densified int8-dynamic Conv1D computes with float activations: judged as dynamic
        dynamic = _save(twin, plan, tmp) or dense_dynamic or "int8_dynamic" in fit.densified.values()
        result.check = judge(artifact_out, float_out, _loaded_outputs(cls, tmp, samples), dynamic)
        result.samples = len(samples)
        if not result.check.ok:
            raise KmrError(error("KMR522", Span.unknown(artifact),
                                 "the Hugging Face folder disagrees with the torch artifact",
                                 result.check.vs_artifact.summary(), f"required: {result.check.rule()}",
                                 hint="report this with the artifact; nothing was written"))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result.path = out / "model.safetensors"
    return result


def _densify(twin: nn.Module, plan: dict[str, Leaf], dense: bool, result: ExportResult) -> bool:
    """Refuse, or with `dense` replace, what a transformers checkpoint cannot hold; True
    if an int8-dynamic layer was so written in float (its activations float now)."""
    owners = tied.tied_names(twin)
    dense_dynamic = False
    for name, layer in list(kl.logical_layers(twin)):
        if isinstance(layer, (km.FactorizedLinear, km.LoRALinear, km.ScaledLinear)):
            what = "low-rank factorized" if isinstance(layer, km.FactorizedLinear) else \
                "adapted (unmerged LoRA)" if isinstance(layer, km.LoRALinear) else \
                "scaled by an explicit input vector (awq, smoothquant)"
            if not dense:
                raise KmrError(error("KMR520", Span.unknown(name), f"layer `{name}` is {what}, which a transformers "
                                     "checkpoint of this architecture cannot hold",
                                     hint="pass --dense to write its float weights (factors multiplied out, "
                                          "adapters merged), or export with --format onnx"))
            kl.set_module(twin, name, _merged(layer))
            for leaf in [k for k in plan if k.startswith(name + ".")]:
                plan.pop(leaf)
            result.encodings[name] = f"float32 (dense, from {what})"
    for leaf in plan.values():
        if leaf.format in ("int4", "int2"):
            if not dense:
                raise refuse(leaf, "compressed-tensors")
            leaf.format = f"float32 (dense, from {leaf.format})"
        elif leaf.name in owners and leaf.format in ("int8", "int8_dynamic"):
            # transformers ties the table by sharing the Linear's `weight`, which
            # compressed-tensors replaces with packed codes: the loader then finds no
            # weight to tie (and the embedding no table)
            if not dense:
                raise KmrError(error(
                    "KMR520", Span.unknown(leaf.name), f"layer `{leaf.name}` is stored as {leaf.format} and tied to "
                    f"`{'`, `'.join(owners[leaf.name])}`, which a compressed-tensors checkpoint cannot hold",
                    "transformers ties the embedding to the output projection by sharing its `weight`, which "
                    "compressed-tensors replaces with integer codes",
                    hint="pass --dense to write the dequantized int8 table as float (still one tied table), or "
                         "quantize the untied layers only"))
            dense_dynamic = dense_dynamic or leaf.format == "int8_dynamic"
            leaf.format = f"float32 (dense, from {leaf.format}: tied)"
        w8a16 = "int8 W8A16 (int-quantized)" if leaf.kind == "Embedding" else "int8 W8A16 (pack-quantized)"
        result.encodings[leaf.name] = {"int8": w8a16, "int8_dynamic": "int8 W8A8 (int-quantized)",
                                       "bfloat16": "float32 (from bfloat16)"}.get(leaf.format, leaf.format)
    return dense_dynamic


def _merged(layer: nn.Module) -> nn.Linear:
    with torch.no_grad():
        if isinstance(layer, km.FactorizedLinear):
            weight = layer.second.weight.float() @ layer.first.weight.float()
            bias = layer.second.bias
        elif isinstance(layer, km.ScaledLinear):
            # the vector multiplies the input: the same values as its weight's columns times it
            weight = layer.linear.weight.float() * layer.input_scale.float()[None, :]
            bias = layer.linear.bias
        else:
            weight = layer.base.weight.float() + layer.delta().float()
            bias = layer.base.bias
        new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias.float())
    return new


def _save(twin: nn.Module, plan: dict[str, Leaf], folder: Path) -> bool:
    """save_pretrained, with compressed-tensors groups when a layer is int8; True if dynamic."""
    w8a16 = [n for n, leaf in plan.items() if leaf.format == "int8"]
    w8a8 = [n for n, leaf in plan.items() if leaf.format == "int8_dynamic"]
    if not (w8a16 or w8a8):
        with _quiet():
            twin.save_pretrained(folder)
        return False
    try:
        from compressed_tensors.compressors import ModelCompressor
        from compressed_tensors.quantization import (QuantizationArgs, QuantizationConfig, QuantizationScheme,
                                                     apply_quantization_config)
    except ModuleNotFoundError as exc:
        raise KmrError(error("KMR506", Span.unknown("kmr export"), "missing dependency `compressed-tensors`",
                             hint="pip install 'kmr-dsl[export]'")) from exc

    def targets(names):
        return ["re:^" + re.escape(n) + "$" for n in names]  # exactly these layers, nothing else

    groups = {}
    linear = [n for n in w8a16 if plan[n].kind != "Embedding"]
    tables = [n for n in w8a16 if plan[n].kind == "Embedding"]
    if linear:
        groups["W8A16"] = QuantizationScheme(targets=targets(linear), weights=QuantizationArgs(**_INT8))
    if tables:
        # packed embeddings lose their `weight` attribute, which save_pretrained reads
        # (input embeddings); int8 tensors keep it
        groups["W8A16_embeddings"] = QuantizationScheme(targets=targets(tables), weights=QuantizationArgs(**_INT8),
                                                        format="int-quantized")
    if w8a8:
        groups["W8A8"] = QuantizationScheme(targets=targets(w8a8), weights=QuantizationArgs(**_INT8),
                                            input_activations=QuantizationArgs(**_DYNAMIC_ACT))
    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        apply_quantization_config(twin, QuantizationConfig(config_groups=groups))
        with torch.no_grad():
            for name in w8a16 + w8a8:
                twin.get_submodule(name).weight_scale.copy_(plan[name].scale.reshape(-1, 1))
        compressor = ModelCompressor.from_pretrained_model(twin)
        compressor.compress_model(twin)
        twin.save_pretrained(folder)
        compressor.update_config(str(folder))
    return bool(w8a8)


class _quiet:
    """Silence the progress bars and loggers of transformers and compressed-tensors."""

    def __enter__(self):
        import logging
        import os

        self._env = os.environ.get("TQDM_DISABLE")
        os.environ["TQDM_DISABLE"] = "1"
        self._level = logging.root.level
        logging.root.setLevel(logging.ERROR)
        from transformers.utils import logging as hf_logging
        self._bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            from loguru import logger
            logger.disable("compressed_tensors")
        except ModuleNotFoundError:
            pass
        return self

    def __exit__(self, *exc):
        import logging
        import os

        logging.root.setLevel(self._level)
        if self._bars:
            from transformers.utils import logging as hf_logging
            hf_logging.enable_progress_bar()
        if self._env is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = self._env
        return False


def _loaded_outputs(cls, folder: Path, samples) -> list[torch.Tensor]:
    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        loaded = cls.from_pretrained(str(folder)).eval()
        return outputs(loaded, samples)  # the first forward decompresses (quietly, here)


def export_class(model: nn.Module):
    """The transformers class the folder is loaded as: the model's own class, or for a
    subclass defined elsewhere (a model with its own pooling, say) the transformers
    architecture it extends, which is what `from_pretrained` can build."""
    from transformers import PreTrainedModel

    for cls in type(model).__mro__:
        if issubclass(cls, PreTrainedModel) and cls.__module__.startswith("transformers."):
            return cls
    return type(model)    # pragma: no cover - export_hf checked it is a PreTrainedModel


def _architecture_forward(model: nn.Module, cls):
    """What `cls.from_pretrained` will compute: a subclass is run with the
    architecture's own forward."""
    if type(model) is not cls:
        return lambda x: cls.forward(model, x)
    return model


__all__ = ["export_hf"]
