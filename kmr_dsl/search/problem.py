"""What a strategy may ask about a setting before it spends a run on it.

Contract: a `Problem` holds the search space, the objective's direction and three
free (run-less) questions:

- `admissible(setting)`: does the setting meet every *analytic* budget line? A search
  never runs a setting for which this is False.
- `pressure(setting)`: a number that grows with the predicted analytic cost the budget
  limits (e.g. `size` for `size <= 16 KB`): the sum over analytic budget lines of each
  analytic meter's predicted value, divided by its value at the default setting and
  signed by the side of the line it sits on. It only has to be monotone in the cost,
  so strategies use it to tell "spend budget" moves from "save budget" ones and to
  rank moves by cost saved; None when no prediction exists.
- `starts()`: settings to start from, in order of preference (the verifier's witness,
  then the defaults).
- `distortion(setting)`: an optional prior on quality lost, lower is better (for a
  program: the weight error the setting's predicted state implies,
  kmr_dsl.search.prior); None when no prior exists. Budgeted-KMR picks its first runs
  with it; it never decides feasibility.

`ProgramProblem` answers them for a checked program through the verifier
(`kmr_dsl.verify.is_feasible` and `predict`, imported lazily: they pull in sympy),
or through the verifier it is given. Tests use their own Problem with a synthetic
cost model, or a ProgramProblem with a stand-in verifier.
"""

from __future__ import annotations

from kmr_dsl.core.program import Const, MeterRef, Op
from kmr_dsl.core.evaluate import meter_key
from kmr_dsl.search.space import GRID, Space, key, space_for


class Problem:
    """The interface strategies see; subclasses fill in the three questions."""

    space: Space
    direction: str | None = None      # "maximize" | "minimize" | None (no objective)
    cost_label: str | None = None     # the meter the Pareto plot puts on its x axis
    quality_label: str = "objective"

    def admissible(self, setting: dict) -> bool:
        raise NotImplementedError

    def pressure(self, setting: dict) -> float | None:
        return None

    def starts(self) -> list[dict]:
        return [{name: axis.default for name, axis in self.space.axes.items()}]

    def distortion(self, setting: dict) -> float | None:
        return None


meter_label = meter_key  # the one rule, shared with the run reports (kmr_dsl.core.evaluate)


def _signed_meters(expr, sign: int, out: dict[str, int]) -> None:
    """Collect the non-baseline meters of `expr` with the sign a rise of each one has
    on the expression (a constant factor is assumed positive)."""
    if isinstance(expr, MeterRef):
        if not expr.baseline:
            out[meter_label(expr)] = out.get(meter_label(expr), 0) + sign
    elif isinstance(expr, Op):
        if expr.op == "neg":
            _signed_meters(expr.args[0], -sign, out)
        elif expr.op == "-":
            _signed_meters(expr.args[0], sign, out)
            _signed_meters(expr.args[1], -sign, out)
        elif expr.op == "/":
            _signed_meters(expr.args[0], sign, out)
            _signed_meters(expr.args[1], -sign, out)
        elif expr.op == "*" and any(isinstance(a, Const) and isinstance(a.value, (int, float))
                                    and a.value < 0 for a in expr.args):
            for a in expr.args:
                _signed_meters(a, -sign, out)
        else:
            for a in expr.args:
                _signed_meters(a, sign, out)


def budget_pressure_terms(pipeline) -> dict[str, int]:
    """meter label -> sign of its contribution to the analytic budget's pressure."""
    terms: dict[str, int] = {}
    for line in pipeline.budget:
        if not line.analytic or line.op not in ("<=", "<", ">=", ">"):
            continue
        upper = 1 if line.op in ("<=", "<") else -1   # `left <= right`: left rising costs
        _signed_meters(line.left, upper, terms)
        _signed_meters(line.right, -upper, terms)
    return {k: (1 if v > 0 else -1) for k, v in terms.items() if v != 0}


def objective_label(pipeline) -> str:
    """A short name for the objective: the meter's label when it is one meter."""
    if pipeline.objective is None:
        return "objective"
    expr = pipeline.objective.expr
    return meter_label(expr) if isinstance(expr, MeterRef) else "objective"


class ProgramProblem(Problem):
    """A checked pipeline, with admissibility and predictions from the verifier."""

    def __init__(self, program, pipeline_name: str, witness: dict | None = None, grid: int = GRID,
                 verifier=None, profiles=None):
        """`verifier`: what answers the questions (`is_feasible`, `predict`, `predict_layers`;
        default `kmr_dsl.verify`). `profiles`: weight profiles of the model's layers (kmr_dsl.runtime.profile), or a
        function returning them (called on first use), for `distortion`; None: no prior."""
        self.program = program
        self.pipeline_name = pipeline_name
        self.pipeline = program.pipelines[pipeline_name]
        self.witness = dict(witness) if witness else None
        self.space = space_for(program, self.pipeline, grid, extra=self.witness)
        self.direction = self.pipeline.objective.direction if self.pipeline.objective else None
        self.quality_label = objective_label(self.pipeline)
        self._terms = budget_pressure_terms(self.pipeline)
        self.cost_label = next(iter(self._terms), None)
        if verifier is None:
            import kmr_dsl.verify as verifier   # sympy and z3: only when a program is searched
        self._verifier = verifier
        self._admissible: dict[str, bool] = {}
        self._predicted: dict[str, dict | None] = {}
        self._reference: dict[str, float] | None = None
        self._profiles = profiles
        self._prior = None
        self._distortion: dict[str, float | None] = {}

    def admissible(self, setting: dict) -> bool:
        k = key(setting)
        if k not in self._admissible:
            self._admissible[k] = bool(self._verifier.is_feasible(self.program, self.pipeline_name, setting))
        return self._admissible[k]

    def predict(self, setting: dict) -> dict | None:
        k = key(setting)
        if k not in self._predicted:
            try:
                self._predicted[k] = dict(self._verifier.predict(self.program, self.pipeline_name, setting))
            except (KeyError, ValueError, ArithmeticError):
                # a meter without a cost model at this setting: no prediction, no pressure
                self._predicted[k] = None
        return self._predicted[k]

    def pressure(self, setting: dict) -> float | None:
        if not self._terms:
            return None
        if self._reference is None:
            ref = self.predict(self.space.snap({})) or {}
            self._reference = {m: abs(float(ref.get(m, 0.0))) or 1.0 for m in self._terms}
        pred = self.predict(setting)
        if pred is None or any(m not in pred for m in self._terms):
            return None
        return sum(sign * float(pred[m]) / self._reference[m] for m, sign in self._terms.items())

    def distortion(self, setting: dict) -> float | None:
        if self._profiles is None:
            return None
        if self._prior is None:
            from kmr_dsl.search.prior import QualityPrior

            profiles = self._profiles() if callable(self._profiles) else self._profiles
            if not profiles:            # no layer with a float weight matrix: no prior
                self._profiles = None
                return None
            initial = self._verifier.predict_layers(self.program, self.pipeline_name, baseline=True)
            self._prior = QualityPrior(profiles, initial)
        k = key(setting)
        if k not in self._distortion:
            try:
                layers = self._verifier.predict_layers(self.program, self.pipeline_name, setting)
            except (KeyError, ValueError, ArithmeticError):
                layers = None
            self._distortion[k] = None if layers is None else self._prior.distortion(layers)
        return self._distortion[k]

    def starts(self) -> list[dict]:
        out = []
        if self.witness:
            out.append(self.space.snap(self.witness))
        out.append(self.space.snap({}))
        return out
