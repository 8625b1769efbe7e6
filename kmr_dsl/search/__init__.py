"""Budgeted-KMR: search the knob space for the best setting that meets the budget.

Contract: `kmr search` (kmr_dsl.search.command) verifies the pipeline, then drives a
strategy (budgeted, random or tpe) over the knobs' ladders (space), running only
settings the analytic budget admits (problem), each on a fresh copy of the model
(backends: local session or Ray tasks), journaling every trial as it ends (journal),
and writes the best model, search.json, trials.md and pareto.png (execute, report,
plot). Importing this package imports no torch, sympy, z3, optuna, ray or matplotlib;
each is imported where it is needed. docs/search.md describes the algorithm.
"""

from kmr_dsl.search.driver import Limits, SearchResult, run_search
from kmr_dsl.search.problem import Problem
from kmr_dsl.search.space import Axis, Group, Space, key
from kmr_dsl.search.trial import Trial

__all__ = ["Axis", "Group", "Limits", "Problem", "SearchResult", "Space", "Trial", "key", "run_search"]
