"""Read `ModelFacts` off a real model: the checker's and the verifier's view of it.

Contract: `model_facts(spec, trust=False, span=None)` loads the model (loaders) and
returns its facts; `model_facts_from_module(module, input_shape, input_dtype)` does the
same for a module in hand. The caller caches them (facts.store_cached).

- layers: the logical layers (`kmr_dsl.runtime.layers.logical_layers`, so kinds are
  class names from LAYER_KINDS) in module order, each with in/out features (Conv:
  channels; Embedding: in = embedding_dim, out = num_embeddings), weight shape and
  elements, bias elements, dtype, bits, measured density, dense MACs on the example
  input and `consumers` (the layers that shrink when its output channels are pruned:
  see `depgraph.channel_links`, traced on the example input; BatchNorms first, then
  the consuming weight layers), `coupled` (the other members of its channel group:
  a residual stream's producers, a gated unit's gate and up projections, a depthwise
  conv over them), `unlinked` (why its channels cannot be removed), `tied` (the names
  of embeddings that read this layer's weight: `runtime.tied`), `fold_norm` /
  `fold_group` (`runtime.norms.fold_groups` on the example input: the normalization a
  per-input scale folds into and every Linear reading it; a trace that fails records
  none, which makes the layer not foldable: refusing is sound) and, for a
  query/key/value projection of a recognised attention (`runtime.heads`), `heads`,
  `head_group`, `head_consumers` and, on the query projection, `attention_macs` (the
  attention module's MACs less its layers').
- A model without weights (meta device) is traced on meta tensors, or on fake tensors
  when its forward reads a value (`_forward_facts`); KMR412 when it reads one even then.
- MACs: FlopCounterMode FLOPs / 2 of one forward on the example input, per layer and in
  total; int8 dynamic Linears (which FlopCounterMode counts as 0) are counted as their
  float equivalent, batch elements x in x out.
- The example input shape: the loader kwarg `input_shape = [..]` if given (with
  `input_dtype`, default int64 when the first layer is an Embedding, else float32); else the
  factory module's (or the loaded module's) `example_input()` function or attribute
  (a tensor or a shape); else for `hf` models (1, 128) token ids (int64); else
  (1, in_features) of the first Linear. A model whose first layer is a conv needs one
  of the explicit forms (KMR404).
- `source_hash` is `facts.spec_hash(spec)`; `dependencies` (what the build imported: the
  cache's staleness check) is `facts.dependencies_since`.
"""

from __future__ import annotations

import dataclasses
import sys

import torch
import torch.nn as nn

from kmr_dsl.diagnostics import KmrError, Span, error
from kmr_dsl.facts import LayerFact, LoaderSpec, ModelFacts, dependencies_since, spec_hash
from kmr_dsl.runtime import depgraph, forward, heads, layers as kl, loaders, meters, norms, tied, user_code
from kmr_dsl.runtime import int8_kernels as k8
from kmr_dsl.runtime import modules as km

HF_SEQUENCE = forward.HF_SEQUENCE


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def example_input_shape(spec: LoaderSpec | None, model: nn.Module, span: Span | None = None) -> tuple[tuple[int, ...], str]:
    span = span or Span.unknown()
    if spec is not None and spec.kw("input_shape") is not None:
        shape = _written_shape(spec.kw("input_shape"), span)
        first = next(iter(kl.logical_layers(model)), (None, None))[1]
        default = "int64" if first is not None and kl.kind_of(first) == "Embedding" else "float32"
        return shape, str(spec.kw("input_dtype", default))
    sources = []
    if spec is not None and spec.kind == "factory" and spec.args:
        module = user_code.import_module_from(str(spec.args[0]).partition(":")[0], spec.base_dir, span)
        sources.append(getattr(module, "example_input", None))
    sources.append(getattr(model, "example_input", None))
    for source in sources:
        if source is not None:
            found = forward.shape_of(source)
            if found:
                return found
    if spec is not None and spec.kind == "hf":
        return (1, HF_SEQUENCE), "int64"
    found = forward.first_layer_example(model)
    if found:
        return found
    raise KmrError(error("KMR404", span, "cannot tell the model's example input shape",
                         hint='pass the shape to the loader, e.g. `input_shape = "1, 3, 32, 32"`, or define '
                              "`example_input()` in the model's module, returning an example tensor or its shape"))


