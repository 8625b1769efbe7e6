"""Hand-built checked programs for the verifier's tests (no parser, no checker, no torch).

Contract: small constructors for the IR of kmr_dsl.core.program — knobs, steps,
budget lines, pipelines — plus `STD`, the standard rules written by hand to match
stdlib/rules.kmr clause for clause, and `mlp_facts`, ModelFacts of a plain MLP chain
(each Linear consumes the previous one's outputs). Once the checker is stable the
golden cases go through it instead (tests/data/verify/*.kmr hold the same programs).
"""

from __future__ import annotations

from kmr_dsl.core.program import (CheckedProgram, Const, Constraint, DataDecl, DataRef, Domain, Effect, EnumLit,
                                   FieldRef, If, Knob, KnobRef, LoaderSpec, MeterRef, ModelArg, ModelDecl, Op, Param,
                                   ParamRef, Pipeline, Rule, Step)
from kmr_dsl.diagnostics import Span
from kmr_dsl.facts import LayerFact, ModelFacts

FILE = "test.kmr"


def span(line: int, col: int = 5, end_col: int = 30, file: str = FILE) -> Span:
    return Span(file, line, col, line, end_col)


def c(value, dim: str = "number") -> Const:
    return Const(value, "bool" if isinstance(value, bool) else dim)


def op(o: str, *args) -> Op:
    return Op(o, tuple(args))


def layer(f: str) -> FieldRef:
    return FieldRef("layer", f)


def model_f(f: str) -> FieldRef:
    return FieldRef("model", f)


def p(name: str) -> ParamRef:
    return ParamRef(name)


# ---------------------------------------------------------------- the standard rules

_STD_SPAN = lambda line: Span("stdlib/rules.kmr", line, 5, line, 40)  # noqa: E731
_TRAIN = (
    Param("epochs", "int", Domain(lo=1, hi=1000), default=1, has_default=True),
    Param("lr", "float", Domain(lo=0.0, hi=1.0, lo_closed=False), default=0.001, has_default=True),
    Param("batch_size", "int", Domain(lo=1, hi=65536), default=64, has_default=True),
)
_OPTIMIZE = (
    Param("optimizer", "enum", members=("adam", "adamw", "sgd"), default="adam", has_default=True),
    Param("momentum", "float", Domain(lo=0.0, hi=1.0, hi_closed=False), default=0.9, has_default=True),
    Param("weight_decay", "float", Domain(lo=0.0, hi=1.0), default=0.0, has_default=True),
    Param("schedule", "enum", members=("constant", "cosine", "step"), default="constant", has_default=True),
)

PRUNE = Rule(
    "prune",
    (Param("amount", "float", Domain(lo=0.0, hi=1.0, hi_closed=False), default=0.5, has_default=True),
     Param("method", "enum", members=("magnitude", "global", "channel", "nm", "head"), default="magnitude",
           has_default=True),
     Param("n", "int", Domain(lo=1, hi=16), default=2, has_default=True),
     Param("m", "int", Domain(lo=1, hi=16), default=4, has_default=True)),
    ("Linear", "Conv2d"),
    (op(">=", layer("bits"), c(16)), op("<=", p("n"), p("m")),
     op("or", op("!=", p("method"), EnumLit("head")), op(">=", layer("heads"), c(1))),
     op("or", op("!=", p("method"), EnumLit("head")),
        op(">=", op("*", layer("heads"), op("-", c(1), p("amount"))), c(0.5)))),
    (Effect("layer", "density",
            If(op("==", p("method"), EnumLit("nm")), op("min", layer("density"), op("/", p("n"), p("m"))),
               If(op("or", op("==", p("method"), EnumLit("channel")), op("==", p("method"), EnumLit("head"))),
                  layer("density"),
                  op("*", layer("density"), op("-", c(1), p("amount")))))),
     Effect("layer", "out_features",
            If(op("==", p("method"), EnumLit("channel")), op("*", layer("out_features"), op("-", c(1), p("amount"))),
               layer("out_features"))),
     Effect("layer", "heads",
            If(op("==", p("method"), EnumLit("head")), op("*", layer("heads"), op("-", c(1), p("amount"))),
               layer("heads")))),
    "kmr_dsl.rules.prune:apply", _STD_SPAN(7))

