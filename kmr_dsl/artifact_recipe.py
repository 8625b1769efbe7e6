"""The recipe a KMR artifact's header holds (how to rebuild each layer), written in one
place, and bounds of its length for the `size` cost model (no torch).

Contract: `recipe_json(base, layers, info)` is the recipe exactly as
kmr_dsl.runtime.artifact stores it, the one writer of it (`base_dict` its loader call).
It has a part the verifier knows exactly (format, loader call, info:
`recipe_fixed_chars`) and per-layer configs it bounds (`config_chars_low`,
`linear_config_chars_high`), as it bounds each tensor entry
(kmr_dsl.artifact_layout.entry_chars_low; the offsets' digits and the padding are not
known before the file is written). `INPUT_SCALE` and its companions name an explicit
input scale's entry and wrapper config. kmr_dsl.artifact_layout has the rest of the
file's layout.
"""

from __future__ import annotations

import json

# 2: 4- and 2-bit codes are on the zero-preserving midrise grid (runtime.quant). A
# format-1 file is still read when it holds no 4- or 2-bit layer (nothing else changed).
# Code -8 (-2 at 2 bits), level -15/2 (-3/2) steps, was added within format 2: older
# format-2 files hold a subset of the codes and decode the same.
FORMAT_VERSION = 2


def base_dict(base) -> dict | None:
    """The recipe's `base`: the loader call (a LoaderSpec or its dict) as JSON data.

    The program's folder is not recorded: the file's bytes (and so `size`, which the
    cost model counts exactly) do not depend on where the program lives, and a file
    shared with others does not carry the path of its author's folder. `runtime.
    artifact.load` takes the folder from its caller (`base_dir=`) or, trusted, finds
    the loader's module beside the artifact (its folder or the one above: `out/` in the
    program folder). Files written before this still record one; `load` reads it.
    """
    if base is None:
        return None
    if not isinstance(base, dict):
        base = {"kind": base.kind, "args": list(base.args), "kwargs": [list(p) for p in base.kwargs]}
    return {k: v for k, v in base.items() if k != "base_dir"}


def recipe_json(base, layers: dict, info: dict) -> str:
    """The recipe exactly as the writer stores it: compact JSON, sorted keys."""
    recipe = {"format": FORMAT_VERSION, "base": base_dict(base), "layers": layers, "info": info}
    return json.dumps(recipe, separators=(",", ":"), sort_keys=True, default=str)


def recipe_fixed_chars(base, info: dict) -> int:
    """Escaped characters of the recipe with no layers (`"layers":{}`): format, base and
    info exactly. Each layer adds `layer_entry_chars` (its `"NAME":CONFIG`) and, from the
    second on, a comma."""
    return len(json.dumps(recipe_json(base, {}, info))) - 2


def string_chars(text: str) -> int:
    """Escaped characters of `text` as a JSON string key inside the recipe string: its
    quotes and escapes, escaped once more (`"a"` is `\\"a\\"` in the header)."""
    return len(json.dumps(json.dumps(text))) - 2


def _config_chars(cfg: dict) -> int:
    """Escaped characters of one layer config inside the header."""
    return len(json.dumps(json.dumps(cfg, separators=(",", ":"), sort_keys=True))) - 2


# A Linear with an explicit input scale (`ScaledLinear`: awq's or smoothquant's vector where
# no normalization absorbs it) stores the vector raw, `NAME.input_scale` (fp32, one per
# input), and wraps its weight's config as `{"linear":CONFIG,"type":"ScaledLinear"}`; its
# weight's entries are named `NAME.linear.weight...`. The `size` model's upper end adds
# the wrapper's characters and INPUT_SCALE_NAME_CHARS per entry of the weight and bias
# (at most nine: per factor of a factorized layer bitmap and values, scale, zero point;
# the bias).
INPUT_SCALE = "input_scale"
INPUT_SCALE_WRAPPER = "linear"
SCALED_CONFIG_CHARS = _config_chars({"linear": {}, "type": "ScaledLinear"}) - _config_chars({})
INPUT_SCALE_NAME_CHARS = len(INPUT_SCALE_WRAPPER) + 1
INPUT_SCALE_ENTRIES = 9

# What a layer's recipe entry holds at least, whatever form it takes: its escaped
# name, the colon, and the shortest config its kind can have. The lower end of the
# `size` meter (verify/layer_cost.py) counts this. Any layer may be `{"type":"keep"}` (a
# module codec.describe does not know is kept raw), except a Linear: every form of it
# (`Linear`, `HalfLinear`, `QuantLinear`, `DynamicLinear`, the static int8 one, a
# factorized or adapted one, each with optional flags) holds at least the plain
# `{"bias":B,"in":I,"out":O,"type":"Linear"}` with its own bias flag and the digits
# of its dimensions (tests/verify/test_cost.py checks every form).
MIN_CONFIG_CHARS = _config_chars({"type": "keep"})


def name_chars(name: str) -> int:
    """Escaped characters of a layer's `"NAME":` in the recipe."""
    return string_chars(name) + 1


