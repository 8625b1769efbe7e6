"""Hypothesis strategies for the end-to-end soundness suite: whole KMR programs as text.

A `Case` is a small model (tests/verify/sound_factory.py: Linear/Conv2d/Embedding stacks,
a residual block, an embedding tied to the output head, a ResNet with BatchNorm and a
projection shortcut, a gated (SwiGLU) MLP, one-layer BERT and Llama from transformers
configs: attention heads, grouped-query attention), 1-4 steps over every standard
rule (stdlib/rules.kmr: prune in its five methods (head pruning on the attention
families' query/key/value projections, channel pruning through residual streams and
gated products), quantize in both schemes and with
groups, lowrank, lora merged or not, finetune, distill, the calibrated gptq, sparsegpt,
smoothquant, awq and qat, per-layer knob families), the knobs those steps
read, and 1-3 analytic budget line *templates*. A template is made concrete once the
program is checked (soundness.py): its bound is the cost model's prediction at the
case's `target` setting, so most lines are tight at some setting — where a prediction
that is off by one weight or one byte flips a verdict. Some templates scale the bound
(`slack` < 1 on an upper bound), which makes many budgets infeasible: the refuted side.
`settings` are further settings to run at, drawn from the knobs' domains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

METERS = ("params", "nonzero", "size", "macs", "trainable_params")
FAMILIES = ("mlp", "cnn", "embed", "residual", "tied", "resnet", "gated", "bert", "llama")
ATTENTION = ("bert", "llama")
PROJECTIONS = (".query", ".key", ".value", ".q_proj", ".k_proj", ".v_proj")   # what head pruning selects
# producers of coupled channel groups: a gated unit's gate and up projections, a residual
# stream's block output and projection shortcut (channel pruning slices them together)
COUPLED = (".gate_proj", ".up_proj", ".conv2", ".shortcut.0")
BITS = (2, 4, 8, 16, 32)


@dataclass(frozen=True)
class Arch:
    family: str
    sizes: tuple[int, ...]
    bias: str            # one 0/1 flag per weight layer
    norm: int = 0
    seed: int = 0
    eager: int = 0       # the attention families: eager attention (1) or torch's fused kernel

    def kwargs(self) -> str:
        sizes = ",".join(map(str, self.sizes))
        return f'family = "{self.family}", sizes = "{sizes}"'

    def model_decl(self) -> str:
        return f'model m = factory("sound_factory:make", {self.kwargs()}, bias = "{self.bias}", ' \
               f'norm = {self.norm}, seed = {self.seed}' + (f', eager = {self.eager})' if self.family in ATTENTION else ')')

    def data_decl(self) -> str:
        return f'data train = factory("sound_factory:data", {self.kwargs()}, n = 16, seed = {self.seed})'


@dataclass(frozen=True)
class KnobSpec:
    name: str
    type: str                          # int | float | bool | enum
    values: tuple = ()                 # a finite domain (int/float sets, stepped ranges, enum members)
    lo: float | None = None            # a continuous float range [lo, hi] (values empty)
    hi: float | None = None
    default: object = None
    family: str | None = None          # a family's selector text: `layers(Linear)`
    decl: str = ""                     # the declaration's domain text

    def text(self) -> str:
        head = f"knob {self.name}[l in {self.family}]" if self.family else f"knob {self.name}"
        return f"{head} : {self.decl} = {_lit(self.default)}"


@dataclass(frozen=True)
class Line:
    meter: str
    op: str                  # <= < >= >
    relative: bool           # `meter op q * baseline.meter` instead of an absolute bound
    slack: float = 1.0       # the bound is the target's prediction times this


@dataclass(frozen=True)
class Case:
    arch: Arch
    layers: tuple[tuple[str, str], ...]      # (qualified name, kind) of the logical layers
    knobs: tuple[KnobSpec, ...]
    steps: tuple[str, ...]
    lines: tuple[Line, ...]
    target: dict = field(hash=False, compare=False, default_factory=dict)   # knob -> value
    settings: tuple = field(hash=False, compare=False, default=())          # more settings to run

    @property
    def uses_data(self) -> bool:
        return any("= train" in s for s in self.steps)

    def program(self, budget: list[str]) -> str:
        out = ['import "std"', self.arch.model_decl()]
        if self.uses_data:
            out.append(self.arch.data_decl())
        out += [k.text() for k in self.knobs]
        out.append("pipeline p(m) {")
        out += ["    " + s for s in self.steps]
        if budget:
            out.append("    budget {")
            out += ["        " + b for b in budget]
            out.append("    }")
        out.append("}")
        return "\n".join(out) + "\n"


def _lit(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(round(v, 6))
    return str(v)


# ---------------------------------------------------------------- architectures

_B = st.sampled_from("01")


@st.composite
def archs(draw) -> Arch:
    family = draw(st.sampled_from(FAMILIES))
    seed = draw(st.integers(0, 999))
    bias = "".join(draw(_B) for _ in range(3))
    if family == "mlp":
        depth = draw(st.integers(1, 3))
        sizes = tuple(draw(st.integers(2, 24)) for _ in range(depth + 1))
        # a pre-norm MLP: the Linears smoothquant and awq fold into (layer.foldable)
        return Arch(family, sizes, bias, norm=draw(st.integers(0, 1)), seed=seed)
    if family == "cnn":
        sizes = (draw(st.integers(1, 3)), draw(st.integers(2, 8)), draw(st.integers(2, 8)), draw(st.integers(2, 6)),
                 draw(st.integers(2, 5)))
        return Arch(family, sizes, bias, norm=draw(st.integers(0, 1)), seed=seed)
    if family == "embed":
        return Arch(family, (draw(st.integers(4, 40)), draw(st.integers(2, 12)), draw(st.integers(1, 4)),
                             draw(st.integers(2, 8))), bias, seed=seed)
    if family in ("residual", "gated"):
        return Arch(family, (draw(st.integers(2, 16)), draw(st.integers(2, 16)), draw(st.integers(2, 16)),
                             draw(st.integers(2, 8))), bias, seed=seed)
    if family == "resnet":
        return Arch(family, (draw(st.integers(1, 3)), draw(st.integers(2, 6)), draw(st.integers(2, 6)),
                             draw(st.integers(2, 5)), draw(st.integers(2, 3))), bias, seed=seed)
    eager = draw(st.integers(0, 1))
    if family == "bert":
        heads, dim = draw(st.sampled_from((1, 2, 3, 4))), draw(st.integers(2, 4))
        return Arch(family, (draw(st.integers(4, 24)), heads * dim, heads, draw(st.integers(2, 16)),
                             draw(st.integers(1, 4)), draw(st.integers(2, 5))), bias, seed=seed, eager=eager)
    if family == "llama":
        # rotary embeddings need an even head_dim; grouped-query when kv < heads
        kv, group, dim = draw(st.sampled_from((1, 2))), draw(st.sampled_from((1, 2))), draw(st.sampled_from((2, 4)))
        return Arch(family, (draw(st.integers(4, 24)), kv * group * dim, kv * group, kv, draw(st.integers(2, 16)),
                             draw(st.integers(1, 4))), bias, seed=seed, eager=eager)
    return Arch(family, (draw(st.integers(4, 40)), draw(st.integers(2, 12)), draw(st.integers(1, 4))), bias, seed=seed)


# ---------------------------------------------------------------- knobs and steps

class _Knobs:
    """The knobs a case's steps read, declared once each, in first-use order."""

    def __init__(self, draw):
        self.draw = draw
        self.specs: dict[str, KnobSpec] = {}

    def get(self, name: str, make) -> str:
        if name not in self.specs:
            self.specs[name] = make(self.draw)
        return name