_STATIC = op("!=", p("scheme"), EnumLit("static"))
QUANTIZE = Rule(
    "quantize",
    (Param("bits", "int", Domain(values=(2, 4, 8, 16, 32))),
     Param("scheme", "enum", members=("dynamic", "weight_only", "static"), default="dynamic", has_default=True),
     Param("group_size", "int", Domain(lo=0, hi=65536), default=0, has_default=True),
     Param("calibration", "data", default="none", has_default=True),
     Param("samples", "int", Domain(lo=1, hi=65536), default=128, has_default=True),
     Param("symmetric", "bool", default=True, has_default=True),
     Param("activations", "enum", members=("tensor", "token"), default="tensor", has_default=True)),
    ("Linear", "Conv2d", "Embedding"),
    (op("<=", p("bits"), layer("bits")),
     op("or", _STATIC, op("!=", p("calibration"), EnumLit("none"))),
     op("or", _STATIC, op(">=", p("bits"), c(8))),
     op("or", _STATIC, op("==", p("group_size"), c(0))),
     op("or", op("==", p("activations"), EnumLit("tensor")),
        op("and", op("and", op("==", p("scheme"), EnumLit("dynamic")), op("==", p("bits"), c(8))),
           op("==", p("group_size"), c(0))))),
    (Effect("layer", "bits", p("bits")),
     Effect("layer", "group_size", If(op(">=", p("bits"), c(16)), c(0), p("group_size"))),
     Effect("layer", "symmetric", op("or", op(">=", p("bits"), c(16)), p("symmetric"))),
     Effect("model", "trainable", op("and", model_f("trainable"), op(">=", p("bits"), c(16))))),
    "kmr_dsl.rules.quantize:apply", _STD_SPAN(24))

FINETUNE = Rule("finetune", (Param("data", "data"), *_TRAIN, *_OPTIMIZE), None, (model_f("trainable"),), (),
                "kmr_dsl.rules.finetune:apply", _STD_SPAN(32))

DISTILL = Rule(
    "distill",
    (Param("data", "data"), Param("teacher", "model", default="baseline", has_default=True),
     Param("temperature", "float", Domain(lo=1.0, hi=20.0), default=4.0, has_default=True),
     Param("alpha", "float", Domain(lo=0.0, hi=1.0), default=0.5, has_default=True), *_TRAIN,
     Param("loss", "enum", members=("kl", "mse"), default="kl", has_default=True), *_OPTIMIZE),
    None, (model_f("trainable"),), (), "kmr_dsl.rules.distill:apply", _STD_SPAN(41))

LOWRANK = Rule(
    "lowrank",
    (Param("ratio", "float", Domain(lo=0.0, hi=1.0, lo_closed=False), default=0.5, has_default=True),
     Param("energy", "float", Domain(lo=0.0, hi=1.0), default=1.0, has_default=True)),
    ("Linear",),
    (op(">=", layer("bits"), c(16)), op("==", layer("adapter_rank"), c(0)), op("not", layer("input_scale"))),
    (Effect("layer", "rank", op("*", layer("rank"), p("ratio"))),
     Effect("layer", "density", If(op("and", op("==", p("energy"), c(1)),
                                      op(">", op("*", layer("rank"), p("ratio")), op("-", layer("rank"), c(1)))),
                                   layer("density"), c(1))),
     # two Linears take no folded scale: foldable only where one Linear surely stays
     Effect("layer", "foldable", op("and", op("and", layer("foldable"), op("==", p("energy"), c(1))),
                                    op("or", op(">", op("*", layer("rank"), p("ratio")), op("-", layer("rank"), c(1))),
                                       op(">=", op("*", op("*", layer("rank"), p("ratio")),
                                                   op("+", layer("in_features"), layer("out_features"))),
                                          op("*", layer("in_features"), layer("out_features"))))))),
    "kmr_dsl.rules.lowrank:apply", _STD_SPAN(54))

LORA = Rule(
    "lora",
    (Param("data", "data"), Param("rank", "int", Domain(lo=1, hi=256), default=8, has_default=True),
     Param("alpha", "float", Domain(lo=0.0, hi=1024.0), default=16.0, has_default=True), *_TRAIN,
     Param("merge", "bool", default=True, has_default=True), *_OPTIMIZE),
    ("Linear",),
    (op(">=", layer("bits"), c(16)), op("==", layer("adapter_rank"), c(0)), op("not", layer("input_scale")),
     model_f("trainable")),
    (Effect("layer", "adapter_rank", If(p("merge"), c(0), p("rank"))),
     Effect("layer", "frozen", op("not", p("merge"))),
     Effect("layer", "foldable", op("and", layer("foldable"), p("merge")))),
    "kmr_dsl.rules.lora:apply", _STD_SPAN(63))

PRUNE_GRADUALLY = Rule(
    "prune_gradually",
    (Param("final", "float", Domain(lo=0.0, hi=1.0, hi_closed=False)), Param("data", "data"),
     Param("initial", "float", Domain(lo=0.0, hi=1.0, hi_closed=False), default=0.0, has_default=True),
     Param("epochs", "int", Domain(lo=1, hi=1000), default=4, has_default=True),
     Param("curve", "enum", members=("cubic", "linear"), default="cubic", has_default=True),
     Param("method", "enum", members=("magnitude", "global"), default="magnitude", has_default=True),
     *_TRAIN[1:], *_OPTIMIZE),
    ("Linear", "Conv2d"),
    (op(">=", layer("bits"), c(16)), op("<=", p("initial"), p("final")), model_f("trainable")),
    (Effect("layer", "density", op("*", layer("density"), op("-", c(1), p("final")))),),
    "kmr_dsl.rules.prune_gradually:apply", _STD_SPAN(84))

