"""A synthetic compression problem for the search tests: no torch, no verifier.

The "model" has a few layers; a setting prunes (`sparsity`), quantizes (`bits`) and
factorizes (`ratio`) them. Its size is analytic (the fake verifier and the fake
session agree on it exactly); its accuracy is "measured": a smooth, monotone loss in
each knob, so the true optimum is known by brute force over the ladders.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from kmr_dsl.outcome import LineVerdict, Outcome
from kmr_dsl.search.problem import Problem
from kmr_dsl.search.space import Axis, Space, key

SIZE_LIMIT = 24_000.0
ACCURACY_FLOOR = 0.94
BASE_ACCURACY = 0.97
LAYERS = {"fc1": 16_384, "fc2": 65_536, "fc3": 2_560}       # weights per layer
SENSITIVITY = {"fc1": 0.9, "fc2": 0.25, "fc3": 1.6}          # accuracy lost per unit of damage
BIT_LOSS = {2: 0.05, 4: 0.012, 8: 0.002, 16: 0.0, 32: 0.0}


def _ladder(lo, hi, step):
    n = round((hi - lo) / step)
    return tuple(round(lo + i * step, 12) for i in range(n + 1))


def make_space(knobs=("sparsity", "bits", "ratio"), family: bool = False) -> Space:
    axes: dict[str, Axis] = {}
    families = {}
    if "sparsity" in knobs:
        if family:
            names = tuple(f"s[{layer}]" for layer in LAYERS)
            for n in names:
                axes[n] = Axis(n, "s", _ladder(0.0, 0.95, 0.05), True, 0.5)
            families["s"] = names
        else:
            axes["sparsity"] = Axis("sparsity", "sparsity", _ladder(0.0, 0.95, 0.05), True, 0.5)
    if "bits" in knobs:
        axes["bits"] = Axis("bits", "bits", (2, 4, 8, 16, 32), True, 8)
    if "ratio" in knobs:
        axes["ratio"] = Axis("ratio", "ratio", _ladder(0.1, 1.0, 0.1), True, 1.0)
    if "scheme" in knobs:
        axes["scheme"] = Axis("scheme", "scheme", ("dynamic", "weight_only"), False, "dynamic")
    return Space(axes, families)


def _sparsity(setting, layer):
    return setting.get(f"s[{layer}]", setting.get("sparsity", 0.0))


def size_of(setting) -> float:
    bits = setting.get("bits", 32)
    ratio = setting.get("ratio", 1.0)
    total = 0.0
    for layer, n in LAYERS.items():
        total += n * (1 - _sparsity(setting, layer)) * ratio * bits / 8 + 40.0
    return total


def accuracy_of(setting) -> float:
    loss = BIT_LOSS[setting.get("bits", 32)]
    for layer in LAYERS:
        s = _sparsity(setting, layer)
        loss += SENSITIVITY[layer] * 0.1 * max(0.0, s - 0.4) ** 2 * 4
    loss += 0.08 * (1 - setting.get("ratio", 1.0)) ** 2
    if setting.get("scheme") == "weight_only":
        loss -= 0.001
    return BASE_ACCURACY - loss


@dataclass
class FakeProblem(Problem):
    space: Space
    limit: float = SIZE_LIMIT
    direction: str | None = "maximize"
    witness: dict | None = None
    cost_label: str = "size"
    quality_label: str = "accuracy(test)"
    asked: list = field(default_factory=list)

    def admissible(self, setting):
        self.asked.append(key(setting))
        return size_of(setting) <= self.limit

    def pressure(self, setting):
        return size_of(setting) / self.limit

    def starts(self):
        defaults = {n: a.default for n, a in self.space.axes.items()}
        return ([self.witness] if self.witness else []) + [defaults]


BIT_DISTORTION = {2: 1.5, 4: 0.3, 8: 0.05, 16: 0.0, 32: 0.0}


def distortion_of(setting) -> float:
    """A prior on the damage, like the weight error a real prior reads: it ranks settings
    roughly as the accuracy does, but is not the accuracy (no knee at 40 % sparsity,
    every layer weighs the same)."""
    total = BIT_DISTORTION[setting.get("bits", 32)]
    for layer in LAYERS:
        total += _sparsity(setting, layer) ** 2
    return total + (1 - setting.get("ratio", 1.0)) ** 2


@dataclass
class PriorProblem(FakeProblem):
    """The fake problem with a quality prior (`distortion`)."""

    def distortion(self, setting):
        return distortion_of(setting)


def least_distorted(space: Space, limit=SIZE_LIMIT):
    """(distortion, setting) of the admissible setting with the least prior distortion."""
    names = list(space.axes)
    best = None
    for values in itertools.product(*(space.axes[n].ladder for n in names)):
        s = dict(zip(names, values))
        if size_of(s) <= limit and (best is None or distortion_of(s) < best[0] - 1e-12):
            best = (distortion_of(s), s)
    return best


class FakeSession:
    """Evaluates the synthetic model; can be told to raise Ctrl-C or sleep per trial."""

    def __init__(self, limit=SIZE_LIMIT, floor=ACCURACY_FLOOR, direction="maximize",
                 interrupt_after=None, delay=0.0):
        self.limit, self.floor, self.direction = limit, floor, direction
        self.interrupt_after = interrupt_after
        self.delay = delay
        self.evaluated: list[dict] = []
        self.last_model = None

    def evaluate(self, setting):
        if self.interrupt_after is not None and len(self.evaluated) >= self.interrupt_after:
            raise KeyboardInterrupt
        if self.delay:
            time.sleep(self.delay)
        self.evaluated.append(dict(setting))
        size, acc = size_of(setting), accuracy_of(setting)
        lines = (
            LineVerdict(f"size <= {self.limit / 1000:g} KB", size <= self.limit, size, self.limit, self.limit - size,
                        analytic=True, op="<="),
            LineVerdict(f"accuracy(test) >= {self.floor * 100:g}%", acc >= self.floor, acc, self.floor,
                        acc - self.floor, analytic=False, op=">="),
        )
        objective = {"maximize": acc, "minimize": size, None: None}[self.direction]
        self.last_model = ("model", key(setting))
        return Outcome(dict(setting), {"size": size, "accuracy(test)": acc},
                       {"size": size_of({}), "accuracy(test)": BASE_ACCURACY}, lines, objective, 0.001)

    def weight_profiles(self):
        """No weight matrix to profile: the search runs without a quality prior."""
        return {}

    def save(self, model, out_dir, setting, outcome=None, extra=None):
        """The model as JSON, and the outcome beside it as PipelineSession.save does."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "model.json"
        path.write_text(json.dumps({"model": list(model), "setting": setting}))
        if outcome is not None:
            report = {"pipeline": "fake", **outcome.to_json(), **(extra or {})}
            (out_dir / "report.json").write_text(json.dumps(report))
        return path


