"""Warnings and notes about a verified pipeline (spec section 7.4).

Contract: `check_warnings(model, lines, runtime_lines, limits, feasible)` returns
diagnostics, never verdicts (a warning does not change the exit code):
- KMR310 (warning) a budget line every setting in the domains meets: its negation is
  unsatisfiable — shown by the upper bound (bounds.py) or, when that cannot tell, by
  Z3 (an unknown answer gives no warning: we only warn about what we proved);
- KMR311 (warning) a knob that reaches no analytic meter or precondition: its symbol
  is in no field of the final state, no precondition and no budget line, and it is
  not passed to a parameter that the rule's contract ignores (`epochs`, `lr`,
  `scheme`: those act through the implementation and the empirical meters), nor read
  by an empirical budget line or the objective;
- KMR312 (warning) the default setting violates an analytic budget line (exact
  evaluation; skipped when the budget is infeasible anyway);
- KMR313 (note) each budget line that reads an empirical meter: checked at run time.
"""

from __future__ import annotations

from dataclasses import replace

import z3

from kmr_dsl.core.evaluate import expr_dim
from kmr_dsl.core.program import Constraint, KnobRef
from kmr_dsl.diagnostics import Diagnostic, Severity, warning
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify import descent
from kmr_dsl.verify.bounds import sound_bound
from kmr_dsl.verify.budget import Line
from kmr_dsl.verify.line_checks import approx_value, decomposition, line_bound, line_holds
from kmr_dsl.verify.lower import Encoding
from kmr_dsl.verify.numeric import Unevaluable
from kmr_dsl.verify.render import render_constraint, render_setting
from kmr_dsl.verify.report import Limits, new_solver
from kmr_dsl.core.walk import nodes
from kmr_dsl.verify.state import PipelineModel
from kmr_dsl.units import fmt_value

_UNIT = {"bytes": " (bytes)", "time": " (seconds)"}


WARNING_EFFORT = 10     # a vacuity check gets 1/10 of the verdicts' solver limits


