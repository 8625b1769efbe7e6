"""Where trials run: in this process, or as Ray tasks.

Contract: a backend has `run(settings)`, a generator of `(position, payload)` pairs in
the order trials *finish* (closing it cancels what is still running), `retain(key)`
(the driver names the best setting so far; a backend may keep that model), and
`model_for(setting)` (the model of a trial it kept, or None).

A *payload* is a plain dict: the session's `Outcome.to_json()` (kmr_dsl.outcome), or
`{"error": message}` when the pipeline raised a KMR diagnostic at that setting. Only
plain data crosses a process boundary.

`TaskSpec` names a session factory by import path ("module:function") plus keyword
arguments; `kmr_dsl.app:program_session` is the real one: it re-loads the program
from its file and builds a `PipelineSession`. Ray tasks receive the spec and a setting, build (and
keep, per worker process) their own session, so nothing unpicklable is sent.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass

from kmr_dsl.diagnostics import KmrError, Span, error
from kmr_dsl.search.space import key

# training seed of every trial: the one `kmr run` uses by default, so
# `kmr run --set ...` reproduces a trial's meters
SESSION_SEED = 0


def evaluate_payload(session, setting: dict) -> dict:
    """Run one setting; a KMR diagnostic becomes an error payload, not a crash."""
    start = time.monotonic()
    try:
        return session.evaluate(dict(setting)).to_json()
    except KmrError as e:
        d = e.diagnostic
        return {"error": f"{d.code}: {d.message}" + "".join(f"; {n}" for n in d.notes),
                "seconds": time.monotonic() - start}


@dataclass(frozen=True)
class TaskSpec:
    factory: str                              # "module:function" returning a session
    kwargs: tuple[tuple[str, object], ...]    # its keyword arguments (plain data)

    def build(self):
        module, _, name = self.factory.partition(":")
        return getattr(importlib.import_module(module), name)(**dict(self.kwargs))


# ---------------------------------------------------------------- local

class LocalBackend:
    """Trials one after another in this process, on one session."""

    def __init__(self, session):
        self.session = session
        self._models: dict[str, object] = {}

    def run(self, settings: list[dict]):
        for position, setting in enumerate(settings):
            payload = evaluate_payload(self.session, setting)
            model = getattr(self.session, "last_model", None)
            if model is not None and "error" not in payload:
                self._models[key(setting)] = model
            yield position, payload

    def retain(self, best_key: str | None) -> None:
        # keep only the best trial's model: one extra model in memory, no rerun to save it
        self._models = {k: m for k, m in self._models.items() if k == best_key}

    def model_for(self, setting: dict):
        return self._models.get(key(setting))

    def close(self) -> None:
        self._models.clear()


# ---------------------------------------------------------------- ray

_WORKER_SESSIONS: dict[TaskSpec, object] = {}


def _ray_trial(spec: TaskSpec, setting: dict) -> dict:
    """The body of a Ray task: one session per worker process and spec, reused."""
    session = _WORKER_SESSIONS.get(spec)
    if session is None:
        try:
            session = _WORKER_SESSIONS[spec] = spec.build()
        except KmrError as e:
            return {"error": f"{e.diagnostic.code}: {e.diagnostic.message}", "seconds": 0.0}
    return evaluate_payload(session, setting)


def import_ray(span: Span):
    try:
        import ray
    except ImportError:
        raise KmrError(error("KMR506", span, "--backend ray needs the optional dependency `ray`",
                             hint="pip install ray   (or: pip install 'kmr-dsl[ray]')"))
    return ray


class RayBackend:
    """Trials as Ray tasks, one CPU each; `address` joins a running cluster."""

    def __init__(self, spec: TaskSpec, address: str | None = None, num_cpus: int = 2, span: Span | None = None):
        self.spec = spec
        self.ray = import_ray(span or Span.unknown("kmr search"))
        self._owns = not self.ray.is_initialized()
        if self._owns:
            if address:
                self.ray.init(address=address, log_to_driver=False)
            else:
                # local_mode was removed from Ray (FACTS.md): a small local cluster instead
                self.ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        self._remote = self.ray.remote(num_cpus=1)(_ray_trial)

    def run(self, settings: list[dict]):
        refs = [self._remote.remote(self.spec, s) for s in settings]
        position = {ref: i for i, ref in enumerate(refs)}
        pending = list(refs)
        try:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                yield position[done[0]], self.ray.get(done[0])
        finally:
            for ref in pending:
                self.ray.cancel(ref, force=True)

    def retain(self, best_key: str | None) -> None:
        pass

    def model_for(self, setting: dict):
        return None   # models stay in the workers; the caller reruns the best locally

    def close(self) -> None:
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()
