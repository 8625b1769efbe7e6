"""The config.json of a pruned transformers model: widths the config can state, zero
padding (with `--dense`) for those it cannot, a located refusal otherwise.

Contract: `fit_config(twin, cls, plan, dense)` compares the twin's tensor shapes with what
`cls.from_pretrained` builds from the model's config (a meta-device model built from it)
and returns a `Fit`: the config to write, with the widths head and channel pruning
changed, and the layers padded to it. It changes `twin` (and the plan's codes and
scales) only where it pads. A change the config cannot state raises KMR520 naming the
layer, unless `dense` asks for padding.

What a transformers config can state (checked against transformers 5's modeling code):
- attention heads, Llama layout (Llama, Mistral, Qwen2...: the config has `head_dim`):
  `num_key_value_heads` (the key/value heads kept), `num_attention_heads` (their query
  heads) and `head_dim` written out, so the head width does not follow from the
  hidden size. One count for every layer.
- attention heads, BERT layout: nothing. BERT's head width is `hidden_size /
  num_attention_heads`, and transformers 5 has no `pruned_heads`, so fewer heads of the
  same width cannot be described.
- MLP width (Llama's gate/up/down projections, BERT's intermediate/output dense,
  GPT-2's c_fc/c_proj): `intermediate_size` (GPT-2: `n_inner`), one for every layer.
GPT-2's `Conv1D` projections, Linear layers in KMR's artifact, are written back as
Conv1D ([in, out] weights), as the architecture builds them. compressed-tensors
quantizes only torch's nn.Linear and nn.Embedding (a Conv1D it is pointed at stays
float when loaded), so an int8 Conv1D is KMR520 unless `dense`, which writes its
dequantized values in float (the same weights; an int8-dynamic one loses its int8
activations, and the export is judged as a dynamic one).
Per-layer differing counts are therefore not expressible. With `--dense` each pruned
layer is padded back with zero rows (its producers) and zero columns (its consumer) to
the widest layer's count (BERT heads: to the original count). The padded channels
contribute exactly nothing (the consumer's columns are zero, and nothing between the
producer and its consumer mixes channels: an activation, a gate's product, attention
within one head), so the function is the artifact's; the file is larger than the
pruned model. The export's agreement check still runs on the result.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from kmr_dsl.diagnostics import KmrError, Span, error
from kmr_dsl.export.twin import Leaf
from kmr_dsl.runtime import heads, layers as kl

_BLOCK = re.compile(r"^(.*?\.\d+)\.")    # the first numbered module: one transformer block


@dataclass
class Fit:
    config: object                                    # the PretrainedConfig to write
    changes: dict[str, tuple] = field(default_factory=dict)   # config field -> (before, after)
    padded: dict[str, tuple] = field(default_factory=dict)    # tensor key -> (pruned shape, written shape)
    densified: dict[str, str] = field(default_factory=dict)   # int8 Conv1D written as float -> its format


def _built(cls, config) -> nn.Module:
    """What `cls.from_pretrained` builds from `config`, on the meta device."""
    import warnings

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return cls._from_config(config)


def _built_shapes(cls, config) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in _built(cls, config).state_dict().items()}


def _conv1d_back(twin: nn.Module, built: nn.Module, plan: dict[str, Leaf], dense: bool) -> dict[str, str]:
    """GPT-2's `Conv1D` layers are plain Linear layers in KMR's artifact and twin (the
    weight transposed to [out, in]); the checkpoint stores them as the architecture
    builds them, [in, out]. An int8 one is refused unless `dense`, which writes its
    dequantized values as float: the layers so written, with their formats."""
    densified: dict[str, str] = {}
    for name, module in built.named_modules():
        if not kl.is_conv1d(module):
            continue
        try:
            linear = kl.get_module(twin, name)
        except (AttributeError, KeyError):
            continue
        if not isinstance(linear, nn.Linear):
            continue
        leaf = plan.get(name)
        if leaf is not None and leaf.format in ("int8", "int8_dynamic"):
            # compressed-tensors attaches scales only to torch's nn.Linear and nn.Embedding
            # (`apply_quantization_config` skips any other module it is pointed at), so
            # codes saved for a Conv1D would load as raw integers: there is no int8 form
            if not dense:
                raise KmrError(error(
                    "KMR520", Span.unknown(name), f"layer `{name}` is a transformers Conv1D stored as {leaf.format}, "
                    "which a compressed-tensors checkpoint cannot hold",
                    "compressed-tensors quantizes only torch.nn.Linear and nn.Embedding modules (its loader "
                    "leaves any other module in float), and this architecture builds the layer as a Conv1D",
                    hint="pass --dense to write its dequantized int8 values as a float Conv1D (the same weights"
                         + (", float activations" if leaf.format == "int8_dynamic" else "")
                         + "; float32 storage), or leave the Conv1D layers in float"))
            densified[name] = leaf.format
            leaf.format = f"float32 (dense, from {leaf.format})"
        conv = type(module)(linear.out_features, linear.in_features)
        with torch.no_grad():
            conv.weight = nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)
            conv.bias = nn.Parameter(linear.bias.detach().clone() if linear.bias is not None
                                     else torch.zeros(linear.out_features), requires_grad=False)
        kl.set_module(twin, name, conv)
    return densified


def _refuse(layer: str, message: str, why: str) -> KmrError:
    return KmrError(error("KMR520", Span.unknown(layer), message, why,
                          hint="prune every layer by the same amount (one knob for the whole family), pass "
                               "--dense to pad the pruned heads/channels with zeros to a width the config states "
                               "(the same function, a larger file), or export with --format onnx"))


def _changed(twin: nn.Module, built: dict) -> dict[str, tuple[tuple, tuple]]:
    return {k: (tuple(v.shape), built[k]) for k, v in twin.state_dict().items()
            if k in built and tuple(v.shape) != built[k]}


def fit_config(twin: nn.Module, cls, plan: dict[str, Leaf], dense: bool) -> Fit:
    """`cls`: the transformers class the folder is loaded as (the twin's own, or the
    architecture a subclass of it extends)."""
    fit = Fit(copy.deepcopy(twin.config))
    built = _built(cls, fit.config)
    fit.densified = _conv1d_back(twin, built, plan, dense)
    changed = _changed(twin, {k: tuple(v.shape) for k, v in built.state_dict().items()})
    if not changed:
        return fit
    covered = _fit_heads(twin, fit, changed, dense)
    _fit_intermediate(fit, {k: v for k, v in changed.items() if k not in covered}, dense)
    for key, (have, want) in _changed(twin, _built_shapes(cls, fit.config)).items():
        layer = key.rpartition(".")[0]
        if not dense or len(have) != len(want) or any(h > w for h, w in zip(have, want)):
            raise _refuse(layer, f"layer `{layer}` has shape {have}; the config that describes the pruned model "
                                 f"builds {want}", "from_pretrained builds the architecture from config.json, "
                                 "and no config of this architecture holds this layer's pruned width")
        _pad(twin, plan, key, want)
        fit.padded[key] = (have, want)
    return fit


def _attention_keys(twin: nn.Module, att) -> set[str]:
    """The state keys of an attention's projections and output projection."""
    names = (*att.projections, att.output)
    return {k for k in twin.state_dict() if k.rpartition(".")[0] in names}