def is_vacuous(model: PipelineModel, line: Line, limits: Limits, use_bounds: bool = True) -> bool:
    """True only when every setting provably meets the line."""
    if line.problem:
        return False
    if use_bounds and line.op in ("<=", "<"):
        dec = decomposition(model, line.expr)
        if dec is not None:
            b = line_bound(model, dec)
            if b.surely_negative() and sound_bound(dec, model.knobs, b).surely_negative():
                return True
            if b.argmax:
                setting = dict(model.knobs.defaults())
                setting.update({model.knobs.by_symbol[s].name: v for s, v in b.argmax.items()})
                if not line_holds(line, model, model.knobs.env(setting)):
                    return False              # a concrete setting breaks it
    if use_bounds and line.op in ("<=", "<") and line.expr is not None:
        # a setting that breaks the line, searched for before Z3 (descent.py) in floats
        # and confirmed exactly (a float tie must not hide a warning)
        if not line_holds(line, model, model.knobs.env(model.knobs.defaults())):
            return False
        broken = descent.search(model, [replace(line, op="<", expr=A.neg(line.expr))], [model.knobs.defaults()])
        if broken is not None and not line_holds(line, model, model.knobs.env(broken)):
            return False
    enc = Encoding(model.knobs)
    try:
        negated = z3.Not(enc.lower(A.compare(line.op, line.expr, 0)))
    except A.NotModelled:
        return False
    # a warning is worth a fraction of the effort of a verdict: an unknown answer only
    # means no warning
    s = new_solver(Limits(max(1, limits.rlimit // WARNING_EFFORT), limits.timeout_s / WARNING_EFFORT))
    s.add(enc.domain())
    s.add(negated)
    return s.check() == z3.unsat


def _symbols_used(model: PipelineModel, lines: list[Line]) -> set:
    """Knob symbols read by the final state, a precondition or a budget line.

    Stops as soon as every knob symbol is found: on a deep model the budget lines
    (whose decompositions already list their symbols) usually read every knob, and
    walking 1000 layers' fields again costs ~0.2 s for nothing.
    """
    wanted = set(model.knobs.by_symbol)
    used: set = set()
    for ln in lines:
        if ln.expr is None:
            continue
        dec = decomposition(model, ln.expr) if ln.op in ("<=", "<") else None
        used |= set(dec.symbols) if dec is not None else A.knob_symbols(ln.expr)
    sources = [v for lstate in model.final.layers.values() for v in lstate.values()]
    sources += list(model.final.model.values()) + [req.condition for req in model.requirements]
    for v in sources:
        if wanted <= used:
            break
        used |= A.knob_symbols(v)
    return used


def _knobs_in(exprs) -> set[str]:
    return {n.knob for e in exprs for n in nodes(e) if isinstance(n, KnobRef)}


def unused_knobs(model: PipelineModel, lines: list[Line]) -> list[str]:
    """Declared knobs of the pipeline that reach nothing analytic (KMR311)."""
    used_syms = _symbols_used(model, lines)
    pipe = model.pipeline
    exprs = [c.left for c in pipe.budget] + [c.right for c in pipe.budget]
    if pipe.objective is not None:
        exprs.append(pipe.objective.expr)
    elsewhere = _knobs_in(exprs) | model.opaque_knobs
    out = []
    for name in pipe.knobs:
        instances = model.knobs.families.get(name, [])
        if any(kv.symbol in used_syms for kv in instances) or name in elsewhere:
            continue
        out.append(name)
    return out


def check_warnings(model: PipelineModel, lines: list[Line], runtime_lines: list[Constraint], limits: Limits,
                   feasible: bool, use_bounds: bool = True) -> list[Diagnostic]:
    diags: list[Diagnostic] = []
    for ln in lines:
        if is_vacuous(model, ln, limits, use_bounds):
            diags.append(warning("KMR310", ln.span, f"budget line `{ln.text}` is met by every setting",
                                 "it constrains nothing; the knob domains already guarantee it"))
    for name in unused_knobs(model, lines):
        knob = model.program.knobs[name]
        used_as_arg = name in model.arg_knobs
        note = ("every step that receives it ignores it at this setting of the other arguments" if used_as_arg
                else "no step, budget line or objective uses it")
        diags.append(warning("KMR311", knob.span, f"knob `{name}` affects no analytic meter or precondition", note))
    if feasible:
        defaults = model.knobs.defaults()
        env = model.knobs.env(defaults)
        for ln in lines:
            if ln.problem or line_holds(ln, model, env):
                continue
            try:
                # the left side from the line's own value (already evaluated) and the right side
                right = approx_value(model, ln.right, env)
                g = approx_value(model, ln.expr, env)
                left = right + g if ln.constraint.op in ("<=", "<", "==", "!=") else right - g
                left = int(left) if float(left).is_integer() else round(left, 6)
                dim = expr_dim(ln.constraint.left, model.program)
                a, b = fmt_value(float(left), dim), fmt_value(float(right), dim)
                # rounded for reading, unless that hides the difference
                shown = f"{a} against {b}" if a != b else f"{left} against {right}" + _UNIT.get(dim, "")
            except (Unevaluable, OverflowError):      # beyond float64: no number worth printing
                continue
            diags.append(warning(
                "KMR312", ln.span, f"the default setting violates budget line `{ln.text}`",
                f"at the defaults ({render_setting(defaults, model.knobs, limit=6)}): {shown}"))
            break
    for c in runtime_lines:
        text = render_constraint(c, model.program.sources)
        diags.append(_note("KMR313", c, f"budget line `{text}` reads an empirical meter: checked at run time"))
    return diags


def unused_declarations(program) -> list[Diagnostic]:
    """KMR311 for knobs of the program's own file that no pipeline and no property uses."""
    used = {k for p in program.pipelines.values() for k in p.knobs}
    used |= {k for prop in program.properties.values() for k in prop.forall}
    out = []
    for name, knob in program.knobs.items():
        if name not in used and knob.span.file == program.file:
            out.append(warning("KMR311", knob.span, f"knob `{name}` affects no analytic meter or precondition",
                               "no pipeline uses it"))
    return out


def _note(code: str, c: Constraint, message: str) -> Diagnostic:
    d = warning(code, c.span, message)
    return Diagnostic(d.code, Severity.NOTE, d.span, d.message, d.notes, d.hint)


__all__ = ["check_warnings", "is_vacuous", "unused_declarations", "unused_knobs"]