def config_chars_low(kind: str | None, bias: bool, in_digits: int, out_digits: int) -> int:
    """A lower bound of the escaped characters of a layer's config (see MIN_CONFIG_CHARS);
    `in_digits`, `out_digits`: lower bounds of its dimensions' digits."""
    if kind != "Linear":
        return MIN_CONFIG_CHARS
    return _config_chars({"bias": bool(bias), "in": 10 ** (in_digits - 1), "out": 10 ** (out_digits - 1),
                          "type": "Linear"})


# The upper end of a Linear's config, by the width its weight is stored at: the longest
# form of that width with every flag any rule sets (masked, frozen, a truncated rank,
# a dtype), its dimensions at their most digits and its floats (a static int8 layer's
# scales, an adapter's scaling) at the longest a float prints (24 characters). The
# `size` model's upper end counts this (other kinds: config_chars + CONFIG_MARGIN).
_LONGEST_FLOAT = -2.2250738585072014e-308


def _linear_forms(bias: bool, inn: int, out: int, width: str, top: bool = True, ranked: bool = True,
                  dtype: str = "float32") -> list[dict]:
    """Every form a Linear's config can take, flags included (`frozen` is written on the
    logical layer's own config only: not on a factor's or an adapter's base; `rank`,
    lowrank's truncated rank of one dense matrix, never on a factor: `ranked` False)."""
    flags = {"masked": True, **({"rank": max(inn, out)} if ranked else {}), **({"frozen": True} if top else {})}
    if width == "float":
        return _linear_forms(bias, inn, out, "f32", top, ranked, "") + \
            _linear_forms(bias, inn, out, "f16", top, ranked)
    if width == "f32":
        # a 32-bit weight keeps the model's own dtype, float32 or float64 (runtime.layers
        # .leaf_bits), which codec.describe names unless it is float32
        return [{"type": "Linear", "in": inn, "out": out, "bias": bias,
                 **({"dtype": "float64"} if dtype != "float32" else {}), **flags}]
    if width == "f16":
        # quantize(bits = 16) makes a HalfLinear (no dtype); a 16-bit model's own Linear
        # names its dtype
        return [{"type": "HalfLinear", "in": inn, "out": out, "bias": bias, **flags},
                {"type": "Linear", "in": inn, "out": out, "bias": bias, "dtype": "bfloat16", **flags}]
    quant = {"type": "QuantLinear", "bits": 8 if width == "int8" else 4, "shape": [out, inn], "bias": bias,
             "group_size": inn, **flags}
    if width != "int8":
        return [quant]
    return [quant, {"type": "DynamicLinear", "in": inn, "out": out, "bias": bias, **flags},
            {"type": "StaticLinear", "shape": [out, inn], "bias": bias, "input": [_LONGEST_FLOAT, -128],
             "output": [_LONGEST_FLOAT, -128], **flags}]


def _longest(forms: list[dict]) -> dict:
    return max(forms, key=_config_chars)


def linear_config_chars_high(bias: bool, in_digits: int, out_digits: int, width: str,
                             factorized: bool = False, adapted: bool = False, dtype: str = "float32") -> int:
    """An upper bound of the escaped characters of a Linear's config whose weight is
    stored `width` ("f32": 32 bits, "f16": 16 bits, "float": either, "int8", "low": 4/2
    bits), plain, factorized or with an unmerged adapter; `in_digits`, `out_digits`: the
    most digits of its dimensions; `dtype`: the model's own dtype of the layer's weight
    (what a 32-bit weight is stored at)."""
    inn, out = 10 ** in_digits - 1, 10 ** out_digits - 1
    if factorized:
        # codec.describe: the two factors' configs and `frozen`; a mask or a truncated
        # rank is a factor's (a leaf's) attribute, and a factor is never truncated alone
        # (lowrank replaces both, kmr_dsl/rules/lowrank.py)
        r = min(inn, out)
        cfg = {"type": "FactorizedLinear", "frozen": True,
               "first": _longest(_linear_forms(False, inn, r, width, top=False, ranked=False, dtype=dtype)),
               "second": _longest(_linear_forms(bias, r, out, width, top=False, ranked=False, dtype=dtype))}
    else:
        cfg = _longest(_linear_forms(bias, inn, out, width, top=not adapted, dtype=dtype))
    if adapted:
        cfg = {"type": "LoRALinear", "rank": max(inn, out), "scaling": _LONGEST_FLOAT, "base": cfg,
               "masked": True, "frozen": True}
    return _config_chars(cfg)


__all__ = [
    "FORMAT_VERSION", "INPUT_SCALE", "INPUT_SCALE_ENTRIES", "INPUT_SCALE_NAME_CHARS", "INPUT_SCALE_WRAPPER",
    "MIN_CONFIG_CHARS", "SCALED_CONFIG_CHARS", "base_dict", "config_chars_low", "linear_config_chars_high",
    "name_chars", "recipe_fixed_chars", "recipe_json", "string_chars",
]
