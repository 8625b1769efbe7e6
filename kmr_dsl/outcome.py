"""The result of running a pipeline at one knob setting: one typed value for every command.

Contract: `PipelineSession.evaluate` returns an `Outcome`; `kmr run` prints and saves
it, `kmr search` keeps one per trial (`search.trial.Trial.outcome`) and journals it,
`kmr test` judges property lines on it. Both types are frozen dataclasses of plain
numbers and text, so they cross process boundaries (Ray) as `to_json()` dicts and
come back with `from_json`.

- `LineVerdict`: one budget line judged on the readings: the line as written, whether
  it holds, both sides' values, the margin (positive when it holds with room to spare;
  `kmr_dsl.core.evaluate.margin`), whether it reads analytic meters only, the operator and
  its source line.
- `Outcome`: the setting, every meter read on the result and on the baseline (keyed by
  `kmr_dsl.core.evaluate.meter_key`), the verdict of every budget line, the objective's
  value, the seconds it took, the verifier's predictions beside them and the
  pipeline's `report` items when they were read (`reported`). `feasible` is derived:
  every line holds.

JSON: `Outcome.to_json` is the shape report.json and `kmr run --format json` print
(lines under `budget`); `from_json` also reads the older search-journal shape (lines
under `lines`). Non-finite numbers are written as text ("inf", "nan": strict JSON has
no such numbers) and read back as floats. Nothing here imports beyond the standard
library: the search journal is read without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def finite(value) -> float | None:
    """`value` as a finite float, or None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _number_or_none(value) -> float | None:
    """A float (non-finite ones too, from text such as "inf"), or None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _plain(value: float | None):
    """A number for strict JSON: finite floats stay, the others become text."""
    if value is None:
        return None
    return value if math.isfinite(value) else str(value)


@dataclass(frozen=True, slots=True)
class LineVerdict:
    text: str                      # the budget line as written
    holds: bool
    left: float | None             # None: the side could not be read as a number
    right: float | None
    margin: float | None
    analytic: bool = False
    op: str = ""
    line: int = 0                  # its line in the program's file (0: unknown)

    def to_json(self) -> dict:
        return {"text": self.text, "holds": self.holds, "left": _plain(self.left), "right": _plain(self.right),
                "margin": _plain(self.margin), "analytic": self.analytic, "op": self.op, "line": self.line}

    @classmethod
    def from_json(cls, data: dict) -> "LineVerdict":
        line = data.get("line", 0)
        return cls(text=str(data.get("text", "?")), holds=bool(data.get("holds", False)),
                   left=_number_or_none(data.get("left")), right=_number_or_none(data.get("right")),
                   margin=_number_or_none(data.get("margin")), analytic=bool(data.get("analytic", False)),
                   op=str(data.get("op", "")), line=line if isinstance(line, int) else 0)


@dataclass(frozen=True)
class Outcome:
    setting: dict
    meters: dict[str, float]
    baseline: dict[str, float]
    lines: tuple[LineVerdict, ...]
    objective: float | None
    seconds: float = 0.0
    predicted: dict[str, float] = field(default_factory=dict)
    # the pipeline's `report` items ({"text", "value", "baseline"}), read on `kmr run`'s
    # result and on the setting a search chose, never on a trial: never used to choose
    reported: tuple[dict, ...] = ()

    @property
    def feasible(self) -> bool:
        return all(line.holds for line in self.lines)

    def missed(self) -> list[str]:
        """The budget lines that fail, as written."""
        return [line.text for line in self.lines if not line.holds]

    def violation(self, tolerance: float = 1e-12) -> float:
        """Total *normalised* violation: the sum over failing lines of
        `-margin / max(|left|, |right|)`, so 0.1 means "10 % off the bound" whatever the
        unit; a line whose margin cannot be read counts 1, and a failing line with a
        non-negative margin (`==`, `<`) counts `tolerance` more."""
        total = 0.0
        for line in self.lines:
            if line.holds:
                continue
            margin = finite(line.margin)
            scale = max(abs(finite(line.left) or 0.0), abs(finite(line.right) or 0.0))
            if margin is None:
                total += 1.0
            else:
                total += abs(min(margin, 0.0)) / scale if scale > 0 else abs(margin)
                if margin >= 0:
                    total += tolerance
        return total

    def to_json(self) -> dict:
        return {
            "setting": dict(self.setting),
            "meters": {k: _plain(v) for k, v in self.meters.items()},
            "baseline": {k: _plain(v) for k, v in self.baseline.items()},
            "predicted": {k: _plain(v) for k, v in self.predicted.items()},
            "budget": [line.to_json() for line in self.lines],
            "objective": _plain(self.objective),
            "feasible": self.feasible,
            "seconds": round(self.seconds, 3),
            "report": [{"text": r["text"], "value": _plain(r["value"]), "baseline": _plain(r["baseline"])}
                       for r in self.reported],
        }

    @classmethod
    def from_json(cls, data: dict) -> "Outcome":
        """An outcome from `to_json`'s dict or a journal's trial line; meters that are
        not finite numbers are left out (a reading that failed is no reading)."""
        def readings(key: str) -> dict[str, float]:
            return {k: finite(v) for k, v in (data.get(key) or {}).items() if finite(v) is not None}

        lines = data.get("budget", data.get("lines")) or ()
        return cls(setting=dict(data.get("setting") or {}), meters=readings("meters"), baseline=readings("baseline"),
                   lines=tuple(LineVerdict.from_json(line) for line in lines if isinstance(line, dict)),
                   objective=finite(data.get("objective")), seconds=finite(data.get("seconds")) or 0.0,
                   predicted=readings("predicted"),
                   reported=tuple({"text": str(r.get("text", "?")), "value": _number_or_none(r.get("value")),
                                   "baseline": _number_or_none(r.get("baseline"))}
                                  for r in (data.get("report") or ()) if isinstance(r, dict)))


__all__ = ["LineVerdict", "Outcome", "finite"]