def _written_shape(value, span) -> tuple[int, ...]:
    """`input_shape = "1, 3, 32, 32"` (the language has no list literal; "1x3x32x32" works too)."""
    try:
        if isinstance(value, str):
            parts = [p for p in value.replace("x", ",").split(",") if p.strip()]
            return tuple(int(p) for p in parts)
        if isinstance(value, (int, float)):
            return (int(value),)
        return tuple(int(s) for s in value)
    except (TypeError, ValueError):
        raise KmrError(error("KMR404", span or Span.unknown(), f"`input_shape = {value!r}` is not a shape",
                             hint='write the sizes as a string, e.g. `input_shape = "1, 3, 32, 32"`')) from None


def _layer_fact(name: str, layer: nn.Module, macs: int, link: kl.ChannelLink | None = None,
                tied: tuple[str, ...] = (), unlinked: str = "",
                fold: tuple[str, tuple[str, ...]] = ("", ())) -> LayerFact:
    kind = kl.kind_of(layer)
    in_f, out_f = kl.layer_features(layer)
    ls = kl.leaves(name, layer)
    if ls:
        nnz = numel = 0
        for _, leaf in ls:
            a, b = kl.leaf_nonzero(leaf)        # a meta weight counts as dense (spec: densities are 1)
            nnz, numel = nnz + a, numel + b
        weight_shape = tuple(kl.leaf_weight(ls[0][1]).shape) if len(ls) == 1 else (numel,)
        bias_params = sum(0 if kl.leaf_bias(leaf) is None else kl.leaf_bias(leaf).numel() for _, leaf in ls)
        bits = kl.layer_bits(layer, name)
        leaf0 = ls[0][1]
        dtype = "qint8" if k8.is_int8_kernel(leaf0) else (f"int{leaf0.bits}" if isinstance(leaf0, km.QuantWeight)
                                                       else _dtype_name(leaf0.weight.dtype))
        weight_params = numel
    else:
        weight = getattr(layer, "weight", None)
        bias = getattr(layer, "bias", None)
        weight_shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else ()
        weight_params = weight.numel() if isinstance(weight, torch.Tensor) else 0
        bias_params = bias.numel() if isinstance(bias, torch.Tensor) else 0
        nnz = (weight_params if weight.is_meta else int(torch.count_nonzero(weight))) if weight_params else 0
        numel = weight_params
        bits = kl.layer_bits(layer, name)
        dtype = _dtype_name(weight.dtype) if isinstance(weight, torch.Tensor) else "float32"
    kernel = tuple(getattr(layer, "kernel_size", ())) if kind in ("Conv1d", "Conv2d") else ()
    return LayerFact(
        name=name, kind=kind, in_features=in_f, out_features=out_f, weight_shape=weight_shape,
        weight_params=int(weight_params), bias_params=int(bias_params), dtype=dtype, bits=int(bits),
        density=(nnz / numel) if numel else 1.0, macs=int(macs), consumers=link.names if link else (),
        kernel=kernel, tied=tied, group_size=kl.layer_group_size(layer, name),
        coupled=tuple(link.coupled) if link else (), depthwise=depgraph.is_depthwise(layer), unlinked=unlinked,
        channel_buffer_bytes=_channel_buffer_bytes(layer, kind), symmetric=kl.layer_symmetric(layer, name),
        fold_norm=fold[0], fold_group=fold[1],
    )


def _channel_buffer_bytes(layer: nn.Module, kind: str | None) -> int:
    """A BatchNorm's persistent per-channel buffers (what channel pruning slices with it)."""
    if kind not in ("BatchNorm1d", "BatchNorm2d"):
        return 0
    return sum(b.numel() * b.element_size() for n, b in layer._buffers.items()
               if b is not None and n not in layer._non_persistent_buffers_set and b.dim() == 1
               and b.shape[0] == layer.num_features)


def model_facts_from_module(module: nn.Module, input_shape, input_dtype: str = "float32",
                            source_hash: str = "", span: Span | None = None) -> ModelFacts:
    module.eval()
    x = forward.example_input(input_shape, input_dtype, batch=input_shape[0] if input_shape else 1)
    meta = loaders.is_meta(module)
    if meta:
        x = x.to("meta")        # FlopCounterMode counts a meta forward without computing anything
    found = heads.attentions(module)
    total_macs, per_layer, links, refused, folds = _forward_facts(module, x, found, meta, span)
    tied_to = tied.tied_names(module)
    facts = tuple(
        _with_heads(_layer_fact(name, layer, per_layer.get(name, 0), links.get(name), tied_to.get(name, ()),
                                refused.get(name, ""), folds.get(name, ("", ()))),
                    found, per_layer)
        for name, layer in kl.logical_layers(module)
    )
    buffers = sum(b.numel() * b.element_size() for _, b in _persistent_buffers(module))
    return ModelFacts(layers=facts, total_params=meters.params(module), total_macs=total_macs,
                      input_shape=tuple(int(s) for s in input_shape), input_dtype=input_dtype,
                      buffers_bytes=int(buffers), source_hash=source_hash)


