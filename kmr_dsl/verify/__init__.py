"""Verification of a checked KMR program: symbolic cost models (sympy) and proofs (Z3).

Contract: the only stage that imports z3; it imports sympy and numpy, never torch.
Input is a `kmr_dsl.core.program.CheckedProgram`; nothing here parses or type-checks.

Public API:
- `verify(program, pipeline=None, rlimit=..., timeout_s=...) -> VerifyReport`:
  composability of every step, budget feasibility (witness or minimal unsat core),
  warnings; verdicts PROVED / REFUTED / UNKNOWN; exit code 0 / 1 / 3.
- `predict(program, pipeline, setting) -> {meter: float}`, `predict_layers` (per-layer
  state fields, for search's quality prior) and
  `is_feasible(program, pipeline, setting) -> bool` for the runtime and search.
- `explain(program, pipeline, meter) -> str`: a meter's cost model, per layer.

Module map: values, algebra, template (building expressions) -> knobs, state (the
abstract state), sympy_eval, stepping (a pipeline through it) -> file_bytes, layer_cost,
cost (meters) -> budget (lines) -> numeric, intervals, bounds (evaluation and cheap
bounds) -> separable, knapsack, certificate (several lines at once: HiGHS MILP and
exactly checked certificates) -> variables, lower (Z3 knob variables; the one
sympy->Z3 table) -> definedness (KMR305), composability, line_checks (a budget line at a
setting), feasibility_results, unsat_cores (one line by its bound, or Z3; minimal cores),
feasibility (the order of work), warnings -> obligations (`verify`), predict. lower.py
and bounds.py describe the encoding; the "3xx proofs" section of docs/errors.md
describes it for users.
"""

from kmr_dsl.core.state import ANALYTIC_METERS
from kmr_dsl.verify.cost import cost_at
from kmr_dsl.verify.explain import explain
from kmr_dsl.verify.obligations import verify
from kmr_dsl.verify.predict import is_feasible, predict, predict_layers
from kmr_dsl.verify.report import CoreMember, Limits, ObligationResult, Verdict, VerifyReport

__all__ = ["ANALYTIC_METERS", "cost_at", "CoreMember", "Limits", "ObligationResult", "Verdict", "VerifyReport", "explain",
           "is_feasible", "predict", "predict_layers", "verify"]
