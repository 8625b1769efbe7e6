"""One trial of a search, and how trials are ranked.

Contract: a `Trial` is what the journal stores for one setting: the meters read, the
verdict of every budget line, the objective, the time it took and a status:

- `ok`: it ran and every budget line holds;
- `fails budget`: it ran and some line fails (`violation` > 0 says by how much);
- `skipped (analytically infeasible)`: the analytic budget rules it out, so it was
  never run (no meters; it does not count as a run);
- `error`: the pipeline raised a KMR diagnostic at this setting (e.g. a rule's
  implementation failed); it counts as a run and ranks below every other run.

`violation` is the total *normalised* violation: the sum over failing lines of
`-margin / max(|left|, |right|)`, so 0.1 means "10 % off the bound" whatever the unit.
`rank(trial, direction)` orders trials: feasible before infeasible, then the better
objective (maximize or minimize), then the smaller violation; errors last.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

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
    meters: dict = field(default_factory=dict)
    baseline: dict = field(default_factory=dict)
    lines: list = field(default_factory=list)
    objective: float | None = None
    feasible: bool = False
    violation: float = 0.0
    seconds: float = 0.0
    message: str = ""
    replayed: bool = False      # read back from the journal by --resume, not rerun

    @property
    def ran(self) -> bool:
        return self.status in RAN

    def missed(self) -> list[str]:
        """The budget lines this trial fails, as written."""
        return [line.get("text", "?") for line in self.lines if not line.get("holds", False)]

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("replayed")
        data["kind"] = "trial"
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Trial":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names and k != "replayed"})


def _number(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def plain_lines(lines) -> list[dict]:
    """Budget-line verdicts as JSON-safe dicts (numbers as floats, others as text)."""
    out = []
    for line in lines or ():
        entry = dict(line)
        for k in ("left", "right", "margin"):
            if k in entry:
                n = _number(entry[k])
                entry[k] = n if n is not None else (None if entry[k] is None else str(entry[k]))
        entry["holds"] = bool(entry.get("holds", False))
        entry["analytic"] = bool(entry.get("analytic", False))
        out.append(entry)
    return out


def violation_of(lines) -> float:
    """Total normalised violation of the failing lines (0 when every line holds)."""
    total = 0.0
    for line in lines:
        if line.get("holds", False):
            continue
        margin = _number(line.get("margin"))
        scale = max(abs(_number(line.get("left")) or 0.0), abs(_number(line.get("right")) or 0.0))
        if margin is None:
            total += 1.0    # a line that could not be read fails by "100 %"
        else:
            total += abs(min(margin, 0.0)) / scale if scale > 0 else abs(margin)
            if margin >= 0:  # `==`/`<` lines can fail with margin 0: count them a little
                total += TOLERANCE
    return total


def from_payload(index: int, setting: dict, payload: dict) -> Trial:
    """A trial from an evaluation payload (see backends.outcome_payload)."""
    if "error" in payload:
        return Trial(index, setting, ERROR, message=payload["error"], seconds=payload.get("seconds", 0.0),
                     violation=math.inf)
    lines = plain_lines(payload.get("lines"))
    feasible = bool(payload.get("feasible")) and all(l["holds"] for l in lines)
    return Trial(
        index=index,
        setting=setting,
        status=OK if feasible else FAILS,
        meters={k: float(v) for k, v in (payload.get("meters") or {}).items() if _number(v) is not None},
        baseline={k: float(v) for k, v in (payload.get("baseline") or {}).items() if _number(v) is not None},
        lines=lines,
        objective=_number(payload.get("objective")),
        feasible=feasible,
        violation=0.0 if feasible else violation_of(lines),
        seconds=float(payload.get("seconds") or 0.0),
    )


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
