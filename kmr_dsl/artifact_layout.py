"""The byte layout of a KMR artifact, as pure arithmetic (no torch).

Contract: `kmr_dsl.runtime.artifact.save` writes exactly what this module predicts for
the tensor data, and the verifier's `size` cost model uses the same functions, so the
analytic `size` meter and the measured one cannot drift apart. docs/artifact.md is the
prose version of this file.

A weight tensor of a matrix layer (Linear, Conv1d/2d, Embedding, and the factors of a
factorized Linear) with `numel` elements, `rows` output rows (out_features, out_channels
or num_embeddings), storage width `bits` and `nnz` non-zero values is stored either
dense or sparse, whichever makes the file smaller, its header entries counted
(`is_sparse`; dense on a tie). The data of each form:

    dense  = ceil(numel * bits / 8)                      + scales
    sparse = ceil(numel / 8) + ceil(nnz * bits / 8)      + scales
    scales = 4 * rows * groups if bits <= 8 else 0      (one fp32 scale per row, or per
                                                         group of `group_size` inputs)
           + rows * groups     if asymmetric            (one int8 zero point per scale,
                                                         `quantize(symmetric = false)`)

(`rows` in the functions below is the number of scales, rows * groups.) On the sparse
form of an asymmetric weight the bitmap marks the codes that differ from their zero
point (the non-zero weights); the zero points are stored either way.

Everything else (biases, norms, adapters, non-layer parameters and buffers) is stored
raw: `numel * itemsize` of its dtype (bias of a 16-bit layer: 2 bytes per element;
biases of integer layers: fp32).

The file is a standard safetensors file: 8 bytes of header length, the JSON header
(padded with spaces to a multiple of 8), then the data. `header_bytes_estimate` predicts
the first two parts from the stored tensor names; it is within a few hundred bytes.
The recipe inside the header (its writer and the bounds of its length) is
kmr_dsl.artifact_recipe's.
"""

from __future__ import annotations

import json
from typing import Iterable, Sequence

FLOAT_BITS = (32, 16)
INT_BITS = (8, 4, 2)
STORAGE_BITS = FLOAT_BITS + INT_BITS

# safetensors dtype names for the packed payloads, by storage width
VALUE_DTYPE = {32: "F32", 16: "BF16", 8: "I8", 4: "U8", 2: "U8"}


