"""Budget lines that are undefined for some knob setting: a divisor that can be zero.

Contract: `undefined_lines(model, lines, limits)` returns {line position: (setting
text, divisor text)} for every analytic budget line whose expression divides by a
knob expression that is 0 at some setting of the declared domains (`size / k` with
`knob k : int in [0, 4]`). Such a line has no value there — neither met nor violated —
so verifying it would mean choosing an answer for the user; the verifier reports
KMR305 with that setting instead (obligations.py), and feasibility is not attempted.

How: every symbolic divisor (a `Pow(b, -1)` in the expression) is first enclosed with
interval arithmetic over the hull of the domains (intervals.ieval); only a divisor
whose enclosure contains 0 is handed to Z3 (`b == 0` within the domains), which either
finds the setting (reported), proves there is none (fine), or gives up (reported as
"may be zero" with no setting). Divisors are deduplicated by shape, so a per-layer
family of divisors costs one check per shape, never one per layer.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
import z3

from kmr_dsl.verify import algebra as A
from kmr_dsl.verify.decomposition import scaled_info
from kmr_dsl.verify.intervals import ieval, shape_of
from kmr_dsl.verify.lower import Encoding
from kmr_dsl.verify.render import render_setting
from kmr_dsl.verify.report import Limits, new_solver

MAX_CHECKS = 16       # Z3 checks per pipeline (shapes, not layers)


def _divisors(e, out: dict) -> dict:
    """Symbolic divisors of `e` (keyed by shape and constants, one representative each).

    Each node object is visited once: per-layer terms built from one template share
    their constant subtrees (template.Template), and a 3000-layer line holds ~10^5 nodes
    once shared ones are counted once."""
    seen: set = set()
    stack = [e]
    while stack:
        e = stack.pop()
        args = e.args
        if not args or id(e) in seen:
            continue
        seen.add(id(e))
        if type(e) is sp.Pow and args[1] == -1 and args[0].free_symbols:
            b = args[0]
            slots, consts = {}, []
            try:
                key = (shape_of(b, slots, consts), tuple(consts),
                       tuple(s.name.split("[")[0] for s in slots))
            except A.NotModelled:
                continue      # (as before: nothing below an unmodelled divisor is looked at)
            out.setdefault(key, b)
        stack.extend(reversed(args))
    return out


def _line_divisors(model, expr) -> dict:
    """_divisors of a line, skipping a term equal up to renaming to one already walked:
    the same shape and constants over knobs of the same declarations (the decomposition's
    term info, decomposition.term_info, when it is known or decomposition.scaled_info derives it) has the
    same divisors' keys, and the first representative is the one kept."""
    terms = expr.args if type(expr) is sp.Add else (expr,)
    memo = model.decomposed_terms
    out: dict = {}
    walked: set = set()
    for t in terms:
        info = memo.get(id(t))
        if info is None or info[0] is not t:
            info = scaled_info(t, memo)       # a negated shared term (a `>=` line): no walk
        if info is not None:
            key = (id(info[1]), tuple(info[2]), info[5])
            if key in walked:
                continue
            walked.add(key)
        _divisors(t, out)
    return out


def _may_be_zero(b, knobs) -> bool:
    env = {}
    for s in b.free_symbols:
        kv = knobs.by_symbol.get(s)
        if kv is None:
            return True
        if kv.kind in ("bool", "enum"):
            lo, hi = 0.0, float(len(kv.values) - 1)
        elif kv.finite:
            lo, hi = float(kv.values[0]), float(kv.values[-1])
        else:
            lo, hi = float(kv.lo), float(kv.hi)
        env[s] = (np.array([[lo]]), np.array([[hi]]))
    slots, consts = {}, []
    shape_of(b, slots, consts)
    try:
        lo, hi = ieval(b, env, iter([np.array([[float(c)]]) for c in consts]), True)
    except (A.NotModelled, TypeError, ValueError):
        return True
    lo, hi = float(np.min(lo)), float(np.max(hi))
    return not (lo > 0 or hi < 0)


def _zero_at(b, model, limits: Limits):
    """(verdict, setting): "zero" with the setting, "never", or "unknown"."""
    enc = Encoding(model.knobs)
    try:
        cond = enc.lower(A.compare("==", b, 0))
    except (A.NotModelled, Exception):  # noqa: BLE001 - an unencodable divisor is "unknown", not a crash
        return "unknown", None
    solver = new_solver(Limits(min(limits.rlimit, 5_000_000), min(limits.timeout_s, 10.0)))
    solver.add(enc.domain())
    solver.add(cond)
    answer = solver.check()
    if answer == z3.unsat:
        return "never", None
    if answer != z3.sat:
        return "unknown", None
    setting = enc.decode(solver.model())
    used = {model.knobs.by_symbol[s].name for s in b.free_symbols if s in model.knobs.by_symbol}
    return "zero", {n: v for n, v in setting.items() if n in used}


def undefined_lines(model, lines: list, limits: Limits) -> dict[int, tuple[str | None, str]]:
    found: dict[int, tuple[str | None, str]] = {}
    checked: dict = {}
    for pos, line in enumerate(lines):
        if line.expr is None or not hasattr(line.expr, "args"):
            continue
        for key, b in _line_divisors(model, line.expr).items():
            verdict = checked.get(key)
            if verdict is None:
                if not _may_be_zero(b, model.knobs):
                    verdict = ("never", None)
                elif len(checked) >= MAX_CHECKS:
                    verdict = ("unknown", None)
                else:
                    verdict = _zero_at(b, model, limits)
                checked[key] = verdict
            if verdict[0] != "never":
                shown = render_setting(verdict[1], model.knobs, limit=6) if verdict[1] else None
                found[pos] = (shown, str(b))
                break
    return found


__all__ = ["undefined_lines"]
