"""Baseline strategies: uniform random sampling and Optuna's TPE.

Contract: both are driver strategies (kmr_dsl.search.driver) over the same ladders as
Budgeted-KMR, reproducible from their seed, and never run an inadmissible setting
(the draw is recorded as skipped and does not count as a run). `n` is the number of
runs; since skipped and repeated draws cost no run, draws stop after
`DRAWS_PER_RUN * n` tries or when every setting of the space has been seen.

`batch` settings are proposed at a time (random: 4, TPE: 1 by default); the choice of
the next batch depends only on the seed and the results of earlier batches, so the
local and Ray backends give the same trials.

TPE: `optuna.samplers.TPESampler(seed=seed)` with the analytic and empirical budget as
a constraint (the trial's total normalised violation; skipped settings count 1 + their
predicted cost), maximising the objective turned "larger is better". Ordered ladders
are suggested as integer rung indexes (TPE then models their order), enums and bools as
categories. The study lives only in the driver process (Ray workers never touch it),
in memory, so there is no concurrent writer; on --resume it is rebuilt by replaying
the journal's trials in the same ask/tell order, which keeps the sampler's random
stream, and so every later proposal, identical to an uninterrupted search. With
`storage = "journal"` the study is also written to OUT/optuna-journal.log through
Optuna's JournalStorage file backend (FACTS.md: unlike SQLite it has no race between
processes), rewritten from scratch on each start.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

from kmr_dsl.diagnostics import KmrError, Span, error
from kmr_dsl.search.space import key
from kmr_dsl.search.trial import quality

# draws are cheap (one analytic check each); a tight budget can reject most of them
DRAWS_PER_RUN = 1000
STOP_N = "run budget spent"
STOP_EXHAUSTED = "every setting of the space was seen"
STOP_DRAWS = "draw limit reached (most draws are analytically infeasible)"


class RandomSearch:
    name = "random"

    def __init__(self, n: int = 20, seed: int = 0, batch: int = 4):
        self.max_steps = int(n)
        self.seed = seed
        self.batch = max(1, int(batch))

    def run(self, search):
        rng = random.Random(self.seed)
        space = search.space
        seen: set[str] = set()
        draws = 0
        while search.runs < self.max_steps:
            batch = []
            while len(batch) < min(self.batch, self.max_steps - search.runs) and draws < DRAWS_PER_RUN * self.max_steps:
                if len(seen) >= space.size():
                    break
                s = space.sample(rng)
                draws += 1
                k = key(s)
                if k in seen:
                    continue
                seen.add(k)
                if search.admissible(s):
                    batch.append(s)
            if not batch:
                return STOP_EXHAUSTED if len(seen) >= space.size() else STOP_DRAWS
            yield batch
        return STOP_N


def import_optuna(span: Span):
    try:
        import optuna
    except ImportError:
        raise KmrError(error("KMR506", span, "the `tpe` strategy needs the optional dependency `optuna`",
                             hint="pip install optuna   (or: pip install 'kmr-dsl[tpe]')"))
    return optuna


class TPESearch:
    name = "tpe"

    def __init__(self, n: int = 20, seed: int = 0, batch: int = 1, storage: str = "memory",
                 journal_dir: Path | None = None, span: Span | None = None):
        self.max_steps = int(n)
        self.seed = seed
        self.batch = max(1, int(batch))
        if storage not in ("memory", "journal"):
            raise KmrError(error("KMR223", span or Span.unknown("search"), f"unknown tpe storage `{storage}`",
                                 hint='use storage = "memory" or storage = "journal"'))
        self.storage = storage
        self.journal_dir = journal_dir
        self.optuna = import_optuna(span or Span.unknown("search"))

    def _study(self):
        optuna = self.optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = None
        if self.storage == "journal" and self.journal_dir is not None:
            path = Path(self.journal_dir) / "optuna-journal.log"
            path.unlink(missing_ok=True)   # rebuilt by replay: a stale study would shift the sampler
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            storage = JournalStorage(JournalFileBackend(str(path)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # constraints_func is marked experimental
            sampler = optuna.samplers.TPESampler(
                seed=self.seed, constraints_func=lambda t: (t.user_attrs.get("violation", 0.0),))
        return optuna.create_study(direction="maximize", sampler=sampler, storage=storage,
                                   study_name="kmr-search")

    def _setting(self, trial, space) -> dict:
        out = {}
        for name, axis in space.axes.items():
            if axis.ordered:
                out[name] = axis.ladder[trial.suggest_int(name, 0, len(axis.ladder) - 1)]
            else:
                out[name] = trial.suggest_categorical(name, list(axis.ladder))
        return out

    def run(self, search):
        study = self._study()
        space = search.space
        asks = 0
        seen: set[str] = set()
        worst = 0.0
        while search.runs < self.max_steps and asks < DRAWS_PER_RUN * self.max_steps:
            if len(seen) >= space.size():
                return STOP_EXHAUSTED
            asked, runnable = [], []
            while len(asked) < min(self.batch, self.max_steps - search.runs):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t = study.ask()
                s = self._setting(t, space)
                asks += 1
                seen.add(key(s))
                ok = search.known(s) is not None or search.admissible(s)
                asked.append((t, s, ok))
                if ok and s not in runnable:
                    runnable.append(s)
            results = (yield runnable) if runnable else []
            by_key = {key(s): r for s, r in zip(runnable, results)}
            for t, s, ok in asked:
                r = by_key.get(key(s)) or search.known(s)
                if ok and r is not None and r.ran and r.objective is not None:
                    value = quality(r, search.direction)
                    worst = min(worst, value)
                    t.set_user_attr("violation", float(min(r.violation, 1e6)))
                else:
                    value = worst
                    pressure = search.problem.pressure(s)
                    t.set_user_attr("violation", 1.0 + abs(pressure or 0.0) if not ok else 1e6)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    study.tell(t, value)
        return STOP_N