def nbytes(count: int, bits: int) -> int:
    """Bytes to hold `count` values of `bits` bits, packed: ceil(count * bits / 8)."""
    return -(-count * bits // 8)


def scale_bytes(rows: int, bits: int, zeros: bool = False) -> int:
    """Integer formats carry one fp32 scale per output row (or group) and, when
    asymmetric (`zeros`), one int8 zero point per scale; float formats none."""
    return (4 + (1 if zeros else 0)) * rows if bits <= 8 else 0


def dense_bytes(numel: int, rows: int, bits: int, zeros: bool = False) -> int:
    return nbytes(numel, bits) + scale_bytes(rows, bits, zeros)


def sparse_bytes(numel: int, rows: int, bits: int, nnz: int, zeros: bool = False) -> int:
    return nbytes(numel, 1) + nbytes(nnz, bits) + scale_bytes(rows, bits, zeros)


def data_sparse(numel: int, rows: int, bits: int, nnz: int) -> bool:
    """Whether the sparse form's data is strictly smaller than the dense form's: the
    writer's whole choice before it counted the header entries (`is_sparse`; the format
    did not change), and what `tensor_bytes` (data only) takes."""
    return sparse_bytes(numel, rows, bits, nnz) < dense_bytes(numel, rows, bits)


def tensor_bytes(numel: int, rows: int, bits: int, nnz: int, zeros: bool = False) -> int:
    """Data bytes of one matrix-layer weight tensor, the smaller of dense and sparse (the
    writer's form whenever the two forms' data differ by more than their header entries:
    `is_sparse`)."""
    if bits not in STORAGE_BITS:
        raise ValueError(f"bits must be one of {STORAGE_BITS}, not {bits}")
    if not 0 <= nnz <= numel:
        raise ValueError(f"nnz {nnz} outside [0, {numel}]")
    return min(dense_bytes(numel, rows, bits, zeros), sparse_bytes(numel, rows, bits, nnz, zeros))


# ---------------------------------------------------------------- entry names
# The one definition of every stored tensor's name: the writer and reader
# (runtime/codec.py), the `size` cost model (verify/cost.py) and the tests use these.
# A weight `W` (e.g. `fc1.weight`) is stored as one of the forms below; a factorized
# Linear `L` stores `L.first.weight` and `L.second.weight` (+ `L.second.bias`); an
# unmerged LoRA layer adds `L.lora_A` and `L.lora_B`.
Q, SCALE, BITMAP, VALUES, ZERO_POINT = "q", "scale", "bitmap", "values", "zero_point"
FIRST, SECOND = "first", "second"
LORA_A, LORA_B = "lora_A", "lora_B"


def entry(weight_name: str, part: str) -> str:
    """The stored name of one part (Q, SCALE, BITMAP, VALUES, ZERO_POINT) of a weight."""
    return f"{weight_name}.{part}"


def factor_weight(layer: str, which: str) -> str:
    """`L.first.weight` / `L.second.weight` of a factorized layer."""
    return f"{layer}.{which}.weight"


def bias_of(weight_name: str) -> str:
    """`L.bias` for a weight `L.weight`."""
    return weight_name[:-len(".weight")] + ".bias"


def weight_entry_names(weight_name: str, bits: int, sparse: bool, zeros: bool = False) -> list[str]:
    """Names of the safetensors entries that hold one weight tensor.

    dense float: `W`; dense int: `W.q`, `W.scale`; sparse: `W.bitmap`, `W.values`
    (+ `W.scale` for int formats); an asymmetric int weight adds `W.zero_point` (int8,
    flat, one per scale).
    """
    if sparse:
        names = [entry(weight_name, BITMAP), entry(weight_name, VALUES)]
    elif bits <= 8:
        names = [entry(weight_name, Q)]
    else:
        return [weight_name]
    if bits <= 8:
        names.append(entry(weight_name, SCALE))
        if zeros:
            names.append(entry(weight_name, ZERO_POINT))
    return names


# ---------------------------------------------------------------- the writer's form
# The writer stores a weight sparse only when that makes the FILE smaller: the sparse
# form's data and its two header entries (`W.bitmap`, `W.values`) against the dense
# form's data and its one entry (`W` or `W.q`), each entry counted exactly (its JSON
# name, dtype name, shape and separators) with both data offsets written at `digits`
# digits, the digits of an upper bound of the file's data size (every offset in the file
# is at most that size): every weight's dense data and the raw tensors (`is_sparse` picks
# the sparse form only where its data is smaller). The scales and zero points are the same entries in both forms
# and do not enter the choice. So a stored weight never takes more bytes than its dense
# form would (the entries' real offsets have at most `digits` digits, and the sparse
# form has two offsets more), which is what the `size` meter's upper end counts when it
# does not know the weight's density (verify/file_bytes.py). Older files chose by the data
# alone (`data_sparse`); the reader takes either form whatever the choice.
DTYPE_NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int8": "I8",
               "uint8": "U8"}
_ENTRY_SYNTAX = len(':{"dtype":"","shape":[],"data_offsets":[,]},')


def entry_chars(name: str, dtype: str, shape: Sequence[int], digits: int) -> int:
    """The exact characters of one tensor's entry in the safetensors header (its name as a
    JSON string, dtype name, shape and the comma that separates it from the next), with
    both data offsets written at `digits` digits."""
    return (len(json.dumps(name, ensure_ascii=False).encode()) + _ENTRY_SYNTAX + len(dtype)
            + len(",".join(str(int(n)) for n in shape)) + 2 * digits)


def _numel(shape: Sequence[int]) -> int:
    count = 1
    for n in shape:
        count *= int(n)
    return count