def _forward_facts(module: nn.Module, x: torch.Tensor, found: dict, meta: bool, span: Span | None):
    """MACs, channel links and fold groups: three passes over one forward.

    A model without weights runs on the meta device. A meta tensor has no value to read,
    and transformers reads one where it may skip work: its mask code asks `.all()` of an
    attention mask (a wrapper that passes `attention_mask` or `position_ids`), which calls
    `.item()`. Such a forward is run again on fake tensors (shapes, no values), for which
    transformers takes its value-free path (`is_tracing`, the one torch.export uses: it
    builds the mask instead of reading it). Fake tensors cost about twice the time of meta
    ones (a 7B config: 7.6 s against 3.2 s CPU), so they are the fallback, not the rule.
    A forward that reads a value even then is KMR412, naming what it read."""
    def passes():
        total_macs, per_layer = meters.count_macs(module, x, set(found))
        links, refused = depgraph.links_and_refusals(module, x)
        return total_macs, per_layer, links, refused, _fold_groups(module, x)

    if not meta:
        return passes()
    try:
        return passes()
    except (NotImplementedError, RuntimeError) as exc:
        if not _reads_value(exc):
            raise
    from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode

    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            return passes()
    except (DataDependentOutputException, NotImplementedError, RuntimeError) as exc:
        if not isinstance(exc, DataDependentOutputException) and not _reads_value(exc):
            raise
        raise KmrError(error("KMR412", span or Span.unknown(), "the model has no weights, and its forward reads a "
                             "tensor's value, which a meta-device model does not have",
                             f"{type(exc).__name__}: {str(exc)[:300]}",
                             hint="check with real weights (drop `weights = false`, or build the model on the "
                                  "CPU), or avoid `.item()` / `bool(tensor)` in the model's forward")) from exc


def _reads_value(exc: Exception) -> bool:
    text = str(exc)
    return "meta" in text and ("item()" in text or "data-dependent" in text or "_local_scalar_dense" in text)


def _with_heads(fact: LayerFact, found: dict, per_layer: dict) -> LayerFact:
    """A projection of a recognised attention (runtime.heads) with its head group; the
    query projection also carries the attention's own matmul MACs (the module's count
    less its layers'), which head pruning scales (verify/cost.py)."""
    for att in found.values():
        if fact.name in att.projections:
            attention_macs = 0
            if fact.name == att.projections[0]:
                inside = sum(v for k, v in per_layer.items() if k.startswith(att.module + ".") and k not in found)
                attention_macs = max(0, per_layer.get(att.module, 0) - inside)
            return dataclasses.replace(fact, heads=att.units, attention_macs=attention_macs,
                                       head_group=tuple(p for p in att.projections if p != fact.name),
                                       head_consumers=(att.output,))
    return fact


def _fold_groups(module: nn.Module, x: torch.Tensor) -> dict:
    try:
        return norms.fold_groups(module, x)
    except Exception:  # noqa: BLE001 - a pass the reader cannot follow: nothing is foldable (sound)
        return {}


def _persistent_buffers(module: nn.Module):
    for mod_name, mod in module.named_modules():
        if kl.is_leaf(mod) and not isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)):
            continue    # integer leaves: their buffers are the weights, counted as params
        for b_name, b in mod._buffers.items():
            if b is not None and b_name not in mod._non_persistent_buffers_set:
                yield f"{mod_name}.{b_name}" if mod_name else b_name, b


def model_facts(spec: LoaderSpec, trust: bool = False, span: Span | None = None) -> ModelFacts:
    before = set(sys.modules)
    model = loaders.load_model(spec, trust=trust, span=span, allow_meta=True)
    shape, dtype = example_input_shape(spec, model, span)
    try:
        facts = model_facts_from_module(model, shape, dtype, source_hash=spec_hash(spec), span=span)
        return dataclasses.replace(facts, dependencies=dependencies_since(spec, before))
    except KmrError:
        raise
    except Exception as exc:  # noqa: BLE001 - the example input does not fit the model
        raise KmrError(error("KMR404", span or Span.unknown(), f"the model does not run on its example input {shape}",
                             f"{type(exc).__name__}: {str(exc)[:400]}",
                             hint='pass the right shape to the loader, e.g. `input_shape = "1, 3, 32, 32"`')) from exc


__all__ = ["example_input_shape", "model_facts", "model_facts_from_module"]