def _amount(draw) -> KnobSpec:
    if draw(st.booleans()):
        step = draw(st.sampled_from((0.1, 0.15, 0.3, 0.45)))
        n = int(0.9 / step + 1e-9)
        vals = tuple(round(i * step, 6) for i in range(n + 1))
        return KnobSpec("a", "float", vals, default=vals[len(vals) // 2], decl=f"float in [0.0, 0.9] step {step}")
    hi = draw(st.sampled_from((0.5, 0.9, 0.95)))
    return KnobSpec("a", "float", lo=0.0, hi=hi, default=0.5 * hi, decl=f"float in [0.0, {hi}]")


def _bits(draw) -> KnobSpec:
    vals = tuple(sorted(draw(st.lists(st.sampled_from(BITS), min_size=1, max_size=4, unique=True))))
    return KnobSpec("b", "int", vals, default=vals[-1], decl="int in {" + ", ".join(map(str, vals)) + "}")


def _ratio(draw) -> KnobSpec:
    if draw(st.booleans()):
        return KnobSpec("r", "float", (0.25, 0.5, 0.75, 1.0), default=1.0, decl="float in (0.0, 1.0] step 0.25")
    return KnobSpec("r", "float", lo=0.05, hi=1.0, default=0.5, decl="float in [0.05, 1.0]")


def _rank(draw) -> KnobSpec:
    hi = draw(st.integers(1, 12))
    return KnobSpec("k", "int", tuple(range(1, hi + 1)), default=1, decl=f"int in [1, {hi}]")


def _method(draw) -> KnobSpec:
    members = tuple(draw(st.lists(st.sampled_from(("magnitude", "global", "channel", "nm", "head")), min_size=1,
                                  max_size=4, unique=True)))
    return KnobSpec("mth", "enum", members, default=members[0], decl="{" + ", ".join(members) + "}")


def _merge(draw) -> KnobSpec:
    return KnobSpec("mg", "bool", (False, True), default=draw(st.booleans()), decl="bool")


def _scheme(draw) -> KnobSpec:
    return KnobSpec("sch", "enum", ("dynamic", "weight_only"), default="dynamic", decl="{dynamic, weight_only}")


def _family_amount(draw) -> KnobSpec:
    return KnobSpec("f", "float", (0.0, 0.2, 0.4, 0.6, 0.8), default=0.0, family="layers(Linear)",
                    decl="float in [0.0, 0.8] step 0.2")


def _family_bits(draw) -> KnobSpec:
    vals = tuple(sorted(draw(st.lists(st.sampled_from(BITS), min_size=1, max_size=3, unique=True))))
    return KnobSpec("q", "int", vals, default=vals[-1], family="layers(Linear)",
                    decl="int in {" + ", ".join(map(str, vals)) + "}")


def _selector(draw, layers, kinds) -> str | None:
    """` on layers(...)` over accepted kinds present in the model; None when there is none."""
    have = [(n, k) for n, k in layers if k in kinds]
    if not have:
        return None
    how = draw(st.sampled_from(("kind", "name", "all")))
    if how == "all":
        return ""
    if how == "name":
        name, kind = draw(st.sampled_from(have))
        return f' on layers({kind}, name = "{name}")'
    present = sorted({k for _, k in have})
    chosen = draw(st.lists(st.sampled_from(present), min_size=1, max_size=len(present), unique=True))
    return f" on layers({', '.join(chosen)})"


def _num(draw, knobs: _Knobs, knob: str, make, consts):
    return knobs.get(knob, make) if draw(st.booleans()) else _lit(draw(st.sampled_from(consts)))


_TRAIN = "data = train, epochs = 1, batch_size = 16"


def _step(draw, layers, knobs: _Knobs) -> str | None:
    projections = [n for n, _ in layers if n.endswith(PROJECTIONS)]
    coupled = [n for n, _ in layers if n.endswith(COUPLED)]
    # head pruning, and channel pruning of a coupled group, drawn more often where the
    # model has them (each a `prune` step)
    kind = draw(st.sampled_from(("prune", "prune", "quantize", "quantize", "lowrank", "lora", "finetune", "distill",
                                 "prune_family", "quantize_family", "gptq", "sparsegpt", "smoothquant", "awq", "qat")
                                + ("head", "head") * bool(projections) + ("channel", "channel") * bool(coupled)))
    if kind in ("gptq", "sparsegpt", "smoothquant", "awq", "qat"):
        return _calibrated(draw, kind, layers, knobs)
    if kind in ("finetune", "distill"):
        return f"{kind}({_TRAIN})" if kind == "finetune" else f"distill({_TRAIN}, temperature = 2.0)"
    if kind in ("prune_family", "quantize_family"):
        if not any(k == "Linear" for _, k in layers):
            return None
        if kind == "prune_family":
            return "for l in layers(Linear) { prune(amount = " + knobs.get("f", _family_amount) + "[l]) }"
        return "for l in layers(Linear) { quantize(bits = " + knobs.get("q", _family_bits) + "[l]) }"
    if kind in ("prune", "head", "channel"):
        method = kind if kind != "prune" else \
            draw(st.sampled_from(("magnitude", "global", "channel", "nm", "knob") + ("head",) * bool(projections)))
        if method == "head" and draw(st.integers(0, 3)):
            # mostly one attention projection by name (the others, the output and the
            # attention's heads follow); else any selection, which may refute `layer.heads >= 1`
            sel = f' on layers(Linear, name = "{draw(st.sampled_from(projections))}")'
        elif kind == "channel" and draw(st.integers(0, 3)):
            name = draw(st.sampled_from(coupled))
            sel = f' on layers({dict(layers)[name]}, name = "{name}")'
        else:
            sel = _selector(draw, layers, ("Linear", "Conv2d"))
        if sel is None:
            return None
        args = ["amount = " + _num(draw, knobs, "a", _amount, (0.0, 0.3, 0.5, 0.75))]
        if method == "knob":
            args.append("method = " + knobs.get("mth", _method))
        elif method != "magnitude" or draw(st.booleans()):
            args.append(f"method = {method}")
        if method in ("nm", "knob"):
            n, m = draw(st.sampled_from(((2, 4), (1, 4), (3, 4), (1, 2), (2, 8), (1, 3))))
            args += [f"n = {n}", f"m = {m}"]
        return f"prune({', '.join(args)}){sel}"
    if kind == "quantize":
        sel = _selector(draw, layers, ("Linear", "Conv2d", "Embedding"))
        if sel is None:
            return None
        args = ["bits = " + _num(draw, knobs, "b", _bits, BITS)]
        scheme = draw(st.sampled_from(("default", "dynamic", "weight_only", "knob")))
        if scheme == "knob":
            args.append("scheme = " + knobs.get("sch", _scheme))
        elif scheme != "default":
            args.append(f"scheme = {scheme}")
        if draw(st.integers(0, 3)) == 0:
            args.append(f"group_size = {draw(st.sampled_from(_GROUPS))}")
        return f"quantize({', '.join(args)}){sel}"
    if kind == "lowrank":
        sel = _selector(draw, layers, ("Linear",))
        if sel is None:
            return None
        args = ["ratio = " + _num(draw, knobs, "r", _ratio, (0.1, 0.25, 0.5, 0.8, 1.0))]
        if draw(st.integers(0, 3)) == 0:
            args.append(f"energy = {draw(st.sampled_from((0.5, 0.9, 0.99)))}")
        return f"lowrank({', '.join(args)}){sel}"
    sel = _selector(draw, layers, ("Linear",))
    if sel is None:
        return None
    args = [_TRAIN, "rank = " + _num(draw, knobs, "k", _rank, (1, 2, 4, 8))]
    merge = draw(st.sampled_from(("default", "true", "false", "knob")))
    if merge == "knob":
        args.append("merge = " + knobs.get("mg", _merge))
    elif merge != "default":
        args.append(f"merge = {merge}")
    return f"lora({', '.join(args)}){sel}"


_GROUPS = (0, 2, 4, 8, 16)
_CALIBRATION = "calibration = train, samples = 16"


def _calibrated(draw, kind: str, layers, knobs: _Knobs) -> str | None:
    """The calibrated rules of stdlib/rules.kmr: gptq, sparsegpt, smoothquant, awq, qat."""
    sel = _selector(draw, layers, ("Linear", "Conv2d") if kind == "qat" else ("Linear",))
    if sel is None:
        return None
    group = f"group_size = {draw(st.sampled_from(_GROUPS))}"
    if kind == "gptq":
        return f"gptq(bits = {_num(draw, knobs, 'b', _bits, BITS)}, {group}, {_CALIBRATION}){sel}"
    if kind == "sparsegpt":
        args = ["amount = " + _num(draw, knobs, "a", _amount, (0.0, 0.3, 0.5, 0.75))]
        if draw(st.booleans()):
            n, m = draw(st.sampled_from(((2, 4), (1, 4), (1, 2), (2, 8), (1, 3))))
            args += [f"n = {n}", f"m = {m}"]
        return f"sparsegpt({', '.join(args)}, {_CALIBRATION}){sel}"
    if kind == "smoothquant":
        return f"smoothquant(alpha = 0.5, {_CALIBRATION}){sel}"
    bits = draw(st.sampled_from((2, 4, 8)))
    if kind == "awq":
        return f"awq(bits = {bits}, {group}, {_CALIBRATION}){sel}"
    scheme = draw(st.sampled_from(("dynamic", "weight_only")))
    return f"qat(bits = {bits}, {_TRAIN}, scheme = {scheme}, {group}){sel}"


# ---------------------------------------------------------------- settings

def _instances(spec: KnobSpec, layers) -> list[str]:
    if spec.family is None:
        return [spec.name]
    return [f"{spec.name}[{n}]" for n, k in layers if k == "Linear"]


@st.composite
def setting_of(draw, knobs: tuple[KnobSpec, ...], layers) -> dict:
    out = {}
    for spec in knobs:
        for inst in _instances(spec, layers):
            if spec.values:
                out[inst] = draw(st.sampled_from(spec.values))
            else:
                edge = draw(st.integers(0, 4))
                out[inst] = spec.lo if edge == 0 else spec.hi if edge == 1 else \
                    round(draw(st.floats(spec.lo, spec.hi, allow_nan=False)), 4)
    return out


@st.composite
def cases(draw, layer_names, extra_settings: int = 1) -> Case:
    """`layer_names(arch)` lists (name, kind) of the arch's logical layers (it builds the model)."""
    arch = draw(archs())
    layers = tuple(layer_names(arch))
    knobs = _Knobs(draw)
    steps = []
    for _ in range(draw(st.integers(1, 4))):
        s = _step(draw, layers, knobs)
        if s is not None:
            steps.append(s)
    if not steps:
        steps.append("finetune(" + _TRAIN + ")")
    if draw(st.integers(0, 3)):
        # usually quantize last, as real recipes do: otherwise most pipelines would prune
        # or factorize integer layers, which the verifier rightly refutes at once
        steps.sort(key=lambda s: any(q in s for q in ("quantize(", "gptq(", "awq(", "qat(")))
    lines = []
    for meter in draw(st.lists(st.sampled_from(METERS), min_size=1, max_size=3, unique=True)):
        op = draw(st.sampled_from(("<=", "<=", "<", ">=", ">")))
        slack = 1.0 if draw(st.integers(0, 3)) else draw(st.sampled_from((0.5, 0.8, 0.95, 0.99)))
        if op in (">=", ">") and slack != 1.0:
            slack = 2.0 - slack
        lines.append(Line(meter, op, draw(st.booleans()), slack))
    specs = tuple(knobs.specs.values())
    target = draw(setting_of(specs, layers))
    more = tuple(draw(setting_of(specs, layers)) for _ in range(extra_settings))
    return Case(arch, layers, specs, tuple(steps), tuple(lines), target, more)


def signature(case: Case) -> str:
    """What a case is made of, to sort disagreements by cause: the family (with `+norm`)
    and each distinct rule with the option that changes its cost model, e.g.
    `cnn+norm: lowrank(energy) prune(nm) quantize(weight_only)`."""
    parts = set()
    for text in case.steps:
        head = text.split("{ ")[-1]
        rule = head.split("(")[0]
        opts = []
        for key, flag in (("method = ", None), ("scheme = ", None), ("merge = ", None), ("energy = ", "energy")):
            if key in head:
                value = head.split(key)[1].split(",")[0].split(")")[0]
                if flag:
                    opts.append(flag)
                elif key == "merge = " or value in ("mth", "sch"):
                    opts.append(f"{key[:-3]}={'knob' if value in ('mth', 'sch', 'mg') else value}")
                else:
                    opts.append(value)
        parts.add(f"{rule}({','.join(opts)})" if opts else rule)
    family = case.arch.family + ("+norm" if case.arch.norm else "")
    return f"{family}: {' '.join(sorted(parts))}"


__all__ = ["Arch", "Case", "KnobSpec", "Line", "METERS", "archs", "cases", "setting_of", "signature"]