def form_entries(name: str, shape: Sequence[int], bits: int, nnz: int, sparse: bool,
                 dtype: str = "F32") -> list[tuple[str, str, tuple[int, ...]]]:
    """(entry name, dtype name, shape) of the entries that hold a weight's values in one
    form: dense float `W` at its dtype and shape; dense int `W.q` (8 bits: I8 at the
    weight's shape; 4 and 2 bits: packed U8, flat); sparse `W.bitmap` (U8) and `W.values`
    (a float weight's dtype; I8; packed U8). `shape`: the stored weight's shape."""
    numel = _numel(shape)
    if sparse:
        values = (dtype, (nnz,)) if bits >= 16 else ("I8", (nnz,)) if bits == 8 else ("U8", (nbytes(nnz, bits),))
        return [(entry(name, BITMAP), "U8", (nbytes(numel, 1),)), (entry(name, VALUES), *values)]
    if bits >= 16:
        return [(name, dtype, tuple(int(n) for n in shape))]
    if bits == 8:
        return [(entry(name, Q), "I8", tuple(int(n) for n in shape))]
    return [(entry(name, Q), "U8", (nbytes(numel, bits),))]


def form_bytes(name: str, shape: Sequence[int], bits: int, nnz: int, sparse: bool, digits: int,
               dtype: str = "F32") -> int:
    """Data bytes and header characters of the entries one form stores (`form_entries`);
    `bits`: the stored width (a float weight's element size in bits)."""
    numel = _numel(shape)
    data = nbytes(numel, 1) + nbytes(nnz, bits) if sparse else nbytes(numel, bits)
    return data + sum(entry_chars(n, d, s, digits) for n, d, s in form_entries(name, shape, bits, nnz, sparse, dtype))


def is_sparse(name: str, shape: Sequence[int], bits: int, nnz: int, digits: int, dtype: str = "F32") -> bool:
    """The writer's choice: sparse only when its data and entries are strictly fewer
    bytes than the dense form's (dense on a tie). Its two entries are always longer than
    the dense form's one, so its data is then smaller too (`data_sparse`, said outright):
    the file's data is at most every weight's dense data, which bounds `digits`."""
    return data_sparse(_numel(shape), 1, bits, nnz) and \
        form_bytes(name, shape, bits, nnz, True, digits, dtype) < form_bytes(name, shape, bits, nnz, False, digits, dtype)


def offset_digits(data_bound: int) -> int:
    """Digits of the largest data offset of a file whose data is at most `data_bound` bytes."""
    return len(str(max(1, int(data_bound))))


# ---------------------------------------------------------------- header
# One entry of the safetensors JSON header reads
#   "NAME":{"dtype":"F32","shape":[128,64],"data_offsets":[1234,5678]},
# Its fixed part is ENTRY_FIXED characters; the shape and the two offsets add their
# digits. Offsets are estimated with the digits of the total data size.
ENTRY_FIXED = len('"":{"dtype":"","shape":[],"data_offsets":[,]},')
DTYPE_CHARS = 3            # F32, U8, I8, BF16: 3 on average
MAX_DTYPE_CHARS = 4        # BF16, F64: the longest a KMR file holds
METADATA_FIXED = len('{"__metadata__":{"format":"pt","kmr_recipe":""},}')
# Per logical layer the recipe holds `"NAME":{...config...}`; escaped inside the header
# string a plain layer's config takes about LAYER_CONFIG_CHARS characters besides its
# name (measured: Linear 63, DynamicLinear 70, a masked int4 QuantLinear 92), and a
# factorized one about FACTORIZED_CONFIG_CHARS (two Linear configs, 182 measured).
LAYER_CONFIG_CHARS = 75
FACTORIZED_CONFIG_CHARS = 185
# kinds whose configs are longer or shorter than a Linear's (measured escaped lengths of
# `codec.describe` plus the ~15 characters a quantized form adds: Conv2d 139, Conv1d
# 130, BatchNorm 99, LayerNorm 84, GroupNorm 82, Embedding 71)
CONFIG_CHARS_BY_KIND = {"Conv2d": 155, "Conv1d": 145, "BatchNorm1d": 100, "BatchNorm2d": 100,
                        "LayerNorm": 85, "GroupNorm": 83, "Embedding": 85}


def config_chars(kind: str | None) -> int:
    """The estimated recipe characters of a plain layer of this kind (besides its name)."""
    return CONFIG_CHARS_BY_KIND.get(kind or "", LAYER_CONFIG_CHARS)


