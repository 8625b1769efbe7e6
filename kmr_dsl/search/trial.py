"""One trial of a search, and how trials are ranked.

Contract: a `Trial` is what the journal stores for one setting: its index, the setting,
a status, and, when it ran, the run's `Outcome` (kmr_dsl.outcome: meters, baseline
readings, the typed verdict of every budget line, the objective, seconds). Status:

- `ok`: it ran and every budget line holds;
- `fails budget`: it ran and some line fails (`violation` > 0 says by how much);
- `skipped (analytically infeasible)`: the analytic budget rules it out, so it was
  never run (no outcome; it does not count as a run);
- `error`: the pipeline raised a KMR diagnostic at this setting (e.g. a rule's
  implementation failed); no outcome, `message` says why; it counts as a run and ranks
  below every other run.

`violation` is the outcome's total *normalised* violation (`Outcome.violation`): 0.1
means "10 % off the bound" whatever the unit; infinite for an error.
`rank(trial, direction)` orders trials: feasible before infeasible, then the better
objective (maximize or minimize), then the smaller violation; errors last.

Journal lines (`to_json`/`from_json`) keep the flat shape of format 1: index, setting,
status, meters, baseline, lines, objective, feasible, violation, seconds, message;
journals written before the typed outcome load unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kmr_dsl.outcome import LineVerdict, Outcome

OK = "ok"
FAILS = "fails budget"
SKIPPED = "skipped (analytically infeasible)"
ERROR = "error"
RAN = (OK, FAILS, ERROR)

# improvements smaller than this are noise, not a reason to move
TOLERANCE = 1e-12


@dataclass
class Trial:
    index: int
    setting: dict
    status: str
    outcome: Outcome | None = None   # None: skipped, or an error
    seconds: float = 0.0             # wall time spent on it (an error's too)
    message: str = ""
    replayed: bool = False           # read back from the journal by --resume, not rerun

    @property
    def ran(self) -> bool:
        return self.status in RAN

    @property
    def meters(self) -> dict[str, float]:
        return self.outcome.meters if self.outcome is not None else {}

    @property
    def baseline(self) -> dict[str, float]:
        return self.outcome.baseline if self.outcome is not None else {}

    @property
    def lines(self) -> tuple[LineVerdict, ...]:
        return self.outcome.lines if self.outcome is not None else ()

    @property
    def objective(self) -> float | None:
        return self.outcome.objective if self.outcome is not None else None

    @property
    def feasible(self) -> bool:
        return self.status == OK and self.outcome is not None and self.outcome.feasible

    @property
    def violation(self) -> float:
        if self.status == ERROR:
            return math.inf
        if self.outcome is None or self.feasible:
            return 0.0
        return self.outcome.violation(TOLERANCE)

    def missed(self) -> list[str]:
        """The budget lines this trial fails, as written."""
        return self.outcome.missed() if self.outcome is not None else []

    def to_json(self) -> dict:
        outcome = self.outcome.to_json() if self.outcome is not None else {}
        return {"index": self.index, "setting": self.setting, "status": self.status,
                "meters": outcome.get("meters", {}), "baseline": outcome.get("baseline", {}),
                "lines": outcome.get("budget", []), "objective": outcome.get("objective"),
                "feasible": self.feasible, "violation": self.violation, "seconds": self.seconds,
                "message": self.message, "kind": "trial"}

    @classmethod
    def from_json(cls, data: dict) -> "Trial":
        status = str(data.get("status", ERROR))
        seconds = float(data.get("seconds") or 0.0)
        outcome = None
        if status in (OK, FAILS):
            outcome = Outcome.from_json({**data, "seconds": seconds})
        return cls(int(data.get("index", 0)), dict(data.get("setting") or {}), status, outcome, seconds,
                   str(data.get("message", "")))


def from_payload(index: int, setting: dict, payload: dict) -> Trial:
    """A trial from an evaluation payload (see backends.evaluate_payload)."""
    if "error" in payload:
        return Trial(index, setting, ERROR, seconds=float(payload.get("seconds") or 0.0), message=payload["error"])
    outcome = Outcome.from_json({**payload, "setting": setting})
    return Trial(index, setting, OK if outcome.feasible else FAILS, outcome, outcome.seconds)


def quality(trial: Trial, direction: str | None) -> float:
    """The objective turned so that larger is better (0 without an objective)."""
    if direction is None or trial.objective is None:
        return 0.0
    return trial.objective if direction == "maximize" else -trial.objective


def rank(trial: Trial, direction: str | None) -> tuple:
    """Sort key: larger is better."""
    if trial.status == ERROR or not trial.ran:
        return (-1, 0.0)
    if trial.feasible:
        q = quality(trial, direction) if trial.objective is not None or direction is None else -math.inf
        return (1, q)
    return (0, -trial.violation)


def better(a: Trial, b: Trial | None, direction: str | None) -> bool:
    """Is `a` strictly better than `b` (by more than the noise tolerance)?"""
    if b is None:
        return a.ran and a.status != ERROR
    ra, rb = rank(a, direction), rank(b, direction)
    if ra[0] != rb[0]:
        return ra[0] > rb[0]
    return ra[1] > rb[1] + TOLERANCE * max(1.0, abs(rb[1]) if math.isfinite(rb[1]) else 1.0)


def at_least(a: Trial, b: Trial, direction: str | None) -> bool:
    """Is `a` at least as good as `b` (ties within the tolerance count)?"""
    return not better(b, a, direction)
