"""The artifact file's bytes as sympy expressions: header entries, one weight tensor in
either form, and the header's part that no state changes.

Contract: `entry_bytes`, `tensor_data_bytes` and `tensor_bytes` are the sympy form of
kmr_dsl.artifact_layout's formulas (header_bytes_estimate, tensor_bytes, is_sparse), read
by the `size` meter's per-layer terms (verify/layer_cost.py); `offset_digits` and
`fixed_header` give a model's header constants to the meter assembly (verify/cost.py).
Each is an upper end, or with `low` a lower end (verify/cost.py says why `size` is a
range). Int formats add a `.scale` entry, sparse ones a second entry, which is why each
branch of the min carries its own header bytes.
The writer picks a weight's form by its bytes in the file, header entries included
(artifact_layout.is_sparse), so the upper end is min(dense, sparse) with each form's
own entries, whatever the density in its range.
"""

from __future__ import annotations

from fractions import Fraction

import sympy as sp

from kmr_dsl import artifact_layout as layout
from kmr_dsl import artifact_recipe
from kmr_dsl.core.state import scale_groups
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify.state import PipelineModel


_EIGHTH = Fraction(1, 8)


def entry_bytes(name: str, ndim, digits: int, low: bool = False, shape_chars: int | None = None,
                dtype_chars=layout.MAX_DTYPE_CHARS):
    """Header characters of one safetensors entry (artifact_layout.header_bytes_estimate's
    formula); `low`: a lower bound instead (artifact_layout.entry_chars_low).
    `shape_chars` (upper end): the most characters the entry's shape can print (from the
    baseline's dimensions, which no rule grows): the entry is then bounded rather than
    estimated, with `dtype_chars` for its dtype's name (at most BF16's 4)."""
    if low:
        if isinstance(ndim, int):
            return layout.entry_chars_low(name, ndim)
        return A.add(layout.entry_chars_low(name, 1) - 1, A.mul(2, ndim))
    if shape_chars is not None:
        return A.add(layout.ENTRY_FIXED + len(name) + 2 * digits + shape_chars, dtype_chars)
    fixed = layout.ENTRY_FIXED + len(name) + layout.DTYPE_CHARS + 2 * digits
    if isinstance(ndim, int):
        return fixed + max(1, 4 * ndim - 1)
    return A.add(fixed - 1, A.mul(4, ndim))


def number_chars(n: int) -> int:
    return len(str(max(1, int(n))))


def shape_chars(dims) -> int:
    """The characters of a shape whose dimensions are at most `dims`."""
    return sum(number_chars(d) for d in dims) + max(0, len(dims) - 1)


def _scale_count(numel, rows, group_size):
    """fp32 scales of an integer weight: one per row, or per group of a row's inputs."""
    if A.is_number(group_size) and group_size == 0:
        return rows
    # max(g, 1): the grouped branch must stay finite where the ite takes the other one
    groups = scale_groups(A.div(numel, rows), A.max_(group_size, 1), A.ceil_)
    return A.ite(A.compare("==", group_size, 0), rows, A.mul(rows, groups))


def _zero_points(is_int, symmetric):
    """The condition under which a weight stores zero points: an integer, asymmetric one."""
    return A.and_(is_int, A.not_(A.num(symmetric) if isinstance(symmetric, bool) else symmetric))


def tensor_data_bytes(numel, rows, bits, density, group_size=0, symmetric=True):
    """Data bytes of one matrix weight (artifact_layout.tensor_bytes without its ceilings)."""
    dense = A.mul(numel, bits, _EIGHTH)
    sparse = A.add(A.mul(numel, _EIGHTH), A.mul(density, numel, bits, _EIGHTH))
    is_int = A.compare("<=", bits, 8)
    count = _scale_count(numel, rows, group_size)
    scales = A.add(A.ite(is_int, A.mul(4, count), 0), A.ite(_zero_points(is_int, symmetric), count, 0))
    return A.add(A.min_(dense, sparse), scales)