def _fit_heads(twin: nn.Module, fit: Fit, changed: dict, dense: bool) -> set[str]:
    """Set the config's head counts from the kept heads; the keys they explain."""
    found = list(heads.attentions(twin).values())
    keys = {att.module: _attention_keys(twin, att) for att in found}
    pruned = [att for att in found if keys[att.module] & set(changed)]
    if not pruned:
        return set()
    config = fit.config
    units = {att.module: att.units for att in found}
    widest, narrowest = max(units, key=units.get), min(units, key=units.get)
    uniform = units[widest] == units[narrowest]
    layout = pruned[0].layout
    if layout == "llama" and hasattr(config, "head_dim") and hasattr(config, "num_key_value_heads"):
        if not uniform and not dense:
            raise _refuse(narrowest, f"attention `{narrowest}` keeps {units[narrowest]} key/value heads and "
                                     f"`{widest}` {units[widest]}, but the config holds one head count for every "
                                     "layer", "`num_key_value_heads` and `num_attention_heads` apply to each layer")
        att = pruned[0]
        group, width = att.widths[0] // att.widths[1], att.widths[1]
        kept = units[widest]
        for name, value in (("num_key_value_heads", kept), ("num_attention_heads", kept * group),
                            ("head_dim", width)):
            before = getattr(config, name, None)
            if before != value:
                setattr(config, name, value)
                fit.changes[name] = (before, value)
    elif not dense:
        raise _refuse(narrowest, f"attention `{narrowest}` keeps {units[narrowest]} of its heads, and a "
                                 f"{config.model_type} config cannot describe fewer heads of the same width",
                      f"{config.model_type}'s head width is hidden_size / num_attention_heads "
                      "(transformers has no `pruned_heads` any more)")
    # (BERT layout with dense: the config keeps its heads; the heads are padded back)
    return set().union(*(keys[att.module] for att in found))


