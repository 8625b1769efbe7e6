"""The feasibility obligation's results, as a user reads them.

Contract: `proved_result(model, lines, setting, method)` is PROVED at the witness as the user
(and `kmr run`) will read it back, re-checked there (UNKNOWN when no writable value
near it meets the lines); `unknown_result(model, lines, reason)` is UNKNOWN with KMR303;
`refuted_result(model, lines, core, minimal, method, best, certificate)` is REFUTED with
KMR302, whose notes name each core member, the best point a bound found, whether the
core is minimal, and what the certificate says (its kind, its multipliers, the
components most in conflict). Each returns (ObligationResult, diagnostics).
"""

from __future__ import annotations

from fractions import Fraction

from kmr_dsl.diagnostics import error
from kmr_dsl.verify.line_checks import approx_value, meets_all
from kmr_dsl.verify.numeric import Unevaluable
from kmr_dsl.verify.render import render_setting
from kmr_dsl.verify.report import ObligationResult, Verdict


def proved_result(model, lines, setting, method):
    # the witness as the user (and `kmr run`) will read it back, re-checked there
    shown = model.knobs.writable(setting, lambda s: meets_all(lines, model, s))
    if shown is None:
        return unknown_result(model, lines, "no knob value a user can write near the solver's witness meets the budget")
    summary = f"budget can be met, e.g. at {render_setting(shown, model.knobs, limit=6)}"
    return ObligationResult("feasibility", Verdict.PROVED, lines[0].span, summary, model.pipeline.name,
                            witness=model.knobs.to_user(shown), method=method), []


def unknown_result(model, lines, reason):
    span = lines[0].span
    return (ObligationResult("feasibility", Verdict.UNKNOWN, span, "budget: unknown", model.pipeline.name,
                             reason=reason, method="z3"),
            [error("KMR303", span, "could not decide whether the budget can be met", f"reason: {reason}")])


def _approx(x: Fraction) -> str:
    try:
        return f"{float(x):.4g}"
    except OverflowError:                     # beyond float64: the exact value's magnitude
        return f"~1e{len(str(abs(x.numerator))) - len(str(x.denominator))}"


def _conflict_note(conflict: dict) -> str:
    """The few components that, even at their best, add the most to the certificate's sum."""
    shown = []
    for c in conflict["top"]:
        who = f"layer {c['layer']}" if c["layer"] else "knobs"
        knobs = ", ".join(c["knobs"][:4]) + (", ..." if len(c["knobs"]) > 4 else "")
        shown.append(f"{who} ({knobs}) at least {_approx(Fraction(c['at_best']))}")
    rest = conflict["components"] - len(conflict["top"])
    more = f"; and {rest:,} more" if rest > 0 else ""
    return ("out of reach even at their best (each one's least share of that sum): " + "; ".join(shown) + more
            + " (exact values: `--format json`)")


def refuted_result(model, lines, core, minimal, method, best=None, certificate=None):
    span = next((m.span for m in core if m.kind == "line"), lines[0].span)
    notes = [f"conflicting: `{m.text}` ({'budget line' if m.kind == 'line' else 'knob bound'} at {m.span})"
             for m in core]
    if best is not None:
        line, argmin, g_min = best
        setting = dict(model.knobs.defaults())
        setting.update({model.knobs.by_symbol[s].name: v for s, v in argmin.items()})
        try:
            right = approx_value(model, line.right, model.knobs.env(setting))
            # g = left - right (or right - left for >=, >): the left side follows from g's minimum
            left = right + g_min if line.constraint.op in ("<=", "<", "==", "!=") else right - g_min
            left = int(round(left)) if abs(left - round(left)) <= 1e-6 * max(1.0, abs(left)) else round(left, 6)
            knobs_shown = {model.knobs.by_symbol[s].name: v for s, v in argmin.items()}
            notes.append(f"at best the left side is {left} against {right}, "
                         f"at {render_setting(knobs_shown, model.knobs, limit=6)}")
        except Unevaluable:
            pass
    if not minimal:
        notes.append("the solver could not decide every subset: this core may not be minimal")
    if certificate is not None and certificate.get("kind") in ("decoupled", "branch-and-bound-tree", "box-split"):
        notes.append(certificate["summary"])
    elif certificate is not None and certificate.get("checked"):
        weights = " + ".join(f"{float(Fraction(y)):.4g} x (`{t}`)" for y, t in
                             zip(certificate["multipliers"], certificate["lines"]) if y != "0")
        notes.append(f"certificate (checked in exact arithmetic): {weights}, each line as left - right, is at "
                     f"least {float(Fraction(certificate['bound'])):.4g} > 0 at every setting")
        conflict = certificate.get("conflict")
        if conflict and conflict["top"]:
            notes.append(_conflict_note(conflict))
    elif certificate is not None:
        notes.append("certificate: the MILP solver's exhaustive branch and bound (the LP relaxation alone is "
                     "feasible, so no multiplier certificate exists)"
                     + ("; Z3 confirms it independently" if certificate.get("z3_confirms") else ""))
    summary = "budget cannot be met: " + "; ".join(m.text for m in core)
    diag = error("KMR302", span, "no knob setting meets the budget", *notes)
    return ObligationResult("feasibility", Verdict.REFUTED, span, summary, model.pipeline.name,
                            core=tuple(core), core_minimal=minimal, method=method, certificate=certificate), [diag]


__all__ = ["proved_result", "refuted_result", "unknown_result"]
