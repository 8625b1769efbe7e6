"""The run context: what a rule needs from the run that is not one of its arguments.

Contract: `current()` returns the active `RunContext` (a default one outside any run):
the seed every training rule starts from, a progress reporter, the baseline model
(the unmodified input model: the default distillation teacher and the reference of
label-free fine-tuning), the device (always "cpu" here) and the thread count training
and latency use (`default_threads(facts)`: what the commands use unless told). The
CLI activates one with `with use(RunContext(...)):`. This module imports no torch.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Callable

from kmr_dsl.diagnostics import Span


@dataclass(frozen=True)
class RunContext:
    seed: int = 0
    progress: Callable[[dict], None] | None = None
    baseline: Any = None              # an nn.Module; typed loosely so torch stays unimported
    device: str = "cpu"
    threads: int | None = None        # None: leave torch's setting alone
    span: Span | None = None          # the step being run, for diagnostics
    example: tuple | None = None      # (input shape, input dtype) of the facts: what channel
                                      # pruning traces the model's channel groups on (runtime.depgraph)

    def with_(self, **changes) -> "RunContext":
        return replace(self, **changes)


SMALL_MODEL_PARAMS = 1_000_000


def default_threads(facts) -> int | None:
    """The thread count `kmr run`, `kmr search` and `kmr test` use unless told: 1 for a
    model under SMALL_MODEL_PARAMS parameters (ModelFacts.total_params), else None
    (torch's own setting). On a model that small a thread pool's start-up and
    synchronisation cost more than the work (measured on the digits MLP: 0.2 s per run
    with one thread, 3-7 s with two on a busy 2-core machine)."""
    return 1 if facts is not None and facts.total_params < SMALL_MODEL_PARAMS else None


_CURRENT: contextvars.ContextVar[RunContext] = contextvars.ContextVar("kmr_run_context", default=RunContext())


def current() -> RunContext:
    return _CURRENT.get()


@contextmanager
def use(ctx: RunContext):
    """Make `ctx` the current context for the block (nests; restored on exit)."""
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


def report(**event) -> None:
    """Send one progress event (e.g. rule, epoch, loss) to the reporter, if any.

    A reporter that fails must not break the run, so its errors are swallowed.
    """
    reporter = current().progress
    if reporter is None:
        return
    try:
        reporter(dict(event))
    except Exception:  # noqa: BLE001 - progress display is best-effort
        pass


def span() -> Span:
    return current().span or Span.unknown()


__all__ = ["RunContext", "current", "report", "span", "use"]