def _fit_intermediate(fit: Fit, changed: dict, dense: bool) -> None:
    """Set `intermediate_size` from the MLP widths the pruned layers have now."""
    config = fit.config
    field_name, size = _mlp_width(config)
    layers = getattr(config, "num_hidden_layers", None)
    if not isinstance(size, int) or not isinstance(layers, int):
        return      # the final shape comparison names the layer
    widths: dict[str, int] = {}
    where: dict[str, str] = {}
    for key, (have, want) in changed.items():
        block = _BLOCK.match(key)
        dims = [i for i, (h, w) in enumerate(zip(have, want)) if h != w]
        if block is None or len(have) != len(want) or [want[i] for i in dims] != [size] * len(dims):
            continue
        for i in dims:
            if widths.setdefault(block.group(1), have[i]) != have[i]:
                raise _refuse(key.rpartition(".")[0], f"layer `{key.rpartition('.')[0]}` has {have[i]} "
                              f"intermediate channels, other layers of its block {widths[block.group(1)]}",
                              "a block's MLP layers share one width")
        where[block.group(1)] = key.rpartition(".")[0]
    if not widths:
        return
    counts = list(widths.values()) + [size] * (layers - len(widths))     # unpruned blocks keep the original
    if len(set(counts)) > 1 and not dense:
        narrow = min(widths, key=widths.get)
        raise _refuse(where[narrow], f"layer `{where[narrow]}` has {widths[narrow]} intermediate channels and "
                      f"other layers {max(counts)}, but the config holds one `intermediate_size` for every layer",
                      "from_pretrained builds every layer from config.json")
    if max(counts) != size:
        fit.changes[field_name] = (getattr(config, field_name), max(counts))
        setattr(config, field_name, max(counts))


def _mlp_width(config) -> tuple[str, int | None]:
    """The config field that sizes the MLP, and its width: `intermediate_size`, or
    GPT-2's `n_inner` (None there means 4 x the hidden size)."""
    if isinstance(getattr(config, "intermediate_size", None), int):
        return "intermediate_size", config.intermediate_size
    if hasattr(config, "n_inner") and isinstance(getattr(config, "n_embd", None), int):
        return "n_inner", config.n_inner or 4 * config.n_embd
    return "intermediate_size", None


def _pad(twin: nn.Module, plan: dict[str, Leaf], key: str, shape: tuple[int, ...]) -> None:
    """Zero-pad one tensor of the twin at the end of each dimension (and the plan's
    codes and per-row scales of its layer: padded rows get scale 1, code 0)."""
    owner, _, attr = key.rpartition(".")
    mod = kl.get_module(twin, owner)
    old = getattr(mod, attr)
    new = torch.zeros(shape, dtype=old.dtype)
    new[tuple(slice(0, s) for s in old.shape)] = old.detach()
    setattr(mod, attr, nn.Parameter(new, requires_grad=False))
    if isinstance(mod, nn.Linear) and attr == "weight":
        mod.out_features, mod.in_features = shape
    elif kl.is_conv1d(mod) and attr == "weight":
        mod.nx, mod.nf = shape          # Conv1D's forward reshapes to nf outputs
    leaf = plan.get(owner)
    if leaf is not None and attr == "weight":
        leaf.weight = new.clone()
        if leaf.codes is not None:
            codes = torch.zeros(shape, dtype=leaf.codes.dtype)
            codes[tuple(slice(0, s) for s in leaf.codes.shape)] = leaf.codes
            leaf.codes = codes
        if leaf.scale is not None and shape[0] > leaf.scale.shape[0]:
            leaf.scale = torch.cat([leaf.scale.reshape(-1), torch.ones(shape[0] - leaf.scale.numel())])


__all__ = ["Fit", "fit_config"]
