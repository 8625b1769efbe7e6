"""Quantization schemes of a recipe (preset names and config groups) as KMR arguments.

Contract: `quant_specs(cx, options, span)` gives one (QuantSpec, Selector) per preset or
config group that has a KMR equivalent and reports the rest (KMR532, at the key);
`quant_args(spec, weight_only_rule)` writes a spec as the arguments of `quantize`
(or, for gptq/awq, of a weight-only rule). Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from kmr_dsl.diagnostics import Span, warning
from kmr_dsl.importer.context import DATA, Ctx, Enum, Selector, layer_pattern, selector
from kmr_dsl.importer.recipe import Node

@dataclass(frozen=True)
class QuantSpec:
    bits: int
    group_size: int = 0
    symmetric: bool = True
    # None (weight only) | "dynamic" (per tensor at each call) | "token" (dynamic, one
    # scale per token: `activations = token`) | "static" (calibrated per-tensor ranges)
    activations: str | None = None
    targets: tuple[str, ...] = ()


PRESETS = {  # llm-compressor / compressed-tensors preset schemes with a KMR equivalent
    # W8A8 (= INT8): int8 per-channel symmetric weights, int8 dynamic per-token symmetric activations
    "W8A8": QuantSpec(8, 0, True, "token"),
    "INT8": QuantSpec(8, 0, True, "token"),
    "W8A16": QuantSpec(8, 0, True, None),
    "W4A16": QuantSpec(4, 128, True, None),
    "W4A16_ASYM": QuantSpec(4, 128, False, None),
}


def quant_specs(cx: Ctx, opts: Node, span: Span) -> list[tuple[QuantSpec, Selector]]:
    """The weight (and activation) quantization a Quantization/GPTQ/AWQ modifier asks for."""
    out = []
    base = selector(cx, opts)
    scheme = cx.node(opts, "scheme")
    if scheme is not None:
        plain = scheme.plain()
        items = plain.items() if isinstance(plain, dict) else [(plain, None)]
        for name, targets in items:
            spec = PRESETS.get(str(name).upper())
            if spec is None:
                cx.diags.append(warning("KMR532", scheme.span, f"scheme `{name}` has no KMR equivalent",
                                        "KMR quantizes to integers: W8A8, W8A16, W4A16, W4A16_ASYM map; "
                                        "floating-point (FP8, NVFP4, MXFP4) and mixed W4A8 schemes do not"))
                continue
            names = tuple(layer_pattern(t) for t in targets) if targets is not None else None
            sel = base if names is None else Selector(base.kinds, names, base.exclude)
            out.append((spec, sel))
    groups = cx.node(opts, "config_groups")
    if groups is not None and isinstance(groups.value, dict):
        for gname, group in groups.value.items():
            spec = _group(cx, group, groups.keys[gname])
            if spec is not None:
                gsel = selector(Ctx(cx.recipe, cx.stage, cx.diags), group)
                out.append((spec, Selector(gsel.kinds, gsel.names, base.exclude + gsel.exclude)))
    return out


def _group(cx: Ctx, group: Node, span: Span) -> QuantSpec | None:
    w = group.get("weights")
    a = group.get("input_activations")
    for key, node in (group.value or {}).items():
        if key not in ("weights", "input_activations", "targets", "ignore", "output_activations", "format"):
            cx.approx(group.keys[key], f"config group option `{key}` has no KMR equivalent")
    if group.get("output_activations") is not None and group.get("output_activations").value is not None:
        cx.approx(group.keys["output_activations"], "output activation quantization has no KMR equivalent")
    if w is None or not isinstance(w.value, dict):
        cx.approx(span, "a config group without `weights` has no KMR equivalent (KMR quantizes weights)")
        return None
    wa = w.plain()
    if wa.get("type", "int") != "int":
        cx.approx(w.span, f"weights of type `{wa.get('type')}` have no KMR equivalent (KMR quantizes to integers)")
        return None
    bits = int(wa.get("num_bits", 8))
    if bits not in (2, 4, 8):
        cx.approx(w.span, f"{bits}-bit weights have no KMR equivalent (2, 4 or 8 bits)")
        return None
    strategy = wa.get("strategy", "tensor")
    group_size = int(wa.get("group_size") or 0) if strategy == "group" else 0
    if strategy in ("tensor", "block", "tensor_group"):
        cx.approx(w.keys.get("strategy", w.span), f"weight strategy `{strategy}`: KMR scales each output row "
                  "(channel) or each group of a row", "written as per-channel scales")
    for key in wa:
        if key not in ("num_bits", "type", "symmetric", "strategy", "group_size", "dynamic", "observer", "actorder",
                       "block_structure", "observer_kwargs"):
            cx.approx(w.keys[key], f"weights option `{key}` has no KMR equivalent")
    if wa.get("actorder"):
        cx.approx(w.keys["actorder"], "`actorder` inside weights: written as gptq's act_order where GPTQ runs")
    symmetric = bool(wa.get("symmetric", True))
    act = _activations(cx, a, bits, group_size, symmetric) if a is not None and a.value is not None else None
    return QuantSpec(bits, group_size, symmetric, act)


def _activations(cx: Ctx, a: Node, bits: int, group_size: int, weights_symmetric: bool) -> str | None:
    """`input_activations` as `quantize`'s scheme and `activations`: what KMR has is
    written, the rest reported (KMR532) with what was written instead."""
    aa = a.plain()
    for key in aa:
        if key not in ("num_bits", "type", "symmetric", "strategy", "dynamic", "observer", "observer_kwargs"):
            cx.approx(a.keys[key], f"input activations option `{key}` has no KMR equivalent")
    if aa.get("type", "int") != "int" or int(aa.get("num_bits", 8)) != 8:
        cx.approx(a.span, "only 8-bit integer activations have a KMR equivalent", "written weight-only")
        return None
    if bits != 8 or group_size:
        # `quantize` runs activations through int8 kernels with per-row 8-bit weights only
        cx.approx(a.span, f"8-bit activations with {bits}-bit weights"
                  f"{' in groups' if group_size else ''}: KMR quantizes activations only with 8-bit "
                  "per-channel weights (W8A8)", "written weight-only")
        return None
    strategy = str(aa.get("strategy") or "tensor")
    dynamic = bool(aa.get("dynamic", False))
    where = a.keys.get("strategy", a.span)
    if strategy == "token" and dynamic:
        # KMR's per-token activations are symmetric exactly when the weights are
        asked = bool(aa.get("symmetric", True))
        if asked != weights_symmetric:
            cx.approx(a.keys.get("symmetric", a.span),
                      f"{'symmetric' if asked else 'asymmetric'} per-token activations with "
                      f"{'symmetric' if weights_symmetric else 'asymmetric'} weights: KMR's per-token activations "
                      "follow the weights' symmetry",
                      f"written as {'symmetric' if weights_symmetric else 'asymmetric'} per-token activations")
        return "token"
    if strategy != "tensor":
        cx.approx(where, f"activation strategy `{strategy}`{'' if dynamic else ' (static)'}: KMR quantizes "
                  "activations per tensor, or per token dynamically", "written as per-tensor activations")
    if aa.get("symmetric", True):
        # torch's per-tensor int8 activations (dynamic and static) are affine quint8
        cx.approx(a.keys.get("symmetric", a.span), "symmetric per-tensor activations: KMR's per-tensor "
                  "activations (dynamic and static) are affine (quint8, a zero point)",
                  "written as affine per-tensor activations")
    return "dynamic" if dynamic else "static"


def quant_args(spec: QuantSpec, weight_only_rule: bool) -> list[tuple[str, object]]:
    args: list[tuple[str, object]] = [("bits", spec.bits)]
    if not weight_only_rule:
        scheme = {None: "weight_only", "dynamic": "dynamic", "token": "dynamic", "static": "static"}[spec.activations]
        if scheme != "dynamic":
            args.append(("scheme", Enum(scheme)))
    if spec.group_size:
        args.append(("group_size", spec.group_size))
    elif weight_only_rule:
        args.append(("group_size", 0))   # gptq/awq default to 128: say per-channel explicitly
    if not spec.symmetric:
        args.append(("symmetric", False))
    if not weight_only_rule:
        args += activation_args(spec)
    return args


def activation_args(spec: QuantSpec) -> list[tuple[str, object]]:
    """`quantize`'s activation arguments beyond bits, scheme and symmetric."""
    if spec.activations == "token":
        return [("activations", Enum("token"))]
    if spec.activations == "static":
        return [("calibration", Enum(DATA))]
    return []


__all__ = ["PRESETS", "QuantSpec", "activation_args", "quant_args", "quant_specs"]
