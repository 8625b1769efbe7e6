"""Verdicts, obligation results, the report, and the one place Z3's answers become verdicts.

Contract: a verdict is one of PROVED, REFUTED, UNKNOWN — nothing else. REFUTED comes
with a counterexample (composability) or an unsat core (feasibility); PROVED with a
witness where one exists; UNKNOWN with the solver's reason. UNKNOWN is never counted
as proved: `VerifyReport.exit_code` is 1 when anything was refuted, else 3 when
anything is unknown, else 0 (spec section 7).

`new_solver(limits)` is the only way the verifier creates a Z3 solver: fresh, with a
fixed random seed, a resource limit (`rlimit`, deterministic) and a wall-clock cap
(a safety net; `rlimit` is what makes a result reproduce). `own_context()` gives the
terms built inside it a Z3 context of their own (`verify` runs in one), so a result
does not depend on what earlier calls in the process built. `solver_verdict` maps
sat/unsat/unknown to a verdict for an obligation whose "sat" means `sat_means`.
"""

from __future__ import annotations

import json
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import Enum

import z3

from kmr_dsl.diagnostics import Diagnostic, Span

DEFAULT_RLIMIT = 50_000_000      # about 10 s of Z3 work on the measured machines
DEFAULT_TIMEOUT_S = 60.0


class Verdict(str, Enum):
    PROVED = "proved"
    REFUTED = "refuted"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Limits:
    rlimit: int = DEFAULT_RLIMIT
    timeout_s: float = DEFAULT_TIMEOUT_S


_CONTEXT_LOCK = threading.RLock()


@contextmanager
def own_context():
    """Terms and solvers made inside use a fresh Z3 context; the process's is restored after.

    Why: z3's Python API builds every term in one global context whose history (the
    terms earlier calls made, their internal ids) steers the search, so the same program
    verified twice in one process (the language server, tests) could get two different
    witnesses despite the fixed seeds. Measured: four Z3 witnesses for one program in one
    process before, the same one every time after. Nothing built inside may be used after
    (no Z3 object outlives a `verify` call: encodings are made per obligation)."""
    import z3.z3 as api

    if not hasattr(api, "_main_ctx"):      # a z3 without that global: shared, as before
        yield
        return
    # the global is the process's: calls from two threads take turns (a Z3 context is
    # not safe to share between threads either, so they never could run together)
    with _CONTEXT_LOCK:
        saved = api._main_ctx      # the API's global; main_ctx() creates it when None
        api._main_ctx = z3.Context()
        try:
            yield
        finally:
            api._main_ctx = saved


def new_solver(limits: Limits) -> z3.Solver:
    z3.set_param("smt.random_seed", 0)
    s = z3.Solver()
    s.set("random_seed", 0)
    s.set("rlimit", int(limits.rlimit))
    s.set("timeout", max(1, int(limits.timeout_s * 1000)))
    return s


def solver_verdict(answer, sat_means: Verdict) -> Verdict:
    """The single mapping from Z3's three answers to verdicts (UNKNOWN stays UNKNOWN)."""
    if answer == z3.sat:
        return sat_means
    if answer == z3.unsat:
        return Verdict.REFUTED if sat_means is Verdict.PROVED else Verdict.PROVED
    return Verdict.UNKNOWN


def unknown_reason(solver: z3.Solver, limits: Limits) -> str:
    """Z3's reason for `unknown`, with the limits it ran under (Z3 says "canceled" for both)."""
    return f"solver limit reached (rlimit {limits.rlimit}, {limits.timeout_s:g} s): {solver.reason_unknown()}"


@dataclass(frozen=True)
class CoreMember:
    """One member of an unsat core: a budget line or one side of a knob's domain."""
    kind: str            # "line" | "bound"
    text: str            # KMR text: `size <= 16 KB`, `sparsity <= 0.9`
    span: Span

    def to_json(self) -> dict:
        return {"kind": self.kind, "text": self.text, "file": self.span.file, "line": self.span.line,
                "col": self.span.col}


