"""The moves Budgeted-KMR (kmr_dsl.search.budgeted) makes from its incumbent x, the best
trial run so far: steps 2-5 of its outline.

Contract: `LadderMoves` is the base class of `Budgeted`; its methods read the strategy's
`search`, `space`, `problem`, `batch`, `slopes` (measured quality per rung) and
`_tiebreak` (the seeded order of groups), and yield batches of settings to run, every one
first admitted by `search.admissible` (which records a refused one as skipped).

2. repair (x fails an empirical line, once per x): for each group, jump to the farthest
   admissible rung in the direction that spends analytic budget (and to both ends of a
   knob with no analytic cost): empirical lines are usually quality floors, and
   spending the slack is the fastest way to meet them; then probe only the neighbours
   that do not save budget, before the others;
3. probe: the one-rung neighbours of x along the chosen groups (enum groups: every
   other member), in one batch;
4. extend: along every direction whose neighbour beat x, evaluate the farthest
   admissible rung; if it is not at least as good as the neighbour, bisect between
   them (O(log n) runs) for the last rung that still improves, i.e. the edge of
   feasibility, provided the predicted cost is monotone along the line;
5. when every group is exhausted at x, try exchange moves: one group spends a rung of
   budget and another saves the fewest rungs that make the pair admissible, or one
   group saves a rung and another spends all the budget it frees; ranked by the
   estimated objective change (measured per-rung slopes), then by cost saved;

Groups are chosen `batch` at a time in order of *cost saved per quality lost*:
the predicted cost a one-rung saving move saves, divided by the objective it lost
when last measured (unmeasured groups first; ties in a seeded random order, the only
use of the seed).
"""

from __future__ import annotations

import math

from kmr_dsl.search.space import Group, key
from kmr_dsl.search.trial import at_least, quality


