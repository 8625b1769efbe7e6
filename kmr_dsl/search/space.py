"""The knob space a search moves in: ordered ladders of values, and move groups.

Contract: every knob instance of a pipeline (`sparsity`, or `s[fc1]` for a member of
the family `s`) becomes an `Axis` with a finite *ladder* of values the search may use:

- bool: (False, True); enum: its members in declared order (an *unordered* ladder:
  every member is a neighbour of every other, no bisection along it);
- a set `{...}` or a stepped range: every value of the domain, in increasing order;
- a float range without `step`: `grid` evenly spaced points from lo to hi (open ends
  left out), default 11, i.e. tenths of the range;
- an int range without `step`: every integer when there are at most 3 * grid of them,
  otherwise `grid` evenly spaced integers;
- a continuous ladder also holds the knob's default and any extra value the caller
  passes (the verifier's witness), so the search can start exactly there.

A `Group` is a set of axes that move together: a plain knob, a whole family (all its
instances shift by the same number of rungs, clipped at the ends) or, when refining,
one family instance. Settings are plain dicts instance -> value; `key(setting)` is
their canonical text, used by the journal to recognise a trial already run.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

GRID = 11


@dataclass(frozen=True)
class Axis:
    name: str               # instance name: `sparsity`, `s[fc1]`
    knob: str               # the declared knob: `sparsity`, `s`
    ladder: tuple           # the values the search may use, in order
    ordered: bool = True    # False for enums: no "direction" along the ladder
    default: object = None

    def index(self, value) -> int:
        """Position of `value` on the ladder (the nearest rung for an off-ladder number)."""
        for i, v in enumerate(self.ladder):
            # True == 1 in Python: a bool only matches a bool
            if v == value and isinstance(v, bool) == isinstance(value, bool):
                return i
        if isinstance(value, (int, float)) and not isinstance(value, bool) and self.ordered:
            return min(range(len(self.ladder)), key=lambda i: (abs(self.ladder[i] - value), i))
        raise KeyError(f"{value!r} is not a value of `{self.name}`")


@dataclass(frozen=True)
class Group:
    name: str               # `sparsity`, `s` (the whole family) or `s[fc1]`
    axes: tuple[str, ...]
    ordered: bool = True


@dataclass
class Space:
    axes: dict[str, Axis]                                   # instance -> axis, declaration order
    families: dict[str, tuple[str, ...]] = field(default_factory=dict)  # family -> instances

    # ------------------------------------------------------------ groups and moves

    def groups(self, refine: bool = False) -> list[Group]:
        """Plain knobs and whole families (tied); with `refine`, one group per instance."""
        out: list[Group] = []
        seen: set[str] = set()
        for name, axis in self.axes.items():
            fam = axis.knob if axis.knob in self.families else None
            if fam is None or refine:
                out.append(Group(name, (name,), axis.ordered))
            elif fam not in seen:
                seen.add(fam)
                members = self.families[fam]
                out.append(Group(fam, members, all(self.axes[m].ordered for m in members)))
        return out

    @property
    def has_families(self) -> bool:
        return any(len(m) > 1 for m in self.families.values())

    def shift(self, setting: dict, group: Group, rungs: int) -> dict | None:
        """Every axis of an ordered group moved `rungs` along its ladder (clipped); None
        when nothing changes (all axes already at that end)."""
        new = dict(setting)
        for name in group.axes:
            axis = self.axes[name]
            i = axis.index(setting[name])
            j = max(0, min(len(axis.ladder) - 1, i + rungs))
            new[name] = axis.ladder[j]
        return new if new != setting else None

    def alternatives(self, setting: dict, group: Group) -> list[dict]:
        """For an unordered group: the setting with the group at every other member."""
        first = self.axes[group.axes[0]]
        current = [setting[a] for a in group.axes]
        out = []
        for member in first.ladder:
            if all(c == member for c in current):
                continue
            new = dict(setting)
            for a in group.axes:
                new[a] = member
            out.append(new)
        return out

    def neighbours(self, setting: dict, group: Group) -> list[tuple[int, dict]]:
        """Coordinate moves: (direction, setting); direction 0 marks an enum alternative."""
        if not group.ordered:
            return [(0, s) for s in self.alternatives(setting, group)]
        out = []
        for d in (+1, -1):
            s = self.shift(setting, group, d)
            if s is not None:
                out.append((d, s))
        return out

    def line(self, setting: dict, group: Group, direction: int) -> list[dict]:
        """The settings one, two, ... rungs away along an ordered group, to the end."""
        out, current = [], setting
        while True:
            nxt = self.shift(current, group, direction)
            if nxt is None:
                return out
            out.append(nxt)
            current = nxt

    # ------------------------------------------------------------ settings

    def snap(self, setting: dict) -> dict:
        """Every axis at its nearest ladder value; axes the setting lacks at their default."""
        out = {}
        for name, axis in self.axes.items():
            v = setting.get(name, axis.default)
            out[name] = axis.ladder[axis.index(v)]
        return out

    def sample(self, rng: random.Random) -> dict:
        return {name: axis.ladder[rng.randrange(len(axis.ladder))] for name, axis in self.axes.items()}

    def size(self) -> int:
        n = 1
        for axis in self.axes.values():
            n *= len(axis.ladder)
        return n

    def signature(self) -> dict:
        """What the journal stores to recognise the same space on --resume."""
        return {name: [list(axis.ladder), axis.ordered] for name, axis in self.axes.items()}


def key(setting: dict) -> str:
    """Canonical text of a setting: equal settings give equal keys."""
    return json.dumps(setting, sort_keys=True, default=str)


# ---------------------------------------------------------------- from a program

def ladder_for(knob, grid: int = GRID, extra=()) -> tuple[tuple, bool]:
    """(ladder, ordered) for a checked-program Knob (see the module docstring)."""
    if knob.type == "bool":
        return (False, True), True
    if knob.type == "enum":
        return tuple(knob.members), False
    finite = knob.values()
    if finite:
        return tuple(finite), True
    dom = knob.domain
    if dom is None or dom.lo is None or dom.hi is None:
        raise ValueError(f"knob `{knob.name}` has no bounded domain to search")
    lo, hi = dom.lo, dom.hi
    if knob.type == "int":
        lo_i = int(lo) + (0 if dom.lo_closed else 1)
        hi_i = int(hi) - (0 if dom.hi_closed else 1)
        if hi_i - lo_i + 1 <= 3 * grid:
            points = list(range(lo_i, hi_i + 1))
        else:
            points = sorted({round(lo_i + (hi_i - lo_i) * i / (grid - 1)) for i in range(grid)})
    else:
        points = [round(lo + (hi - lo) * i / (grid - 1), 12) for i in range(grid)]
        points = [float(p) for p in points
                  if (dom.lo_closed or p > lo) and (dom.hi_closed or p < hi)]
    # the default and the witness join the ladder so the search can start exactly there
    for v in (knob.default, *extra):
        if v is not None and not isinstance(v, bool) and dom.contains(v):
            points.append(int(v) if knob.type == "int" else float(v))
    return tuple(sorted(set(points))), True


def space_for(program, pipeline, grid: int = GRID, extra: dict | None = None) -> Space:
    """The search space of a checked pipeline; `extra` maps instances to values (the
    witness) that continuous ladders must contain."""
    extra = extra or {}
    axes: dict[str, Axis] = {}
    families: dict[str, tuple[str, ...]] = {}
    for inst, knob in program.knob_instances(pipeline):
        ladder, ordered = ladder_for(knob, grid, [extra[inst]] if inst in extra else [])
        default = knob.default_value()
        if default is not None and knob.type in ("int", "float") and default not in ladder:
            default = ladder[Axis(inst, knob.name, ladder).index(default)]
        axes[inst] = Axis(inst, knob.name, ladder, ordered, default)
        if knob.is_family:
            families[knob.name] = knob.instances()
    return Space(axes, families)
