"""The readable run report: one table with baseline, predicted, measured per meter, and
the verdict of every budget line, then the pipeline's `report` items (measured on the
result, never used to choose it).

Contract: `render_text(session, outcome)` for the terminal, `render_markdown(...)` for
report.md; values are shown in their meter's unit (bytes as KB/MB, time as ms, counts
with separators). `honesty_notes(session)` states what the numbers do not show: that
unstructured sparsity gives no CPU speedup, that int4/int2 are storage formats here.
"""

from __future__ import annotations

from kmr_dsl.core.evaluate import expr_dim, meter_key
from kmr_dsl.outcome import LineVerdict, Outcome
from kmr_dsl.units import fmt_value


def _dim(session, key: str) -> str:
    for ref in session.refs:
        if meter_key(ref) == key:
            meter = session.program.meters.get(ref.name)
            return meter.dim if meter else "number"
    return "number"


def rows(session, outcome: Outcome) -> list[tuple[str, str, str, str]]:
    out = []
    for key, measured in outcome.meters.items():
        dim = _dim(session, key)
        predicted = outcome.predicted.get(key)
        out.append((key, fmt_value(outcome.baseline.get(key), dim), fmt_value(predicted, dim), fmt_value(measured, dim)))
    return out


def _line_dim(session, line: LineVerdict) -> str:
    """The unit a budget line's sides are shown in: its left side's dimension
    (`size / baseline.size <= 20%` compares numbers, not bytes). The line is found by its
    line in the file (two lines written on one line of text show the first one's unit)."""
    for c in session.pipeline.budget:
        if c.span.line == line.line:
            return expr_dim(c.left, session.program)
    return "number"


def _text_dim(session, text: str) -> str:
    """The unit of a `report` item: its expression's dimension."""
    for item in session.pipeline.report:
        if item.text == text:
            return expr_dim(item.expr, session.program)
    return "number"


def report_lines(session, reported: list[dict]) -> list[str]:
    """`report` items for the terminal: measured on the chosen result, never used to choose."""
    lines = ["reported (measured on this result, never used to choose it)"]
    for r in reported:
        dim = _text_dim(session, r["text"])
        lines.append(f"  {r['text']}: {fmt_value(r['value'], dim)}  (baseline {fmt_value(r['baseline'], dim)})")
    return lines


def honesty_notes(session) -> list[str]:
    notes = []
    names = {s.rule.name for s in session.pipeline.steps}
    if names & {"prune", "prune_gradually"}:
        methods = set()
        for step in session.pipeline.steps:
            if step.rule.name in ("prune", "prune_gradually"):
                m = dict(step.args).get("method")
                methods.add(getattr(m, "member", getattr(m, "value", "magnitude")))
        if methods & {"magnitude", "global", "nm"}:
            notes.append("unstructured and N:M sparsity shrink the stored file but give no CPU speedup "
                          "(dense kernels still run; 2:4 kernels need an NVIDIA GPU)")
        if "channel" in methods:
            notes.append("channel pruning removes filters physically: smaller tensors and faster dense kernels")
    if "quantize" in names:
        notes.append("bits 4 and 2 are storage formats on this CPU: weights are unpacked to float to compute, "
                     "so they cost latency; bits 8 dynamic runs int8 kernels on Linear layers")
    return notes


def render_text(session, outcome: Outcome) -> str:
    header = ("meter", "baseline", "predicted", "measured")
    body = rows(session, outcome)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(4)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
    lines.append("")
    lines.append("budget")
    for line in outcome.lines:
        dim = _line_dim(session, line)
        verdict = "ok  " if line.holds else "FAIL"
        kind = "" if line.analytic else " (empirical)"
        lines.append(f"  {verdict}  {line.text}{kind}    "
                     f"[{fmt_value(line.left, dim)} {line.op} {fmt_value(line.right, dim)}]")
    if outcome.objective is not None and session.pipeline.objective is not None:
        lines.append(f"objective: {session.pipeline.objective.direction} = {outcome.objective:.6g}")
    if outcome.reported:
        lines.append("")
        lines += report_lines(session, outcome.reported)
    for note in honesty_notes(session):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def render_markdown(session, outcome: Outcome, artifact_path) -> str:
    out = [f"# KMR run report — pipeline `{session.pipeline.name}`", "",
           f"Program: `{session.program.file}`  ", f"Artifact: `{artifact_path}`  ",
           "Setting: " + ", ".join(f"`{k} = {v}`" for k, v in outcome.setting.items()), "",
           "| meter | baseline | predicted | measured |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(session, outcome)]
    out += ["", "| budget line | verdict | left | right |", "|---|---|---|---|"]
    for line in outcome.lines:
        dim = _line_dim(session, line)
        out.append(f"| `{line.text}` | {'holds' if line.holds else '**fails**'} | "
                   f"{fmt_value(line.left, dim)} | {fmt_value(line.right, dim)} |")
    if outcome.reported:
        out += ["", "Reported (measured on this result, never used to choose it):", "",
                "| report | baseline | result |", "|---|---|---|"]
        out += [f"| `{r['text']}` | {fmt_value(r['baseline'], _text_dim(session, r['text']))} | "
                f"{fmt_value(r['value'], _text_dim(session, r['text']))} |" for r in outcome.reported]
    notes = honesty_notes(session)
    if notes:
        out += ["", "Notes:", *[f"- {n}" for n in notes]]
    return "\n".join(out) + "\n"
