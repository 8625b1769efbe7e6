"""Cost models of the analytic meters, as sympy expressions over the abstract state.

Contract: `meter_expr(model, meter, state)` is the value of `params`, `nonzero`,
`size`, `macs` or `trainable_params` for a state of `model` (its initial state gives
`baseline.METER`, its final state the pipeline's result); `layer_terms` gives the
per-layer parts and the constant rest (`kmr_dsl.verify.explain` prints them for
`kmr check --explain size`).

Per matrix layer (Linear, Conv1d/2d, Embedding) with facts in0, out0, W0 weight and B0
bias elements, M0 MACs, and state in, out, density d, bits b, rank r, adapter rank a:
- weight elements N: dense W0 * (in/in0) * (out/out0); when a rule has set `rank`
  and r*(in+out) < in*out the layer is two factors with r*in and out*r elements
  (lowrank's own test), read where `lowrank` made it (settling.Factors: its rank k and
  shape): a later head or channel pruning slices the two factors to k*in and out*k
  elements, k kept, and never decides the form anew; a never-factorized layer is dense
  at every shape;
- params = N + B0*(out/out0) + a*(in+out); nonzero = d*N + bias + adapters;
- macs = M0 * (N + a*(in+out)) / W0 (sparsity does not reduce MACs; the runtime counts
  factors and adapters as the matmuls they run); an attention's query projection adds
  its attention's own matmul MACs (facts' attention_macs) times heads/heads0;
- size (bytes, kmr_dsl.artifact_layout): per weight tensor min(dense, sparse) with
  dense = N*b/8, sparse = N/8 + d*N*b/8, plus 4 B per row (or group) when b <= 8 and
  1 B more per row (or group) when the layer is not `symmetric` (its zero points); bias at 2 B per
  element when b = 16, else 4; adapters fp32; an explicit input scale (`input_scale`)
  in*4 B and its entry;
- trainable_params = if model.trainable then (frozen ? 0 : N + bias) + adapters + rest
  else 0.
Other layers (norms) keep their parameters (scaled with their channels) at their dtype.
Outside the layers: other_params at 4 B, buffers, and the safetensors header
(artifact_layout's per-entry formula; int formats add a `.scale` entry, sparse ones a
second entry, which is why each branch of the min carries its own header bytes).

`size` is a range, not a value: the data bytes are exact up to the `ceil` of packed
bytes, and so are the recipe's loader call (with the program's absolute folder) and
its info object ({"pipeline": NAME}, counted with artifact_layout.recipe_fixed_chars);
the rest of the header (the offsets' digits, the 8-byte padding, each layer's config,
which grows with its form, its dimensions' digits and an unmerged adapter) is
bounded. `meter_expr(model, "size", state)` is the upper end (artifact_layout's
margins CONFIG_MARGIN, ADAPTER_CONFIG_CHARS, CEIL_BYTES, PADDING_BYTES; 5-15% above the
file on small generated models), `meter_expr(model, SIZE_LOW, state)` the lower end
(no ceilings, no padding, one digit per offset, the shortest dtype name, each layer's
shortest config: artifact_layout.config_chars_low). verify/budget.py reads the end
that is worst for a line. The counts (params, nonzero, macs, trainable_params)
are exact: the state keeps whole channels, ranks and weights as the runtime does
(kmr_dsl.core.step.settle).

Documented gaps of the upper end: offset digits are taken from the baseline's data size
(an upper bound of every offset); header entries of
tensors outside the layers are not counted (ModelFacts does not name them); a count over a
continuous knob (no `step`) is rounded only when it is affine in that one knob and takes
at most rounding.MAX_PIECES values (a rank, a channel count), else a channel, head or
rank count keeps the exact product (verify/rounding.py), while a kept-weight count is a
range of one weight around it, [x - 1/2, x + 1/2] within [0, elements] (verify/settling.py;
its lower end in `State.low`, read as the other ranges below);
global pruning rounds the total once, the state each layer (and gives each layer the
average density, exact in total: a later step that changes some of those densities on
their own makes the density-reading lines UNKNOWN, verify/pools.py); after a truncating
`lowrank` the density is an upper end (SVD factors may hold exact zeros), after one with
`energy < 1` the rank too: the state keeps their lower ends (verify/lowend.py), and
every meter is then a range (LOW_ENDS), its lower end read where a line needs the
meter large. The upper end of `size` over a rank range also reads the largest rank
that factorizes: there the two factors' scales, entries and config can outweigh the
few elements they save.
Where the density is a range the writer may pick either form, but a sparse one only
when its data is below the dense data: the upper end is at most the dense data with
the sparse form's header entries (one entry more than the dense form per tensor).
A BatchNorm's running statistics (facts.channel_buffer_bytes, taken out of
buffers_bytes) shrink with its channels. A depthwise conv (facts.depthwise) has
W0 * (out/out0) weight elements: its in and out channels are one count.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cached_property

import sympy as sp

from kmr_dsl import artifact_layout as layout
from kmr_dsl.core.state import ANALYTIC_METERS, LAYER_FIELDS, MATRIX_KINDS, scale_groups
from kmr_dsl.facts import LayerFact, ModelFacts
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify.bounds import instance_info
from kmr_dsl.verify.intervals import symbols_key, values_key
from kmr_dsl.verify.numeric import as_number, evaluate
from kmr_dsl.verify.settling import factor_fields, factor_rank, factor_test, matrix_numel
from kmr_dsl.verify.state import PipelineModel, State

UNITS = ANALYTIC_METERS     # meter -> dimension
# The lower end of the `size` meter (`meter_expr(model, SIZE_LOW, state)`): what a line
# that needs the file to be large (`size >= X`, the baseline side of `size <= k *
# baseline.size`) reads, where `size` itself is the upper end (verify/budget.py).
SIZE_LOW = "size_low"
# The lower ends of the counts: where the state knows a layer's density or rank only from
# above (`State.low`, verify/lowend.py: `lowrank`'s fresh factors and its energy cut),
# each meter's lower end reads the layer's fields at their lower ends. Equal to the
# meter where no layer has one.
NONZERO_LOW, PARAMS_LOW, MACS_LOW, TRAINABLE_LOW = "nonzero_low", "params_low", "macs_low", "trainable_params_low"
# the meters that are ranges: meter -> the name of its lower end
LOW_ENDS = {"size": SIZE_LOW, "nonzero": NONZERO_LOW, "params": PARAMS_LOW, "macs": MACS_LOW,
            "trainable_params": TRAINABLE_LOW}
_OF_LOW = {low: meter for meter, low in LOW_ENDS.items()}
_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float64": 8}


_EIGHTH = Fraction(1, 8)


def entry_bytes(name: str, ndim, digits: int, low: bool = False):
    """Header characters of one safetensors entry (artifact_layout.header_bytes_estimate's
    formula); `low`: a lower bound instead (artifact_layout.entry_chars_low)."""
    if low:
        if isinstance(ndim, int):
            return layout.entry_chars_low(name, ndim)
        return A.add(layout.entry_chars_low(name, 1) - 1, A.mul(2, ndim))
    fixed = layout.ENTRY_FIXED + len(name) + layout.DTYPE_CHARS + 2 * digits
    if isinstance(ndim, int):
        return fixed + max(1, 4 * ndim - 1)
    return A.add(fixed - 1, A.mul(4, ndim))


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


def _tensor_bytes(numel, rows, bits, density, name: str, ndim: int, digits: int, group_size=0, symmetric=True,
                  low=False, density_low=None, linear_bits=None):
    """Data + header bytes of one stored weight in the writer's smaller form (`low`: its
    header entries' lower bound; the data bytes lack only their ceilings either way).
    `density_low`: where `density` is only the upper end of the weight's density, its
    lower end (the upper end then allows the writer's choice at any density between).
    `linear_bits` (`low` only): the tensor's density is known only in total with others
    whose widths are at least this; the lower end is then linear in the density."""
    is_int = A.compare("<=", bits, 8)
    q_ndim = ndim if A.is_number(bits) and bits == 8 else A.ite(A.compare("==", bits, 8), ndim, 1)
    if isinstance(q_ndim, sp.Integer):
        q_ndim = int(q_ndim)          # 8-bit keeps its shape; 4/2-bit are packed flat
    dense_header = A.ite(is_int, entry_bytes(layout.entry(name, layout.Q), q_ndim, digits, low),
                         entry_bytes(name, ndim, digits, low))
    sparse_header = A.add(entry_bytes(layout.entry(name, layout.BITMAP), 1, digits, low),
                          entry_bytes(layout.entry(name, layout.VALUES), 1, digits, low))
    dense_data = A.mul(numel, bits, _EIGHTH)
    sparse_data = A.add(A.mul(numel, _EIGHTH), A.mul(density, numel, bits, _EIGHTH))
    dense, sparse = A.add(dense_data, dense_header), A.add(sparse_data, sparse_header)
    count = _scale_count(numel, rows, group_size)
    scales = A.ite(is_int, A.add(A.mul(4, count), entry_bytes(layout.entry(name, layout.SCALE), 1, digits, low)), 0)
    # one int8 zero point per scale, an entry of its own, and (upper end) a longer recipe config
    zeros = A.ite(_zero_points(is_int, symmetric),
                  A.add(count, entry_bytes(layout.entry(name, layout.ZERO_POINT), 1, digits, low),
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
    # The writer picks the form by its data bytes after their ceilings (sparse only when
    # strictly smaller), whatever the header entries cost: sparse surely when its bytes
    # are 2 below dense's (two ceilings), dense surely when 1 below; in between, either.
    # With a density range: sparse surely when its upper end is 2 below, dense surely when
    # dense is 1 below sparse's lower end.
    # Either way the sparse form's data is below the dense form's (the writer's data bytes
    # after ceilings: ceil(sparse) < ceil(dense) leaves the sparse data, ceilings included,
    # at most the dense data): a sparse file is at most the dense data with the sparse
    # form's entries, whatever the density in the range.
    sparse_low_data = sparse_data if density_low is None else \
        A.add(A.mul(numel, _EIGHTH), A.mul(density_low, numel, bits, _EIGHTH))
    either = A.max_(dense, A.min_(sparse, A.add(dense_data, sparse_header)))
    chosen = A.ite(A.compare("<=", A.add(sparse_data, 2), dense_data), sparse,
                   A.ite(A.compare("<=", A.add(dense_data, 1), sparse_low_data), dense, either))
    return A.add(chosen, scales, zeros)


def _ratio(now, then: int):
    return A.div(now, then) if then else A.ONE


class _LayerCost:
    """One layer's meter parts in one state, each built only when asked for."""

    def __init__(self, f: LayerFact, st: dict, digits: int, rank_set: bool):
        self.f, self.st, self.digits, self.rank_set = f, st, digits, rank_set
        self.matrix = f.kind in MATRIX_KINDS

    @cached_property
    def _scales(self):
        return (_ratio(self.st["in_features"], self.f.in_features),
                _ratio(self.st["out_features"], self.f.out_features))

    @cached_property
    def _factored(self):
        """The factorization test, or None for a layer no rule has given a rank."""
        return factor_test(self.st) if self.rank_set else None

    @cached_property
    def dense_n(self):
        if self.f.depthwise:        # one filter per channel: in and out channels are one count
            return A.mul(self.f.weight_params, self._scales[1])
        return A.mul(self.f.weight_params, *self._scales)

    @cached_property
    def numel(self):
        return matrix_numel(self.st, self.dense_n, self.rank_set)

    @cached_property
    def bias_n(self):
        return A.mul(self.f.bias_params, self._scales[1])

    @cached_property
    def adapters(self):
        return A.mul(self.st["adapter_rank"], A.add(self.st["in_features"], self.st["out_features"]))

    def params(self):
        if not self.matrix:
            return A.mul(self.f.params, self._scales[1])
        return A.add(self.numel, self.bias_n, self.adapters)

    def nonzero(self):
        if not self.matrix:
            return self.params()
        return A.add(A.mul(self.st["density"], self.numel), self.bias_n, self.adapters)

    def macs(self):
        f = self.f
        # an attention's own matmuls (counted on its query projection) scale with its heads
        attention = A.mul(f.attention_macs, _ratio(self.st["heads"], f.heads)) if f.attention_macs else A.ZERO
        if not self.matrix or not f.weight_params:
            return A.add(A.num(f.macs), attention)
        return A.add(A.mul(f.macs, A.div(A.add(self.numel, self.adapters), f.weight_params)), attention)

    def trainable(self):
        if not self.matrix:
            return A.ite(self.st["frozen"], 0, self.params())
        return A.add(A.ite(self.st["frozen"], 0, A.add(self.numel, self.bias_n)), self.adapters)

    def size(self):
        return self._size(low=False)

    def size_low(self):
        return self._size(low=True)

    def _config_low(self) -> int:
        """A lower bound of the layer's recipe config (artifact_layout.config_chars_low):
        the digits of a dimension the state fixes, else one."""
        def digits(v):
            return len(str(int(v))) if A.is_number(v) and v >= 1 else 1
        return layout.config_chars_low(self.f.kind, self.f.bias_params > 0, digits(self.st["in_features"]),
                                       digits(self.st["out_features"]))

    def _size(self, low: bool):
        """The layer's bytes in the file: an upper bound, or (`low`) a lower bound."""
        if low:
            return A.add(self._size_parts(True), self._config_low())
        if self.f.kind == "Linear":
            return A.add(self._size_parts(False), self._config_high())
        return self._size_parts(False)

    def _config_high(self):
        """An upper bound of a Linear's recipe config (artifact_layout.linear_config_chars_high)
        by its storage width, factorization and adapter, each as the state says."""
        f, st = self.f, self.st
        b, a = st["bits"], st["adapter_rank"]
        dims = (f.bias_params > 0, len(str(max(1, f.in_features))), len(str(max(1, f.out_features))))

        def by_width(factorized, adapted):
            size = {w: layout.linear_config_chars_high(*dims, w, factorized, adapted)
                    for w in ("float", "int8", "low")}
            return A.ite(A.compare(">=", b, 16), size["float"],
                         A.ite(A.compare("==", b, 8), size["int8"], size["low"]))

        def by_form(adapted):
            plain = by_width(False, adapted)
            return plain if self._factored is None else A.ite(self._factored, by_width(True, adapted), plain)
        return A.ite(A.compare(">", a, 0), by_form(True), by_form(False))

    def _size_parts(self, low: bool):
        f, st, digits = self.f, self.st, self.digits
        if not self.matrix:
            header = sum(entry_bytes(f"{f.name}.{n}", 1, digits, low)
                         for n, count in (("weight", f.weight_params), ("bias", f.bias_params)) if count)
            if f.kind.startswith("BatchNorm"):
                # its running statistics are entries of the file too (their bytes are in
                # facts.buffers_bytes); counted as 1-dim entries, an upper bound
                # (num_batches_tracked has no dimension: 0 shape characters at the lower end)
                header += sum(entry_bytes(f"{f.name}.{n}", 0 if low and n == "num_batches_tracked" else 1,
                                          digits, low)
                              for n in ("running_mean", "running_var", "num_batches_tracked"))
            # per-channel buffers (running statistics) shrink with the channels
            stats = A.mul(f.channel_buffer_bytes, self._scales[1])
            return A.add(A.mul(self.params(), _ITEMSIZE.get(f.dtype, 4)), stats, header)
        b, d, r = st["bits"], st["density"], st["rank"]
        d_low = st.get("density_low")       # upper end only: the density's lower end, if any
        inf, outf = st["in_features"], st["out_features"]
        ndim = max(1, len(f.weight_shape))
        weight = f"{f.name}.weight"
        g, sym = st["group_size"], st["symmetric"]
        pooled = st.get("pool_bits") if low else None      # the least width of its pool
        weights = _tensor_bytes(self.dense_n, outf, b, d, weight, ndim, digits, g, sym, low, d_low, pooled)
        bias_entry = entry_bytes(layout.bias_of(weight), 1, digits, low) if f.bias_params else 0
        if self._factored is not None:
            r = factor_rank(st)             # the inner dimension, which a later slicing keeps
            first, second = layout.factor_weight(f.name, layout.FIRST), layout.factor_weight(f.name, layout.SECOND)
            # a prune ranks the two factors together: their densities are known in total
            shared = (b if pooled is None else pooled) if low else None
            fac = A.add(_tensor_bytes(A.mul(r, inf), r, b, d, first, 2, digits, g, sym, low, d_low, shared),
                        _tensor_bytes(A.mul(outf, r), outf, b, d, second, 2, digits, g, sym, low, d_low, shared))
            weights = A.ite(self._factored, fac, weights)
            fac_entry = entry_bytes(layout.bias_of(second), 1, digits, low) if f.bias_params else 0
            if not low and f.kind != "Linear":
                # a factorized layer's recipe entry is longer (two Linear configs)
                fac_entry += layout.FACTORIZED_CONFIG_CHARS - layout.config_chars(f.kind)
            bias_entry = A.ite(self._factored, fac_entry, bias_entry)
        bias_bytes = A.mul(self.bias_n, A.ite(A.compare("==", b, 16), 2, 4))
        a = st["adapter_rank"]
        adapter_header = entry_bytes(f"{f.name}.{layout.LORA_A}", 2, digits, low) + \
            entry_bytes(f"{f.name}.{layout.LORA_B}", 2, digits, low) + \
            (0 if low or f.kind == "Linear" else layout.ADAPTER_CONFIG_CHARS)
        adapter_size = A.add(A.mul(4, self.adapters), A.ite(A.compare(">", a, 0), adapter_header, 0))
        # packed bytes round up (at most CEIL_BYTES in all): the lower end leaves them out
        return A.add(weights, bias_bytes, bias_entry, adapter_size, self._input_scale(low),
                     0 if low else layout.CEIL_BYTES)

    def _input_scale(self, low: bool):
        """An explicit input scale (awq, smoothquant where nothing folds): in fp32 values
        and their entry, exactly; the upper end adds the wrapper's config and the longer
        names of the weight's entries (artifact_layout.SCALED_CONFIG_CHARS)."""
        flag = self.st.get("input_scale", A.FALSE)
        if flag is A.FALSE or flag is False:
            return 0
        name = f"{self.f.name}.{layout.INPUT_SCALE}"
        extra = 0 if low else layout.SCALED_CONFIG_CHARS + layout.INPUT_SCALE_ENTRIES * layout.INPUT_SCALE_NAME_CHARS
        return A.ite(flag, A.add(A.mul(4, self.st["in_features"]), entry_bytes(name, 1, self.digits, low), extra), 0)


def layer_costs(f: LayerFact, st: dict, digits: int, rank_set: bool = False,
                meters=("params", "nonzero", "size", "macs", "trainable")) -> dict[str, object]:
    """Meter parts of one layer in state `st` (rank_set: a rule has set its rank)."""
    lc = _LayerCost(f, st, digits, rank_set)
    return {m: getattr(lc, m)() for m in meters}


def _digits(model: PipelineModel) -> int:
    """Digits of the data offsets in the header, from the baseline's data size (a constant)."""
    facts = model.facts
    data = sum(f.weight_params * f.bits // 8 + f.bias_params * 4 for f in facts.layers)
    data += 4 * max(0, facts.other_params) + facts.buffers_bytes
    return len(str(max(1, data)))


def _recipe_fixed(model: PipelineModel) -> int | None:
    """The recipe's characters besides its layers, exactly as `kmr run` writes them (its
    loader call with the program's absolute folder, info {"pipeline": NAME});
    None when no pipeline is known (`cost_at`)."""
    pipe = model.pipeline
    if pipe is None:
        return None
    return layout.recipe_fixed_chars(pipe.model.loader, {"pipeline": pipe.name})


def _fixed_header(model: PipelineModel, low: bool = False) -> int:
    """Header bytes that do not depend on the state: length prefix, metadata, the recipe
    with every layer plain (a factorized layer adds its difference in its own term).
    `low`: a lower bound (every layer's shortest config, no padding)."""
    fixed = _recipe_fixed(model)
    layers = model.facts.layers
    if low:
        # without a pipeline: the shortest recipe (`"base":null`, empty info)
        fixed = layout.recipe_fixed_chars(None, {}) if fixed is None else fixed
        # (each layer's config: its own term, `_LayerCost._config_low`)
        recipe = fixed + sum(layout.name_chars(f.name) for f in layers) + max(0, len(layers) - 1)
        return 8 + layout.METADATA_FIXED + recipe
    fixed = layout.RECIPE_FIXED_CHARS if fixed is None else fixed
    # a Linear's config is its own term (`_LayerCost._config_high`); other kinds' estimated
    recipe = fixed + sum(layout.name_chars(f.name) + 1 + (0 if f.kind == "Linear" else
                                                          layout.config_chars(f.kind) + layout.CONFIG_MARGIN)
                         for f in layers)
    return 8 + layout.METADATA_FIXED + recipe + layout.PADDING_BYTES


def _share_term_infos(model: PipelineModel, template, value, symbols: tuple) -> None:
    """The budget lines' decomposition (bounds.decompose) sees each layer's terms: an
    instance's terms are the template's with its knobs, so their shapes are known
    without a walk (bounds.instance_info)."""
    mapping = dict(zip(template.symbols, symbols))
    memo = model.decomposed_terms
    model_terms = template.expr.args if type(template.expr) is sp.Add else (template.expr,)
    terms = value.args if type(value) is sp.Add else (value,)
    if len(terms) != len(model_terms):
        return
    for t, m in zip(terms, model_terms):
        if t is not m and not isinstance(t, sp.Rational):
            instance_info(t, m, mapping, model.knobs, memo)


def _layer_key(model: PipelineModel, st: dict):
    """_state_key of a layer's state dict, once per dict: every meter of a state asks it
    for every layer (state dicts are replaced, never changed in place: verify/state.py)."""
    key = ("cost: layer state key", id(st))
    hit = model.templates.get(key)
    if hit is not None and hit[0] is st:
        return hit[1]
    found = _state_key(st, model.knobs)
    model.templates[key] = (st, found)       # the dict kept alive: its id is not reused
    return found


def _state_key(st: dict, knobs=None) -> tuple | None:
    """A hashable key of a layer state up to renaming of its knob symbols (intervals.
    values_key, with each symbol's knob declaration: layers sharing a template read
    knobs of the same domains), and those symbols in order of first appearance; None
    when a value has no such key (a placeholder the state cannot express)."""
    slots: dict = {}
    key = values_key(st.items(), slots)
    if key is None:
        return None
    return (key, symbols_key(slots, knobs)), tuple(slots)


def layer_terms(model: PipelineModel, meter: str, state: State) -> tuple[list[tuple[str, object]], object]:
    """(per-layer parts in layer order, the constant rest) of an analytic meter."""
    if meter not in ANALYTIC_METERS and meter not in _OF_LOW:
        raise A.NotModelled(f"meter `{meter}` has no cost model")
    return model.cost_terms.get(state, lambda: _layer_terms(model, meter, state), meter)


def _layer_terms(model: PipelineModel, meter: str, state: State):
    digits = _digits(model)
    facts = model.facts
    base = meter if meter == SIZE_LOW else _OF_LOW.get(meter, meter)
    which = "trainable" if base == "trainable_params" else base
    low_end = meter in _OF_LOW
    parts = []
    # A layer's cost depends on its facts, its field values and (through header entries)
    # only the length of its name: layers of the same shape whose states are equal up to
    # their knobs (one per layer of a per-layer family) get one term, built once and
    # instantiated (algebra.Template) for the others; all-constant states share it outright.
    templates: dict = {}
    pool_bits = _pool_bits(state) if meter == SIZE_LOW else {}
    for f in facts.layers:
        st = state.layers[f.name]
        if f.name in pool_bits:
            st = {**st, "pool_bits": pool_bits[f.name]}
        low = state.low.get(f.name)
        # a factorized layer sliced since: the decision `lowrank` made, not one anew
        sliced = factor_fields(state, f.name)
        if sliced:
            st = {**st, **sliced}
        rank_set = (f.name, "rank") in state.origin or bool(sliced)
        if low and (low_end or meter == "size"):
            parts.append((f.name, _ranged_term(f, st, low, digits, rank_set, which, low_end)))
            continue
        found = _layer_key(model, st)
        shape = None if found is None else (
            f.kind, f.in_features, f.out_features, f.weight_params, f.bias_params, f.weight_shape, f.dtype,
            f.macs, f.attention_macs, f.heads, len(f.name), rank_set, f.depthwise, f.channel_buffer_bytes,
            found[0])
        template = None if shape is None else templates.get(shape)
        if template is not None:
            value = template(found[1])
            if model.knobs is not None:
                _share_term_infos(model, template, value, found[1])
            parts.append((f.name, value))
            continue
        value = layer_costs(f, st, digits, rank_set, (which,))[which]
        if shape is not None:
            templates[shape] = A.Template(value, found[1])
        parts.append((f.name, value))
    other = max(0, facts.other_params)
    channel_stats = sum(f.channel_buffer_bytes for f in facts.layers)   # counted per layer
    rest = {
        "params": A.num(other),
        "nonzero": A.num(other),
        "size": A.num(4 * other + facts.buffers_bytes - channel_stats + _fixed_header(model)),
        # parameters outside the layers: at least one byte each (their dtype is not a fact)
        SIZE_LOW: A.num(other + facts.buffers_bytes - channel_stats + _fixed_header(model, low=True)),
        "macs": A.num(facts.total_macs - sum(f.macs + f.attention_macs for f in facts.layers)),
        "trainable_params": A.num(other),
    }[meter if meter == SIZE_LOW else base]
    return parts, rest


def _pool_bits(state: State) -> dict:
    """Per layer of a global pruning's pool (verify/pools.py), the least width of its pool."""
    out, seen = {}, {}
    for layer, pool in state.pools.items():
        if pool not in seen:
            widths = [state.layers[m]["bits"] for m in sorted(pool) if m in state.layers]
            least = widths[0]
            for w in widths[1:]:
                least = A.min_(least, w)
            seen[pool] = least
        out[layer] = seen[pool]
    return out


def _ranged_term(f: LayerFact, st: dict, low: dict, digits: int, rank_set: bool, which: str, low_end: bool):
    """One layer's part of a meter whose fields `low` has lower ends for (verify/lowend.py).
    A lower end: the counts are non-decreasing in density and rank, so they read both
    fields' lower ends; the file's bytes are non-decreasing in the density and, within
    one form (factorized or dense), in the rank, so their least is at the rank's lower
    or upper end. The upper end of `size`: the writer's sparse-or-dense choice at any
    density in the range."""
    # a rank below the state's may make the runtime factorize the layer: test it
    rank_set = rank_set or "rank" in low
    # sliced since `lowrank` decided (settling.Factors): the rank range is the inner
    # dimension's, and the test reads the shape it decided at
    sliced = "factor_rank" in st

    def at_rank(fields: dict, rank) -> dict:
        return {**fields, "rank": rank, "factor_rank": rank} if sliced else {**fields, "rank": rank}
    if not low_end:
        st = {**st, "density_low": low.get("density", st["density"])}
        value = layer_costs(f, st, digits, rank_set, (which,))[which]
        if "rank" in low:
            # the largest factorized rank (if below the state's): near the threshold the
            # two factors' scales, entries and config outweigh the elements they save
            inf, outf = st.get("factor_in", st["in_features"]), st.get("factor_out", st["out_features"])
            top = A.sub(A.ceil_(A.div(A.mul(inf, outf), A.add(inf, outf))), 1)
            cut = at_rank(st, A.max_(low["rank"], A.min_(factor_rank(st), top)))
            value = A.max_(value, layer_costs(f, cut, digits, rank_set, (which,))[which])
        return value
    fields = {**st, **low}
    value = layer_costs(f, at_rank(fields, low["rank"]) if "rank" in low else fields, digits, rank_set,
                        (which,))[which]
    if "rank" in low and (which == "size_low" or sliced):
        # the file's bytes change form with the rank; and sliced factors may hold more
        # elements than the dense matrix at the smaller shape: the counts are then no
        # longer non-decreasing in the rank either
        at_high = {**st, "density": low.get("density", st["density"])}
        value = A.min_(value, layer_costs(f, at_high, digits, rank_set, (which,))[which])
    return value


def meter_expr(model: PipelineModel, meter: str, state: State):
    """The meter's value in `state`: a sympy expression over knob symbols."""
    def build():
        parts, rest = layer_terms(model, meter, state)
        total = A.add(rest, *(p for _, p in parts))
        if meter in ("trainable_params", TRAINABLE_LOW):
            total = A.ite(state.model["trainable"], total, 0)
        return total
    return model.cost_totals.get(state, build, meter)


# ---------------------------------------------------------------- at a measured state

_CAST = {"int": int, "float": float, "bool": bool}


def _symbolic_state(state: dict, rank_set) -> State:
    layers = {}
    for name, st in state["layers"].items():
        layers[name] = {f: A.EnumValue(st[f]) if t == "str" else A.num(_CAST[t](st[f]))
                        for f, t in LAYER_FIELDS.items()}
    origin = {(name, "rank"): 0 for name in rank_set}
    return State(layers, {"trainable": A.num(bool(state["trainable"]))}, origin)


def cost_at(facts: ModelFacts, state: dict, rank_set=()) -> dict[str, float]:
    """Every analytic meter's cost model at a *measured* state (the plain dicts of
    `runtime.state.measure_state`) of the model `facts` describe; `rank_set` names the
    layers whose rank a rule set. The property tests compare it with the meters."""
    sym = _symbolic_state(state, rank_set)
    model = PipelineModel(program=None, pipeline=None, knobs=None, facts=facts, initial=sym, final=sym,
                          requirements=[])
    return {m: float(as_number(evaluate(meter_expr(model, m, sym), {}, exact=False))) for m in ANALYTIC_METERS}


__all__ = ["ANALYTIC_METERS", "LOW_ENDS", "SIZE_LOW", "UNITS", "cost_at", "entry_bytes", "layer_costs", "layer_terms", "meter_expr",
           "tensor_data_bytes"]