@dataclass(frozen=True)
class ObligationResult:
    kind: str                        # "composability" | "feasibility"
    verdict: Verdict
    span: Span
    summary: str
    pipeline: str = ""
    witness: dict | None = None          # feasibility PROVED: knob instance -> user value
    counterexample: dict | None = None   # composability REFUTED: the knobs the clause reads
    core: tuple[CoreMember, ...] = ()    # feasibility REFUTED
    core_minimal: bool = True            # False when a deletion check came back unknown
    reason: str | None = None            # UNKNOWN: why
    method: str = ""                     # how it was decided: fold | enumeration | bounds | z3
    layers: tuple[str, ...] = ()
    certificate: dict | None = None      # feasibility REFUTED: certificate.to_json (how it was checked)
    family: str = ""                     # composability: "`prune` requires `layer.bits >= 16`" (report grouping)

    def to_json(self) -> dict:
        return {
            "kind": self.kind, "verdict": self.verdict.value, "pipeline": self.pipeline,
            "file": self.span.file, "line": self.span.line, "col": self.span.col,
            "summary": self.summary, "witness": self.witness, "counterexample": self.counterexample,
            "core": [m.to_json() for m in self.core], "core_minimal": self.core_minimal,
            "reason": self.reason, "method": self.method, "layers": list(self.layers),
            "certificate": self.certificate, "family": self.family,
        }


@dataclass
class VerifyReport:
    results: list[ObligationResult] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        verdicts = {r.verdict for r in self.results}
        if Verdict.REFUTED in verdicts or any(d.code in ("KMR301", "KMR302", "KMR305") for d in self.diagnostics):
            return 1
        if Verdict.UNKNOWN in verdicts or any(d.code == "KMR303" for d in self.diagnostics):
            return 3
        return 0

    @property
    def verdict(self) -> Verdict:
        return {0: Verdict.PROVED, 1: Verdict.REFUTED, 3: Verdict.UNKNOWN}[self.exit_code]

    def render(self, verbose: bool = False) -> list[str]:
        """One line per obligation family (every instance with verbose), in order of first appearance.

        A `for` block makes one composability obligation per layer and clause; 1,000
        layers would print 3,000 lines, so instances of one family with one verdict are
        counted instead: "`prune` requires `layer.bits >= 16`: PROVED for all 1,000 layers".
        """
        if verbose:
            return [f"{r.kind:<15} {r.verdict.name:<8} {r.summary}" for r in self.results]
        families: dict = {}
        for r in self.results:
            key = (r.kind, r.family or r.summary)
            families.setdefault(key, []).append(r)
        out = []
        for (kind, name), rs in families.items():
            if len(rs) == 1 or not rs[0].family:
                out.extend(f"{r.kind:<15} {r.verdict.name:<8} {r.summary}" for r in rs)
                continue
            layers = sum(max(len(r.layers), 1) for r in rs)
            by_verdict: dict = {}
            for r in rs:
                by_verdict.setdefault(r.verdict, []).append(r)
            worst = next(v for v in (Verdict.REFUTED, Verdict.UNKNOWN, Verdict.PROVED) if v in by_verdict)
            if len(by_verdict) == 1:
                text = f"{name}: {worst.name} for all {layers:,} layers"
            else:
                parts = [f"{v.name} on {sum(max(len(r.layers), 1) for r in by_verdict[v]):,}"
                         for v in (Verdict.REFUTED, Verdict.UNKNOWN, Verdict.PROVED) if v in by_verdict]
                first = by_verdict[worst][0]
                text = f"{name}: {', '.join(parts)} of {layers:,} layers (first: {first.summary})"
            out.append(f"{kind:<15} {worst.name:<8} {text}")
        return out

    def to_json(self) -> dict:
        return {"exit_code": self.exit_code, "verdict": self.verdict.value,
                "results": [r.to_json() for r in self.results],
                "diagnostics": [d.to_json() for d in self.diagnostics]}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, default=str)


def merge_diagnostics(diags: list[Diagnostic]) -> list[Diagnostic]:
    """Diagnostics of one code at one place that differ only in the layer they name, as one.

    A step inside a `for` block is one step per layer at one span: a precondition that
    fails on 1,000 layers would otherwise print 1,000 errors.
    """
    layer = re.compile(r" on layer `[^`]*`")
    groups: dict = {}
    order = []
    for d in diags:
        key = (d.code, d.span, layer.sub("", d.message))
        if key not in groups:
            order.append(key)
        groups.setdefault(key, []).append(d)
    out = []
    for key in order:
        ds = groups[key]
        if len(ds) == 1:
            out.append(ds[0])
            continue
        names = [m.group(0)[11:-1] for d in ds[1:] if (m := layer.search(d.message))]
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        note = f"the same on {len(ds) - 1:,} more layers" + (f": {shown}" if shown else "") + \
            " (each one: `kmr check --verbose` or `--format json`)"
        out.append(replace(ds[0], notes=(*ds[0].notes, note)))
    return out


__all__ = ["CoreMember", "merge_diagnostics", "DEFAULT_RLIMIT", "DEFAULT_TIMEOUT_S", "Limits", "ObligationResult", "Verdict",
           "VerifyReport", "new_solver", "own_context", "solver_verdict", "unknown_reason"]
