"""Run Hypothesis programmatically: draw, test, shrink, and hand back the minimal failure.

Contract: `search(strategy, test, examples=N, seed=S)` runs `test(value)` on values drawn
from `strategy` until N valid examples passed or one failed. A test signals a failing
case by raising `CaseFailed(payload)`; Hypothesis then shrinks the input and the
`CaseFailed` of the *minimal* failing input is returned in `Search.failure`. A test
rejects an input (a precondition does not hold, the implementation refused it) with
`reject(reason)`; rejections are counted, and the first reason is kept.

Determinism and hygiene: the draws come from `hypothesis.seed(S)`, so the same seed
gives the same draws and the same shrunk case; `database=None`, and Hypothesis' other
storage goes to KMR's cache folder, so nothing is written to a `.hypothesis` folder in
the user's project; no deadline (a pipeline run may take seconds); quiet, so
Hypothesis prints nothing; one bug per run (`report_multiple_bugs=False`); the explain
phase is skipped. Every health check is suppressed: tiny finite domains and heavy
filtering by `requires` are expected here, not a sign of a bad strategy.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from hypothesis import HealthCheck, Phase, Verbosity, assume, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import Flaky, Unsatisfiable


class CaseFailed(Exception):
    """A failing case; `payload` is whatever the caller needs to report it."""

    def __init__(self, payload):
        super().__init__(str(payload))
        self.payload = payload


@dataclass
class Search:
    passed: int = 0                     # valid examples that passed before any failure
    rejected: int = 0                   # inputs the test rejected before any failure
    reasons: dict[str, int] = field(default_factory=dict)   # why, in first-seen order
    failure: CaseFailed | None = None   # the minimal failing case
    unsatisfiable: bool = False         # every input was rejected
    flaky: bool = False                 # the minimal failure did not reproduce

    @property
    def first_reason(self) -> str | None:
        return next(iter(self.reasons), None)


class _Reject(Exception):
    pass


def reject(reason: str):
    """Reject the current input (not a failure); `reason` is reported in the summary."""
    raise _Reject(reason)


@contextmanager
def _storage():
    """Point Hypothesis' storage (its cache of source constants) at KMR's cache folder.

    Even without a database Hypothesis writes `.hypothesis/constants/` under the current
    folder; `kmr test` must not litter the user's project. The previous home is restored,
    so a user's own Hypothesis tests in the same pytest run keep theirs.
    """
    from hypothesis import configuration

    from kmr_dsl.facts import cache_dir

    previous = getattr(configuration, "__hypothesis_home_directory", None)
    configuration.set_hypothesis_home_dir(cache_dir() / "hypothesis")
    try:
        yield
    finally:
        configuration.set_hypothesis_home_dir(previous)


def search(strategy, test: Callable[[object], None], *, examples: int, seed: int) -> Search:
    out = Search()
    shrinking: list[bool] = []

    @hypothesis_seed(int(seed))
    @settings(database=None, deadline=None, max_examples=max(1, int(examples)), derandomize=False,
              verbosity=Verbosity.quiet, suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
              print_blob=False, phases=(Phase.explicit, Phase.generate, Phase.shrink))
    @given(strategy)
    def run(value):
        try:
            test(value)
        except _Reject as why:
            if not shrinking:
                out.rejected += 1
                out.reasons[str(why)] = out.reasons.get(str(why), 0) + 1
            assume(False)
        except CaseFailed:
            shrinking.append(True)    # from here on Hypothesis is shrinking: stop counting
            raise
        if not shrinking:
            out.passed += 1

    try:
        with _storage():
            run()
    except CaseFailed as failure:
        out.failure = failure
    except Unsatisfiable:
        out.unsatisfiable = True
    except Flaky as exc:
        # the shrunk case passed when replayed; report the failure Hypothesis saw
        out.flaky = True
        inner = [e for e in getattr(exc, "exceptions", ()) if isinstance(e, CaseFailed)]
        if not inner:
            raise
        out.failure = inner[0]
    if out.passed == 0 and out.failure is None:
        out.unsatisfiable = True
    return out


__all__ = ["CaseFailed", "Search", "reject", "search"]