# What the `size` cost model's upper end adds so that it is never below the file (a
# budget proved with it holds when run; a Linear's config is bounded by
# `linear_config_chars_high` instead of CONFIG_MARGIN / ADAPTER_CONFIG_CHARS). Measured on generated models: a layer's
# config grows with its form (masked +16, quantized +13..30, wider dimensions' digits),
# an unmerged LoRA layer's config is ~92 characters longer than its base's, every
# packed tensor rounds its bytes up (<= 1 B per ceil, <= 2 ceils per stored form), and
# the header is padded to a multiple of 8 (<= 7 B).
CONFIG_MARGIN = 40           # per layer, over config_chars / FACTORIZED_CONFIG_CHARS
ASYMMETRIC_CONFIG_CHARS = 20  # `\"symmetric\":false,` in the config of an asymmetric integer leaf
ADAPTER_CONFIG_CHARS = 130   # per layer with an unmerged adapter
CEIL_BYTES = 4               # per matrix layer (two stored tensors when factorized)
PADDING_BYTES = 7
# the format version, the base loader call and the info object, when the loader call is
# not known (header_bytes_estimate without recipe_chars; the cost model counts them
# exactly with `recipe_fixed_chars`): 181 characters for the digits example
RECIPE_FIXED_CHARS = 181


# A lower bound of one tensor entry's header characters: the fixed part, its name, the
# shortest dtype (`U8`, `I8`), one digit per offset, one per dimension with its commas.
MIN_DTYPE_CHARS = 2


def entry_chars_low(name: str, ndim: int) -> int:
    return ENTRY_FIXED + len(name) + MIN_DTYPE_CHARS + 2 + max(0, 2 * ndim - 1)


def header_bytes_estimate(
    tensors: Iterable[tuple[str, int]],
    layer_names: Sequence[str] = (),
    data_bytes: int = 0,
    recipe_chars: int | None = None,
    factorized: Iterable[str] = (),
    kinds: dict[str, str] | None = None,
) -> int:
    """Bytes before the tensor data: the 8-byte length plus the padded JSON header.

    tensors: (stored entry name, number of dimensions) for every entry in the file
    (`weight_entry_names` for layer weights; a dense float weight keeps its own
    dimensions, every packed or sparse entry has one); layer_names: the logical layers
    of the recipe, `factorized` those of them that are factorized; data_bytes: the
    total data size (for the width of the offsets); recipe_chars: the recipe's escaped
    length if known exactly (`escaped_json_chars`), else estimated from the layers and
    their `kinds` (layer -> kind; a layer not in it counts as a Linear).
    """
    digits = len(str(max(1, data_bytes)))
    header = METADATA_FIXED
    for name, ndim in tensors:
        # each dimension is ~3 digits plus a comma
        header += ENTRY_FIXED + len(name) + DTYPE_CHARS + 2 * digits + max(1, 4 * ndim - 1)
    if recipe_chars is None:
        factorized = set(factorized)
        recipe_chars = RECIPE_FIXED_CHARS + sum(
            len(n) + 4 + (FACTORIZED_CONFIG_CHARS if n in factorized else config_chars((kinds or {}).get(n)))
            for n in layer_names)
    header += recipe_chars
    return 8 + header + (-header) % 8


def escaped_json_chars(obj) -> int:
    """Length of `obj` as the compact JSON the writer uses, escaped into a JSON string."""
    text = json.dumps(obj, separators=(",", ":"), sort_keys=True)
    return len(json.dumps(text)) - 2


__all__ = [
    "ADAPTER_CONFIG_CHARS", "ASYMMETRIC_CONFIG_CHARS", "BITMAP", "CEIL_BYTES", "CONFIG_MARGIN", "DTYPE_NAMES",
    "FIRST", "FLOAT_BITS", "INT_BITS", "LORA_A", "LORA_B", "MAX_DTYPE_CHARS", "PADDING_BYTES", "Q", "SCALE",
    "SECOND", "STORAGE_BITS", "VALUES", "VALUE_DTYPE", "ZERO_POINT", "bias_of", "config_chars", "data_sparse",
    "dense_bytes", "entry", "entry_chars", "entry_chars_low", "escaped_json_chars", "factor_weight", "form_bytes",
    "form_entries", "header_bytes_estimate", "is_sparse", "nbytes", "offset_digits", "scale_bytes", "sparse_bytes",
    "tensor_bytes", "weight_entry_names",
]
