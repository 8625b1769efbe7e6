"""What the modifier handlers share: the step they produce, selectors, and the reading
context that records which options a handler took (so the rest can be reported).

Contract: `Ctx.take(options, key)` reads an option (SparseML's `eval(...)` evaluated over
the recipe's top-level numbers) and marks it taken; `selector(cx, options)` turns
`targets`/`params` and `ignore` into a `Selector`. Torch-free.
"""

from __future__ import annotations

import ast as pyast
from dataclasses import dataclass, field

from kmr_dsl.diagnostics import Diagnostic, Severity, Span, error, warning
from kmr_dsl.importer.recipe import Modifier, Node, Recipe, Stage

DATA = "recipe_data"   # the data declaration steps that calibrate or train use
KINDS = {"Linear", "Conv2d", "Conv1d", "Embedding"}
EXECUTION_ONLY = {"sequential_update", "sequential_targets", "offload_hessians", "block_size", "run_type",
                  "log_types", "leave_enabled", "update_frequency", "start", "end", "index", "group",
                  "num_calibration_steps", "calibration_function", "true_sequential", "mask_type_unstructured"}


@dataclass(frozen=True)
class Selector:
    kinds: tuple[str, ...] = ("Linear",)
    names: tuple[str, ...] = ()       # glob or `re:` patterns, any matching
    exclude: tuple[str, ...] = ()


@dataclass
class StepOut:
    rule: str
    args: list[tuple[str, object]]    # python values; enum members as Enum(str)
    selector: Selector | None         # None: a whole-model rule
    span: Span                        # the modifier it came from
    origin: str                       # "GPTQModifier in quant_stage"


class Enum(str):
    """An enum member (written bare), not a string literal."""


@dataclass
class Ctx:
    recipe: Recipe
    stage: Stage
    diags: list[Diagnostic] = field(default_factory=list)
    taken: set[str] = field(default_factory=set)
    pending_awq: Modifier | None = None
    epochs: float | None = None        # an EpochRangeModifier's length (SparseML)
    lr: float | None = None            # a learning-rate modifier's initial rate
    schedule: str | None = None
    stage_training: float = 0.0        # the epoch gradual pruning ends at

    def take(self, opts: Node, key: str, default=None):
        self.taken.add(key)
        node = opts.get(key)
        return default if node is None else self.value(node)

    def node(self, opts: Node, key: str) -> Node | None:
        self.taken.add(key)
        return opts.get(key)

    def value(self, node: Node):
        v = node.plain()
        if isinstance(v, str) and v.startswith("eval(") and v.endswith(")"):
            return _arith(v[5:-1], self.recipe.variables, node.span, self.diags)
        return v

    def approx(self, span: Span, message: str, *notes: str) -> None:
        self.diags.append(warning("KMR532", span, message, *notes))

    def note(self, span: Span, message: str) -> None:
        self.diags.append(Diagnostic("KMR534", Severity.NOTE, span, message))


def _arith(expr: str, variables: dict, span: Span, diags: list) -> object:
    """SparseML's `eval(num_epochs - 1)`: numbers, recipe variables and + - * / only."""
    def ev(n):
        if isinstance(n, pyast.Expression):
            return ev(n.body)
        if isinstance(n, pyast.Constant) and isinstance(n.value, (int, float)):
            return n.value
        if isinstance(n, pyast.Name) and isinstance(variables.get(n.id), (int, float, str)):
            return variables[n.id]
        if isinstance(n, pyast.BinOp) and isinstance(n.op, (pyast.Add, pyast.Sub, pyast.Mult, pyast.Div)):
            a, b = ev(n.left), ev(n.right)
            return {pyast.Add: a + b, pyast.Sub: a - b, pyast.Mult: a * b}.get(type(n.op), a / b if b else 0)
        if isinstance(n, pyast.UnaryOp) and isinstance(n.op, pyast.USub):
            return -ev(n.operand)
        raise ValueError(pyast.dump(n))
    try:
        return ev(pyast.parse(expr, mode="eval"))
    except (ValueError, SyntaxError):
        diags.append(error("KMR532", span, f"cannot evaluate `eval({expr})`",
                           "only numbers, the recipe's top-level variables and + - * / are evaluated"))
        return None


# ---------------------------------------------------------------- selectors

def layer_pattern(p: str) -> str:
    """A target as a layer-name pattern: parameter names (`….weight`) name their layer."""
    p = str(p)
    for suffix in (r"\.weight$", ".weight$", ".weight", r"\.weight"):
        if p.endswith(suffix):
            return p[: -len(suffix)] + ("$" if p.endswith("$") else "")
    return p


def selector(cx: Ctx, opts: Node, targets_key: str = "targets", default=("Linear",)) -> Selector:
    targets = cx.take(opts, targets_key)
    ignore = cx.take(opts, "ignore") or []
    if targets_key != "params":
        cx.take(opts, "params")
    targets = [targets] if isinstance(targets, str) else list(targets or [])
    ignore = [ignore] if isinstance(ignore, str) else list(ignore)
    kinds, names = [], []
    for t in targets:
        if t in KINDS:
            kinds.append(t)
        elif t in ("__ALL__", "__ALL_PRUNABLE__", "__ALL_QUANTIZABLE__"):
            kinds += ["Linear", "Conv2d"] if t != "__ALL__" else ["Linear", "Conv2d", "Embedding"]
        else:
            names.append(layer_pattern(t))
    if not kinds and names:
        kinds = ["Linear", "Conv2d"]  # named layers: the names decide, of either matrix kind
    return Selector(tuple(dict.fromkeys(kinds)) or tuple(default), tuple(names),
                    tuple(layer_pattern(i) for i in ignore))


__all__ = ["DATA", "EXECUTION_ONLY", "Ctx", "Enum", "Selector", "StepOut", "layer_pattern", "selector"]
