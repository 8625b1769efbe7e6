"""Budgeted-KMR: coordinate search on knob ladders, guided by the analytic cost model.

Contract (see docs/search.md for the prose): `Budgeted(...).run(search)` is a driver
strategy (kmr_dsl.search.driver). It never proposes a setting the analytic budget
rules out without first asking `search.admissible` (which records it as skipped), and
it decides only after a whole batch came back, so it is deterministic for a given seed
whatever order a backend finishes trials in.

Outline, at the *incumbent* x (the best trial run so far):
1. start: the verifier's witness, else the defaults if admissible, else a free descent
   on the predicted cost (no runs) to the first admissible setting. With a quality
   prior (`problem.distortion`, the weight error a setting implies), the first run is
   the admissible setting the prior rates best, found by a free Lagrangian sweep over
   every knob instance, beside each knob without analytic cost at its ends. Without
   one, (`spend`, default on) free climbs spend the analytic slack left there, always
   on the knob that has relaxed least so far: the first batch is that balanced,
   least-compressed admissible setting, the same climb with each knob held at its
   cheapest rung, and each knob without analytic cost at its ends;
2-5. repair, probe, extend and exchange moves at x, on groups chosen `batch` at a
   time by cost saved per quality lost (kmr_dsl.search.moves, whose docstring says
   each);
6. stop when nothing improves (converged); families are first moved as one group
   (every instance one rung together), then, if `refine`, refined per instance.
"""

from __future__ import annotations

import random

from kmr_dsl.search.moves import LadderMoves
from kmr_dsl.search.space import Group, key

STOP_CONVERGED = "converged (no improving move)"
STOP_NO_START = "no setting meets the analytic budget"
STOP_NO_RUN = "no trial ran"

# the prices of predicted cost the prior's Lagrangian sweep tries, dearest first
LAMBDAS = tuple(10.0 ** (3 - k / 4) for k in range(25))
SWEEPS = 4
# a cap on the prior's evaluations (each one predicts every layer's state), so that a
# family over hundreds of layers costs seconds, not minutes: past it the sweep stops
# and the best admissible setting found so far is the first run (a count, not a clock,
# so the result does not depend on the machine)
PRIOR_EVALS = 20_000