def tensor_bytes(numel, rows, bits, density, name: str, ndim: int, digits: int, group_size=0, symmetric=True,
                  low=False, linear_bits=None, dims=None):
    """Data + header bytes of one stored weight in the writer's smaller form (`low`: its
    header entries' lower bound; the data bytes lack only their ceilings either way).
    `linear_bits` (`low` only): the tensor's density is known only in total with others
    whose widths are at least this; the lower end is then linear in the density.
    `dims` (upper end): the most each dimension of the weight can be; its entries are
    then bounded (every flat entry holds at most as many elements as the weight, whose
    count prints in at most as many characters as its shape)."""
    is_int = A.compare("<=", bits, 8)
    q_ndim = ndim if A.is_number(bits) and bits == 8 else A.ite(A.compare("==", bits, 8), ndim, 1)
    if isinstance(q_ndim, sp.Integer):
        q_ndim = int(q_ndim)          # 8-bit keeps its shape; 4/2-bit are packed flat
    full = flat = per_row = None
    if dims is not None and not low:
        # the weight's shape; a flat entry's count (at most the weight's elements); the
        # scales' (a row's or a group's: per row, at most the largest dimension)
        full, flat = shape_chars(dims), number_chars(_product(dims))
        per_row = number_chars(max(dims)) if A.is_number(group_size) and group_size == 0 else flat
    # dtype names: F32/F64 3, BF16/F16 4, I8/U8 2
    float_dtype = A.ite(A.compare("==", bits, 16), 4, 3)
    # bounded, the q entry takes the weight's own dimensions (a packed one prints fewer)
    dense_header = A.ite(is_int, entry_bytes(layout.entry(name, layout.Q), q_ndim if full is None else ndim, digits,
                                             low, full, 2),
                         entry_bytes(name, ndim, digits, low, full, float_dtype))
    sparse_header = A.add(entry_bytes(layout.entry(name, layout.BITMAP), 1, digits, low, flat, 2),
                          entry_bytes(layout.entry(name, layout.VALUES), 1, digits, low, flat,
                                      A.ite(is_int, 2, float_dtype)))
    dense_data = A.mul(numel, bits, _EIGHTH)
    sparse_data = A.add(A.mul(numel, _EIGHTH), A.mul(density, numel, bits, _EIGHTH))
    dense, sparse = A.add(dense_data, dense_header), A.add(sparse_data, sparse_header)
    count = _scale_count(numel, rows, group_size)
    scales = A.ite(is_int, A.add(A.mul(4, count), entry_bytes(layout.entry(name, layout.SCALE), 1, digits, low, per_row, 3)),
                   0)
    # one int8 zero point per scale, an entry of its own, and (upper end) a longer recipe config
    zeros = A.ite(_zero_points(is_int, symmetric),
                  A.add(count, entry_bytes(layout.entry(name, layout.ZERO_POINT), 1, digits, low, per_row, 2),
                        0 if low else layout.ASYMMETRIC_CONFIG_CHARS), 0)
    if low:
        if linear_bits is not None:
            # densities known only in total over several tensors (global pruning's pool,
            # the two factors a later prune ranks together): min(dense, sparse) is concave
            # in the density, so the average's bytes are no lower end; each tensor's bytes
            # are at least N/8 + d*N*(b - 1)/8 (dense: N*b/8; sparse: N/8 + d*N*b/8),
            # linear in d, so its sum over the group is exact at the average
            data = A.add(A.mul(numel, _EIGHTH), A.mul(density, numel, A.sub(linear_bits, 1), _EIGHTH))
            return A.add(data, A.min_(dense_header, sparse_header), scales, zeros)
        return A.add(A.min_(dense, sparse), scales, zeros)
    # The writer stores the sparse form only when its data and entries are fewer bytes
    # than the dense form's (artifact_layout.is_sparse, every entry counted with offsets
    # at the digits of the file's largest one), so the file holds at most the smaller of
    # the two, whichever it picks: no density test is needed, and a density known only
    # from above (verify/lowend.py) bounds the sparse form all the same.
    return A.add(A.min_(dense, sparse), scales, zeros)


def _product(dims) -> int:
    out = 1
    for d in dims:
        out *= max(1, int(d))
    return out


def offset_digits(model: PipelineModel) -> int:
    """Digits of the data offsets in the header, from the baseline's data size (a constant)."""
    facts = model.facts
    data = sum(f.weight_params * f.bits // 8 + f.bias_params * 4 for f in facts.layers)
    data += 4 * max(0, facts.other_params) + facts.buffers_bytes
    return len(str(max(1, data)))


def _recipe_fixed(model: PipelineModel) -> int | None:
    """The recipe's characters besides its layers, exactly as `kmr run` writes them (its
    loader call, info {"pipeline": NAME});
    None when no pipeline is known (`cost_at`)."""
    pipe = model.pipeline
    if pipe is None:
        return None
    return artifact_recipe.recipe_fixed_chars(pipe.model.loader, {"pipeline": pipe.name})


def fixed_header(model: PipelineModel, low: bool = False) -> int:
    """Header bytes that do not depend on the state: length prefix, metadata, the recipe
    with every layer plain (a factorized layer adds its difference in its own term).
    `low`: a lower bound (every layer's shortest config, no padding)."""
    fixed = _recipe_fixed(model)
    layers = model.facts.layers
    if low:
        # without a pipeline: the shortest recipe (`"base":null`, empty info)
        fixed = artifact_recipe.recipe_fixed_chars(None, {}) if fixed is None else fixed
        # (each layer's config: its own term, `_LayerCost._config_low`)
        recipe = fixed + sum(artifact_recipe.name_chars(f.name) for f in layers) + max(0, len(layers) - 1)
        return 8 + layout.METADATA_FIXED + recipe
    fixed = layout.RECIPE_FIXED_CHARS if fixed is None else fixed
    # a Linear's config is its own term (`_LayerCost._config_high`); other kinds' estimated
    recipe = fixed + sum(artifact_recipe.name_chars(f.name) + 1 + (0 if f.kind == "Linear" else
                                                          layout.config_chars(f.kind) + layout.CONFIG_MARGIN)
                         for f in layers)
    return 8 + layout.METADATA_FIXED + recipe + layout.PADDING_BYTES