def make_fake_session(**kwargs):
    """A TaskSpec factory for the Ray backend test."""
    return FakeSession(**kwargs)


def brute_force(space: Space, limit=SIZE_LIMIT, floor=ACCURACY_FLOOR, direction="maximize"):
    """(best objective, settings that reach it) over every setting of the ladders."""
    names = list(space.axes)
    best, arg = None, []
    for values in itertools.product(*(space.axes[n].ladder for n in names)):
        s = dict(zip(names, values))
        if size_of(s) > limit or accuracy_of(s) < floor:
            continue
        q = accuracy_of(s) if direction == "maximize" else -size_of(s)
        if best is None or q > best + 1e-12:
            best, arg = q, [s]
        elif abs(q - best) <= 1e-12:
            arg.append(s)
    return best, arg


def run(strategy, problem, session, journal_path, *, steps=40, resume=False, time_limit=None):
    """One search on the fakes with a local backend; returns the SearchResult."""
    from kmr_dsl.search.backends import LocalBackend
    from kmr_dsl.search.driver import Limits, run_search
    from kmr_dsl.search.journal import Journal

    header = {"pipeline": "fake", "strategy": strategy.name, "seed": strategy.seed,
              "space": problem.space.signature()}
    journal = Journal.open(Path(journal_path), header, resume=resume)
    try:
        return run_search(problem, strategy, LocalBackend(session), journal, Limits(steps, time_limit))
    finally:
        journal.close()