class LadderMoves:
    """Moves along the knobs' ladders from the incumbent (the strategy holds the state)."""

    def _direction(self, setting: dict, group: Group, spend: bool) -> int | None:
        """The direction along an ordered group in which the predicted cost rises
        (`spend`) or falls; None when neither does (a flat or unpredicted group). Each
        side is judged by its first rung whose cost differs from here, so a stretch
        where the cost model is flat (low sparsity, when dense storage stays smaller
        than a sparse one) does not hide the slope beyond it. Both sides are compared,
        since a cost need not be monotone (at high sparsity 16-bit weights can be
        smaller than 8-bit ones)."""
        here = self.problem.pressure(setting)
        if here is None or not group.ordered:
            return None
        best = None
        for d in (+1, -1):
            p = None
            for s in self.space.line(setting, group, d):
                p = self.problem.pressure(s)
                if p is None or p != here:
                    break
            if p is None or (p <= here if spend else p >= here):
                continue
            change = abs(p - here)
            if best is None or change > best[0]:
                best = (change, d)
        return best[1] if best else None

    def _spend_direction(self, setting: dict, group: Group) -> int | None:
        return self._direction(setting, group, spend=True)

    def _save_direction(self, setting: dict, group: Group) -> int | None:
        return self._direction(setting, group, spend=False)

    def _admissible_ray(self, setting: dict, group: Group, direction: int) -> list[dict]:
        """Rungs along the line up to the first inadmissible one (recorded as skipped)."""
        out = []
        for s in self.space.line(setting, group, direction):
            if not self.search.admissible(s):
                break
            out.append(s)
        return out

    def _repair(self, x, chosen: list[Group]):
        """Far jumps that may fix a failing quality floor: the farthest admissible rung in
        the spending direction, and both ends of a knob that costs nothing analytic
        (epochs, a learning rate: its best value for quality is usually at an end)."""
        targets = []
        for g in chosen:
            d = self._spend_direction(x.setting, g)
            if d is not None:
                ends = self._admissible_ray(x.setting, g, d)[-1:]
            elif self._flat(x.setting, g):
                ends = [line[-1] for line in (self.space.line(x.setting, g, +1), self.space.line(x.setting, g, -1))
                        if line and self.search.admissible(line[-1])]
            else:
                ends = []
            targets += [t for t in ends if t not in targets]
        if targets:
            yield targets

    def _flat(self, setting: dict, group: Group) -> bool:
        """An ordered group whose moves leave the predicted cost unchanged."""
        here = self.problem.pressure(setting)
        return (here is not None and group.ordered
                and self._spend_direction(setting, group) is None and self._save_direction(setting, group) is None)

    def _probe(self, x, chosen: list[Group], saving: bool = True):
        """Run the one-rung neighbours of x; without `saving`, only those that do not
        lower the predicted cost (when x fails a quality floor they cannot fix it)."""
        here = self.problem.pressure(x.setting)
        moves = [(g, d, s) for g in chosen for d, s in self.space.neighbours(x.setting, g)
                 if (saving or here is None or (self.problem.pressure(s) or here) >= here)
                 and self.search.admissible(s)]
        if not moves:
            return
        trials = yield [s for _, _, s in moves]
        improving = []
        for (g, d, _), t in zip(moves, trials):
            if d != 0 and x.objective is not None and t.objective is not None:
                self.slopes[(g.name, d)] = quality(t, self.search.direction) - quality(x, self.search.direction)
            if d != 0 and self.search.better(t, x):
                improving.append((g, d, t))
        yield from self._extend(improving)

    def _extend(self, lines):
        rays = []
        for g, d, near in lines:
            ray = self._admissible_ray(near.setting, g, d)
            if ray:
                rays.append((near, [near.setting] + ray))
        if not rays:
            return
        fars = yield [pts[-1] for _, pts in rays]
        # bisection state per line: [lo index, lo trial, hi index, points]
        open_lines = []
        for (near, pts), far in zip(rays, fars):
            direction = self.search.direction
            if not at_least(far, near, direction) and self._monotone(pts):
                open_lines.append([0, near, len(pts) - 1, pts])
        while open_lines:
            mids = [(lo + hi) // 2 for lo, _, hi, _ in open_lines]
            trials = yield [pts[m] for m, (_, _, _, pts) in zip(mids, open_lines)]
            for state, m, t in zip(open_lines, mids, trials):
                if at_least(t, state[1], self.search.direction):
                    state[0], state[1] = m, t
                else:
                    state[2] = m
            open_lines = [s for s in open_lines if s[2] - s[0] > 1]

    def _monotone(self, points: list[dict]) -> bool:
        """Is the predicted cost monotone along the line? (unknown counts as yes)"""
        ps = [self.problem.pressure(s) for s in points]
        if any(p is None for p in ps):
            return True
        steps = [b - a for a, b in zip(ps, ps[1:])]
        return all(s >= 0 for s in steps) or all(s <= 0 for s in steps)

    def _trade(self, x, groups: list[Group]):
        """Exchange moves at an exhausted incumbent, in two shapes for every pair (g, h):
        g spends one rung and h saves the fewest rungs that make it admissible again;
        or h saves one rung and g spends every rung the freed budget pays for."""
        base = self.problem.pressure(x.setting)
        if base is None:
            return
        ordered = [g for g in groups if g.ordered]
        cands = {}
        for g in ordered:
            for h in ordered:
                if g.name == h.name:
                    continue
                for kg, kh, s in self._exchanges(x.setting, g, h):
                    if self.search.known(s) is not None or key(s) in cands:
                        continue
                    dg, dh = self._spend_direction(x.setting, g), self._save_direction(x.setting, h)
                    gain = kg * self._slope(g, dg) + kh * self._slope(h, dh)
                    saved = base - (self.problem.pressure(s) or base)
                    cands[key(s)] = (-gain, -saved, self._tiebreak.get(g.name, 0),
                                     self._tiebreak.get(h.name, 0), kg, kh, s)
        picked = []
        for c in sorted(cands.values(), key=lambda c: c[:6]):
            if self.search.admissible(c[6]):
                picked.append(c[6])
            if len(picked) == self.batch:
                break
        if picked:
            yield picked

    def _exchanges(self, setting: dict, g: Group, h: Group):
        """(rungs g spent, rungs h saved, setting) for the two trade shapes."""
        d, e = self._spend_direction(setting, g), self._save_direction(setting, h)
        if d is None or e is None:
            return
        longest = max(len(self.space.axes[a].ladder) for a in (*g.axes, *h.axes))
        spent = self.space.shift(setting, g, d)
        for k in range(1, longest):       # g one rung up, h down until admissible
            s = self.space.shift(spent, h, e * k) if spent is not None else None
            if s is None:
                break
            if self.problem.admissible(s):
                yield 1, k, s
                break
        saved = self.space.shift(setting, h, e)
        best = None
        for k, s in enumerate(self.space.line(saved, g, d) if saved is not None else (), start=1):
            if not self.problem.admissible(s):
                break
            best = (k, 1, s)                # h one rung down, g up as far as it pays for
        if best is not None:
            yield best

    def _slope(self, group: Group, direction: int | None) -> float:
        """Objective change per rung along a group, from the last probe that measured it;
        a probe the other way counts with its sign flipped (a locally linear guess);
        0 when the group was never measured."""
        if direction is None:
            return 0.0
        if (group.name, direction) in self.slopes:
            return self.slopes[(group.name, direction)]
        return -self.slopes.get((group.name, -direction), 0.0)

    def _measured(self, group: Group) -> bool:
        return (group.name, 1) in self.slopes or (group.name, -1) in self.slopes

    def _prioritise(self, x, groups: list[Group]) -> list[Group]:
        """Most cost saved per quality lost first; groups never measured before that."""
        def efficiency(g: Group) -> float:
            d = self._save_direction(x.setting, g)
            saver = self.space.shift(x.setting, g, d) if d is not None else None
            lost = -self._slope(g, d) if d is not None and self._measured(g) else None
            if saver is None or lost is None:
                return math.inf
            saved = (self.problem.pressure(x.setting) or 0.0) - (self.problem.pressure(saver) or 0.0)
            return abs(saved) / max(-lost, 1e-9)

        return sorted(groups, key=lambda g: (-efficiency(g), self._tiebreak.get(g.name, 0)))
