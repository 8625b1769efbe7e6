"""One layer's part of each analytic meter, as sympy expressions over its state.

Contract: `layer_costs(fact, state, digits, rank_set, meters)` gives a layer's
`params`, `nonzero`, `size`, `size_low`, `macs` and `trainable` parts in one state of its
fields; the meter assembly (verify/cost.py) sums them with the constant rest.

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
A BatchNorm's running statistics (facts.channel_buffer_bytes, taken out of
buffers_bytes) shrink with its channels. A depthwise conv (facts.depthwise) has
W0 * (out/out0) weight elements: its in and out channels are one count.
"""

from __future__ import annotations

from functools import cached_property

from kmr_dsl import artifact_layout as layout
from kmr_dsl import artifact_recipe
from kmr_dsl.core.state import MATRIX_KINDS
from kmr_dsl.facts import LayerFact
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify.file_bytes import entry_bytes, number_chars, tensor_bytes
from kmr_dsl.verify.settling import factor_rank, factor_test, matrix_numel


_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float64": 8}


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
        """A lower bound of the layer's recipe config (artifact_recipe.config_chars_low):
        the digits of a dimension the state fixes, else one."""
        def digits(v):
            return len(str(int(v))) if A.is_number(v) and v >= 1 else 1
        return artifact_recipe.config_chars_low(self.f.kind, self.f.bias_params > 0, digits(self.st["in_features"]),
                                       digits(self.st["out_features"]))

    def _size(self, low: bool):
        """The layer's bytes in the file: an upper bound, or (`low`) a lower bound."""
        if low:
            return A.add(self._size_parts(True), self._config_low())
        if self.f.kind == "Linear":
            return A.add(self._size_parts(False), self._config_high())
        return self._size_parts(False)

    def _config_high(self):
        """An upper bound of a Linear's recipe config (artifact_recipe.linear_config_chars_high)
        by its storage width, factorization and adapter, each as the state says."""
        f, st = self.f, self.st
        b, a = st["bits"], st["adapter_rank"]
        dims = (f.bias_params > 0, len(str(max(1, f.in_features))), len(str(max(1, f.out_features))))

        def by_width(factorized, adapted):
            size = {w: artifact_recipe.linear_config_chars_high(*dims, w, factorized, adapted, f.dtype)
                    for w in ("f32", "f16", "int8", "low")}
            return A.ite(A.compare(">=", b, 32), size["f32"], A.ite(A.compare(">=", b, 16), size["f16"],
                         A.ite(A.compare("==", b, 8), size["int8"], size["low"])))

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
        inf, outf = st["in_features"], st["out_features"]
        ndim = max(1, len(f.weight_shape))
        weight = f"{f.name}.weight"
        g, sym = st["group_size"], st["symmetric"]
        pooled = st.get("pool_bits") if low else None      # the least width of its pool
        # the baseline's dimensions bound every shape (no rule grows a weight); a factor is
        # [r, in] or [out, r] with r below both
        shape = tuple(f.weight_shape) or (f.weight_params,)
        weights = tensor_bytes(self.dense_n, outf, b, d, weight, ndim, digits, g, sym, low, pooled, shape)
        bias_entry = entry_bytes(layout.bias_of(weight), 1, digits, low, number_chars(f.bias_params)) if f.bias_params else 0
        if self._factored is not None:
            r = factor_rank(st)             # the inner dimension, which a later slicing keeps
            first, second = layout.factor_weight(f.name, layout.FIRST), layout.factor_weight(f.name, layout.SECOND)
            # a prune ranks the two factors together: their densities are known in total
            shared = (b if pooled is None else pooled) if low else None
            pair = (f.out_features, f.in_features)
            fac = A.add(tensor_bytes(A.mul(r, inf), r, b, d, first, 2, digits, g, sym, low, shared, pair),
                        tensor_bytes(A.mul(outf, r), outf, b, d, second, 2, digits, g, sym, low, shared, pair))
            weights = A.ite(self._factored, fac, weights)
            fac_entry = entry_bytes(layout.bias_of(second), 1, digits, low, number_chars(f.bias_params)) \
                if f.bias_params else 0
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
        names of the weight's entries (artifact_recipe.SCALED_CONFIG_CHARS)."""
        flag = self.st.get("input_scale", A.FALSE)
        if flag is A.FALSE or flag is False:
            return 0
        name = f"{self.f.name}.{artifact_recipe.INPUT_SCALE}"
        extra = 0 if low else artifact_recipe.SCALED_CONFIG_CHARS + \
            artifact_recipe.INPUT_SCALE_ENTRIES * artifact_recipe.INPUT_SCALE_NAME_CHARS
        return A.ite(flag, A.add(A.mul(4, self.st["in_features"]), entry_bytes(name, 1, self.digits, low), extra), 0)


def layer_costs(f: LayerFact, st: dict, digits: int, rank_set: bool = False,
                meters=("params", "nonzero", "size", "macs", "trainable")) -> dict[str, object]:
    """Meter parts of one layer in state `st` (rank_set: a rule has set its rank)."""
    lc = _LayerCost(f, st, digits, rank_set)
    return {m: getattr(lc, m)() for m in meters}