STD = {r.name: r for r in (PRUNE, QUANTIZE, FINETUNE, DISTILL, LOWRANK, LORA, PRUNE_GRADUALLY)}


# ---------------------------------------------------------------- facts

def mlp_facts(widths, tokens: int = 1, prefix: str = "fc", bias: bool = True, density: float = 1.0) -> ModelFacts:
    """A chain of Linear layers widths[0] -> widths[1] -> ...; fc{i} feeds fc{i+1}."""
    layers = []
    n = len(widths) - 1
    for i in range(n):
        fin, fout = widths[i], widths[i + 1]
        layers.append(LayerFact(
            name=f"{prefix}{i}", kind="Linear", in_features=fin, out_features=fout, weight_shape=(fout, fin),
            weight_params=fin * fout, bias_params=fout if bias else 0, dtype="float32", bits=32, density=density,
            macs=tokens * fin * fout, consumers=(f"{prefix}{i + 1}",) if i + 1 < n else ()))
    total = sum(f.params for f in layers)
    return ModelFacts(tuple(layers), total, sum(f.macs for f in layers), (1, widths[0]))


# ---------------------------------------------------------------- program pieces

def knob(name: str, type_: str = "float", *, values=None, lo=None, hi=None, step=None, lo_closed=True,
         hi_closed=True, members=(), default=None, layers=(), line: int = 1) -> Knob:
    domain = None
    if type_ in ("int", "float"):
        domain = Domain(values=tuple(values) if values is not None else None, lo=lo, hi=hi, lo_closed=lo_closed,
                        hi_closed=hi_closed, step=step)
    return Knob(name, type_, domain, tuple(members), default, "number", "l" if layers else None, tuple(layers),
                span(line, 1, 40))


def kref(name: str, at: str | None = None) -> KnobRef:
    return KnobRef(f"{name}[{at}]" if at else name, name)


def _arg(v):
    if isinstance(v, (int, float, bool)):
        return c(v)
    if isinstance(v, str):
        return EnumLit(v)
    return v


def step(rule: Rule | str, layers=(), line: int = 10, **args) -> Step:
    rule = STD[rule] if isinstance(rule, str) else rule
    out = []
    for prm in rule.params:
        if prm.name in args:
            out.append((prm.name, _arg(args[prm.name])))
        elif prm.type == "data":
            out.append((prm.name, DataRef("train")))
        elif prm.type == "model":
            out.append((prm.name, ModelArg("baseline")))
        elif prm.has_default:
            out.append((prm.name, EnumLit(prm.default) if prm.type == "enum" else c(prm.default)))
    return Step(rule, tuple(out), tuple(layers) if rule.accepts is not None else (), span(line, 5, 40))


def meter(name: str, baseline: bool = False, analytic: bool = True, args=()) -> MeterRef:
    return MeterRef(name, tuple(args), baseline, analytic)


def _analytic(e) -> bool:
    if isinstance(e, MeterRef):
        return e.analytic
    if isinstance(e, Op):
        return all(_analytic(a) for a in e.args)
    if isinstance(e, If):
        return _analytic(e.cond) and _analytic(e.then) and _analytic(e.orelse)
    return True


def line(left, o: str, right, at: int = 30) -> Constraint:
    left, right = _arg(left), _arg(right)
    return Constraint(o, left, right, _analytic(left) and _analytic(right), span(at, 9, 40))


def program(knobs, steps, budget=(), facts: ModelFacts | None = None, name: str = "compress",
            rules=None) -> CheckedProgram:
    facts = facts or mlp_facts([64, 256, 256, 10])
    decl = ModelDecl("student", LoaderSpec("factory", ("m:make",)), facts, span(2, 1, 40))
    data = DataDecl("train", LoaderSpec("sklearn", ("digits",)), span(3, 1, 40))
    pipe = Pipeline(name, decl, tuple(steps), tuple(budget), None, None, tuple(k.name for k in knobs), span(9, 1, 40))
    return CheckedProgram(FILE, {k.name: k for k in knobs}, dict(rules or STD), {}, {"student": decl},
                          {"train": data}, {name: pipe}, {})


def linears(facts: ModelFacts) -> tuple[str, ...]:
    return tuple(f.name for f in facts.layers if f.kind == "Linear")


__all__ = ["FILE", "STD", "c", "kref", "knob", "layer", "line", "linears", "meter", "mlp_facts", "op", "program",
           "span", "step"]