class Budgeted(LadderMoves):
    name = "budgeted"

    def __init__(self, max_steps: int = 20, seed: int = 0, batch: int = 4, refine: bool = True,
                 spend: bool = True):
        self.max_steps = max_steps
        self.seed = seed
        self.batch = max(1, int(batch))
        self.refine = bool(refine)
        self.spend = bool(spend)
        self.slopes: dict[tuple[str, int], float] = {}   # (group, direction) -> quality per rung

    # ------------------------------------------------------------ the whole search

    def run(self, search):
        self.search, self.space, self.problem = search, search.space, search.problem
        names = [g.name for g in self.space.groups(False)] + [g.name for g in self.space.groups(True)]
        order = list(dict.fromkeys(names))
        random.Random(self.seed).shuffle(order)
        self._tiebreak = {name: i for i, name in enumerate(order)}
        starts = self._start_batch()
        if not starts:
            return STOP_NO_START
        yield starts
        phases = [False, True] if self.refine and self.space.has_families else [False]
        for refine in phases:
            reason = yield from self._climb(self.space.groups(refine))
            if reason != STOP_CONVERGED:
                return reason
        return STOP_CONVERGED

    def _start_point(self) -> dict | None:
        starts = self.problem.starts()
        x = next((s for s in starts if self.search.admissible(s)), None)
        if x is None and starts:
            x = self._descend(starts[0])
        return x

    def _start_batch(self) -> list[dict]:
        """The first batch (no runs spent to build it). With a quality prior: the
        admissible setting the prior rates best, and each knob with no analytic cost at
        its ends. Without one but with `spend`: the start point with its slack spent
        evenly; for each knob, the same climb with that knob held at its cheapest rung
        (which knob to give up is the first trade-off to learn); and each knob with no
        analytic cost at its ends. Otherwise the start point alone."""
        x = self._start_point()
        if x is None:
            return []
        if self.problem.distortion(x) is not None and self.problem.pressure(x) is not None:
            first = self._least_distortion(x)
            batch = [first] + self._flat_ends(first)
        elif self.spend:
            balanced = self._spend_slack(x)
            batch = [balanced]
            for g in self.space.groups(False):
                cheap = self._cheapest(balanced, g)
                if cheap is not None:
                    batch.append(self._spend_slack(cheap, held=g.name))
            batch += self._flat_ends(balanced)
        else:
            return [x]
        out = []
        for s in batch:
            if s not in out and self.problem.admissible(s):
                out.append(s)
        return out

    def _flat_ends(self, x: dict) -> list[dict]:
        """`x` with each knob that has no analytic cost (epochs, lr) at either end."""
        return [line[-1] for g in self.space.groups(False) if self._flat(x, g)
                for line in (self.space.line(x, g, +1), self.space.line(x, g, -1)) if line]

    def _least_distortion(self, x0: dict) -> dict:
        """The admissible setting with the least prior distortion that a free search
        finds (no runs). First a Lagrangian sweep: for a falling price `lam` on the
        predicted cost, minimise distortion + lam * pressure by coordinate descent over
        every knob instance (whole ladders, warm-started from the last price); instances
        move alone, so the budget is shared out per layer and the layers whose weights
        suffer least give up most. Of the admissible results (and `x0`) the least
        distorted is then improved by exchange moves until none helps: one instance
        anywhere on its ladder, or one knob at any rung with a second knob at the rung
        that then distorts least (the sweep only reaches the convex hull of the cost /
        distortion trade-off; exchanges reach the points between, e.g. 4-bit weights
        with a little sparsity beside 8-bit ones with much more). At most about
        PRIOR_EVALS prior evaluations are spent; with too many instances for that, the
        sweep moves whole families and only the exchange phase moves single instances."""
        instances = [g for g in self.space.groups(True) if g.ordered]
        knobs = [g for g in self.space.groups(False) if g.ordered]
        rungs = sum(len(self.space.axes[g.axes[0]].ladder) for g in instances)
        # too many instances for a full sweep per price: sweep whole families (tied),
        # and leave the per-instance moves to the exchange phase below
        sweep = instances if rungs * SWEEPS * len(LAMBDAS) <= PRIOR_EVALS else knobs
        spent = [0]         # prior evaluations: the search stops early past PRIOR_EVALS

        def prior(s: dict):
            spent[0] += 1
            return self.problem.distortion(s)

        def score(s: dict, lam: float):
            d, p = prior(s), self.problem.pressure(s)
            return None if d is None or p is None else d + lam * p

        candidates, x = [x0], x0
        for lam in LAMBDAS:
            for _ in range(SWEEPS):
                moved = False
                for g in sweep:
                    scored = [(v, i, s) for i, s in enumerate(self._ladder(x, g)) if (v := score(s, lam)) is not None]
                    if scored and (best := min(scored, key=lambda t: t[:2])[2]) != x:
                        x, moved = best, True
                if not moved or spent[0] > PRIOR_EVALS:
                    break
            candidates.append(x)
            if spent[0] > PRIOR_EVALS:
                break
        ok = [c for c in candidates if prior(c) is not None and self.problem.admissible(c)]
        if not ok:
            return x0
        best = min(ok, key=lambda c: (prior(c), self.problem.pressure(c) or 0.0))
        while spent[0] <= PRIOR_EVALS:
            found = (prior(best), None)

            def consider(s: dict):
                nonlocal found
                d = prior(s)
                if d is not None and d < found[0] - 1e-12 and self.problem.admissible(s):
                    found = (d, s)

            for g in instances:
                for s in self._ladder(best, g)[1:]:
                    consider(s)
            for g in knobs:
                for moved in self._ladder(best, g)[1:]:
                    for h in knobs:
                        if h.name != g.name:
                            for s in self._ladder(moved, h)[1:]:
                                consider(s)
            if found[1] is None:
                return best
            best = found[1]
        return best

    def _ladder(self, x: dict, group: Group) -> list[dict]:
        """`x`, then `x` with the group at every other rung (nearest first, up then down)."""
        return [x] + self.space.line(x, group, +1) + self.space.line(x, group, -1)

    def _cheapest(self, x: dict, group: Group) -> dict | None:
        """`x` with one ordered group moved to the rung of its ladder with the lowest
        predicted cost; None when that is where it already is or nothing is predicted."""
        if not group.ordered or self.problem.pressure(x) is None:
            return None
        scored = [(p, i, s) for i, s in enumerate(self._ladder(x, group)) if (p := self.problem.pressure(s)) is not None]
        best = min(scored, key=lambda t: t[:2])[2]
        return None if best == x else best

    def _spend_slack(self, x: dict, held: str | None = None) -> dict:
        """Free climb: while the analytic budget holds, take a spending rung on the group
        (other than `held`) that has spent the smallest fraction of its ladder (the
        cheaper rung on ties). Knobs thus relax together, at a similar relative level,
        and the run is a balanced least-compressed admissible setting rather than the
        corner a solver's witness usually sits in (every knob at an extreme)."""
        groups = [g for g in self.space.groups(False) if g.ordered and g.name != held]
        for _ in range(sum(len(a.ladder) for a in self.space.axes.values())):
            here = self.problem.pressure(x)
            moves = []
            for i, g in enumerate(groups):
                d = self._spend_direction(x, g)
                nxt = self.space.shift(x, g, d) if d is not None else None
                if nxt is not None and self.problem.admissible(nxt):
                    moves.append((self._spent_fraction(x, g, d), self.problem.pressure(nxt) - here, i, nxt))
            if not moves:
                break
            x = min(moves, key=lambda m: m[:3])[3]
        return x

    def _spent_fraction(self, setting: dict, group: Group, direction: int) -> float:
        """How far along its ladder, towards the spending end, a group sits (0..1)."""
        total = 0.0
        for name in group.axes:
            axis = self.space.axes[name]
            i, last = axis.index(setting[name]), max(1, len(axis.ladder) - 1)
            total += (i if direction > 0 else last - i) / last
        return total / len(group.axes)

    def _descend(self, x: dict) -> dict | None:
        """Free walk down the predicted cost until the analytic budget is met."""
        for _ in range(sum(len(a.ladder) for a in self.space.axes.values()) + 1):
            if self.problem.admissible(x):
                return x if self.search.admissible(x) else None
            here = self.problem.pressure(x)
            moves = [s for g in self.space.groups(False) for _, s in self.space.neighbours(x, g)]
            scored = [(p, i, s) for i, s in enumerate(moves) if (p := self.problem.pressure(s)) is not None]
            if here is None or not scored:
                return None
            p, _, best = min(scored, key=lambda t: (t[0], t[1]))
            if p >= here:
                return None
            x = best
        return None

    # ------------------------------------------------------------ one phase

    def _climb(self, groups: list[Group]):
        exhausted: set[str] = set()
        at = None                     # key of the incumbent `exhausted` refers to
        repaired: set[str] = set()
        traded: set[str] = set()
        while True:
            x = self.search.incumbent
            if x is None:
                return STOP_NO_RUN
            xk = key(x.setting)
            if at != xk:
                exhausted, at = set(), xk
            active = [g for g in groups if g.name not in exhausted]
            if not active:
                if xk in traded:
                    return STOP_CONVERGED
                traded.add(xk)
                yield from self._trade(x, groups)
                continue
            chosen = self._prioritise(x, active)[: self.batch]
            if not x.feasible and xk not in repaired:
                # failing a line: first the moves that can raise quality, saving ones later
                repaired.add(xk)
                yield from self._repair(x, chosen)
                if self.search.incumbent is not x:
                    continue
                yield from self._probe(x, chosen, saving=False)
                if self.search.incumbent is not x:
                    continue
            yield from self._probe(x, chosen)
            if self.search.incumbent is x:
                exhausted.update(g.name for g in chosen)
