"""The search loop: strategies propose batches of settings, the driver runs them.

Contract: a strategy is an object with `run(search)`, a generator that yields lists
of settings (a *batch*) and receives, for each batch, the list of `Trial`s in the same
order; it returns (StopIteration value) the reason it stopped. It decides only after a
whole batch came back, so the order in which a backend finishes the trials of a batch
never changes a decision: the local and the Ray backend reach the same best.

For every setting of a batch the driver, in batch order:
1. serves a setting already seen in this search from memory (no run);
2. records an analytically inadmissible one as skipped (journal, no run);
3. serves a setting found in the resumed journal from it (counts as a run, like the
   run it replaces, so a resumed search stops where an uninterrupted one does);
4. otherwise runs it on the backend; each trial is journaled the moment it finishes.

Stop rules: the strategy returns (converged or exhausted); the run budget is spent
(`max_runs`: a batch that would exceed it is cut at the limit, then the search stops);
the wall-time limit passes (checked before each new run); there is no objective and a
feasible setting was found; Ctrl-C (KeyboardInterrupt) stops with the journal intact
and `interrupted` set. The result keeps the best feasible trial (between equal
objectives, the one with the lower predicted cost), or, when there is none, the
closest one (smallest total normalised violation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

from kmr_dsl.search.space import key
from kmr_dsl.search.trial import ERROR, SKIPPED, Trial, better, from_payload, rank

STOP_STEPS = "step limit reached"
STOP_TIME = "time limit reached"
STOP_MET = "budget met (no objective to improve)"
STOP_INTERRUPTED = "interrupted"


@dataclass
class Limits:
    max_runs: int
    time_limit: float | None = None     # seconds of wall time, None: no limit


@dataclass
class SearchResult:
    trials: list[Trial]
    best: Trial | None                  # best feasible trial
    closest: Trial | None               # when none is feasible: the least violating one
    stop_reason: str
    runs: int
    skipped: int
    replayed: int
    errors: int
    first_feasible_run: int | None      # the run count when the first feasible trial ended
    elapsed: float
    counts: dict = field(default_factory=dict)

    @property
    def interrupted(self) -> bool:
        return self.stop_reason == STOP_INTERRUPTED


class _Stop(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Search:
    """The state a strategy sees: the problem, what has run, and the free questions."""

    def __init__(self, problem, backend, journal, limits: Limits,
                 progress: Callable[[Trial, "Search"], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.problem = problem
        self.space = problem.space
        self.direction = problem.direction
        self.backend = backend
        self.journal = journal
        self.limits = limits
        self.progress = progress
        self.clock = clock
        self.started = clock()
        self.trials: list[Trial] = []
        self.memo: dict[str, Trial] = {}
        self.runs = 0
        self.first_feasible_run: int | None = None
        self._best: Trial | None = None
        self._index = 0

    # ------------------------------------------------------------ for strategies

    def admissible(self, setting: dict) -> bool:
        """The analytic budget's verdict; an inadmissible setting is journaled once as skipped."""
        if self.problem.admissible(setting):
            return True
        k = key(setting)
        if k not in self.memo:
            trial = Trial(self._next_index(), dict(setting), SKIPPED, message="analytic budget rules it out")
            self.memo[k] = trial
            self.trials.append(trial)
            if k not in self.journal.skipped:
                self.journal.append(trial)
            self._report(trial)
        return False

    def known(self, setting: dict) -> Trial | None:
        return self.memo.get(key(setting))

    def better(self, a: Trial, b: Trial | None) -> bool:
        return better(a, b, self.direction)

    @property
    def incumbent(self) -> Trial | None:
        """The best trial run so far, feasible or not (ties: see `_prefer`)."""
        return self._best

    # ------------------------------------------------------------ running a batch

    def evaluate(self, batch: list[dict]) -> list[Trial]:
        results: list[Trial | None] = [None] * len(batch)
        planned: list[tuple[str, dict, Trial | None]] = []   # (key, setting, replayed trial)
        where: dict[str, list[int]] = {}
        cut = False
        for i, setting in enumerate(batch):
            k = key(setting)
            if k in self.memo:
                results[i] = self.memo[k]
            elif k in where:
                where[k].append(i)
            elif not self.admissible(setting):
                results[i] = self.memo[k]
            elif self.runs + len(planned) >= self.limits.max_runs:
                cut = True
                break
            else:
                where[k] = [i]
                planned.append((k, dict(setting), self.journal.replay.get(k)))
        # indexes and run numbers follow batch order, whatever order trials finish in
        indexes = {k: self._next_index() for k, _, _ in planned}
        run_numbers = {k: self.runs + n for n, (k, _, _) in enumerate(planned, start=1)}
        fresh = [(k, s) for k, s, old in planned if old is None]
        for k, s, old in planned:
            if old is not None:
                self._finish(replace(old, index=indexes[k], replayed=True), run_numbers[k], journal=False)
        if fresh:
            self._run(fresh, indexes, run_numbers)
        for k, idxs in where.items():
            for i in idxs:
                results[i] = self.memo[k]
        if cut:
            raise _Stop(STOP_STEPS)
        return results

    def _run(self, fresh: list[tuple[str, dict]], indexes: dict[str, int], run_numbers: dict[str, int]) -> None:
        if self._out_of_time():
            raise _Stop(STOP_TIME)
        stream = self.backend.run([s for _, s in fresh])
        done = 0
        try:
            for position, payload in stream:
                k, setting = fresh[position]
                self._finish(from_payload(indexes[k], setting, payload), run_numbers[k], journal=True)
                done += 1
                if done < len(fresh) and self._out_of_time():
                    raise _Stop(STOP_TIME)
        finally:
            stream.close()   # a stopped batch cancels what is still running
        self.backend.retain(key(self._best.setting) if self._best else None)

    def _finish(self, trial: Trial, run_number: int, journal: bool) -> None:
        k = key(trial.setting)
        self.memo[k] = trial
        self.trials.append(trial)
        self.runs += 1
        if journal:
            self.journal.append(trial)
        if trial.feasible and (self.first_feasible_run is None or run_number < self.first_feasible_run):
            self.first_feasible_run = run_number
        if self._prefer(trial, self._best):
            self._best = trial
        self._report(trial)

    def _prefer(self, a: Trial, b: Trial | None) -> bool:
        """`a` better than `b`. Between equals the cheaper one (lower predicted cost)
        wins, then the lower index, so finishing order never decides."""
        if better(a, b, self.direction):
            return True
        if b is None or not a.ran or better(b, a, self.direction):
            return False
        if a.feasible and b.feasible:
            # only between feasible equals: for failing ones a cheaper setting is no
            # closer to meeting the budget, and chasing it would waste runs
            pa, pb = self.problem.pressure(a.setting), self.problem.pressure(b.setting)
            if pa is not None and pb is not None and pa != pb:
                return pa < pb
        return a.index < b.index

    def _report(self, trial: Trial) -> None:
        if self.progress is not None:
            self.progress(trial, self)

    def _out_of_time(self) -> bool:
        return self.limits.time_limit is not None and self.clock() - self.started >= self.limits.time_limit

    def _next_index(self) -> int:
        self._index += 1
        return self._index

    # ------------------------------------------------------------ the result

    def result(self, reason: str) -> SearchResult:
        ran = [t for t in self.trials if t.ran]
        feasible = [t for t in ran if t.feasible]
        best = self._best if self._best is not None and self._best.feasible else None
        closest = None
        if best is None:
            candidates = [t for t in ran if t.status != ERROR]
            if candidates:
                closest = max(candidates, key=lambda t: (rank(t, self.direction), -t.index))
        skipped = sum(1 for t in self.trials if t.status == SKIPPED)
        replayed = sum(1 for t in ran if t.replayed)
        errors = sum(1 for t in ran if t.status == ERROR)
        return SearchResult(
            trials=list(self.trials), best=best, closest=closest, stop_reason=reason,
            runs=self.runs, skipped=skipped, replayed=replayed, errors=errors,
            first_feasible_run=self.first_feasible_run, elapsed=self.clock() - self.started,
            counts={"runs": self.runs, "skipped_infeasible": skipped, "replayed": replayed,
                    "errors": errors, "feasible": len(feasible)},
        )


def run_search(problem, strategy, backend, journal, limits: Limits, progress=None,
               clock: Callable[[], float] = time.monotonic) -> SearchResult:
    """Drive `strategy` to a stop rule; never raises KeyboardInterrupt (see `interrupted`)."""
    search = Search(problem, backend, journal, limits, progress, clock)
    gen = strategy.run(search)
    reason = "strategy finished"
    try:
        batch = next(gen)
        while True:
            results = search.evaluate(batch)
            if search.direction is None and search.incumbent is not None and search.incumbent.feasible:
                reason = STOP_MET
                break
            batch = gen.send(results)
    except StopIteration as stop:
        reason = stop.value or reason
    except _Stop as stop:
        reason = stop.reason
    except KeyboardInterrupt:
        reason = STOP_INTERRUPTED
    finally:
        gen.close()
    return search.result(reason)
