"""What a search shows and writes: the progress line, the trials table, search.json.

Contract (no torch, no matplotlib):
- `progress_line(trial, run, max_runs, shown, units)` is the one line per trial the
  search prints to stderr while it runs, e.g.
  `[3/20] sparsity=0.5 bits=8  size=12.1 KB  accuracy(test)=0.953  ok`;
- `trials_table(result, ...)` is a Markdown table of every trial (printed, and written
  to OUT/trials.md);
- `summary_json(result, ...)` is the content of OUT/search.json: the best setting and
  its meters (or the closest setting and the lines it misses), counts, strategy, seed
  and a summary of every trial.
Knob families print compactly: `s[*]=0.5` when every instance agrees; otherwise each
instance when there are at most FAMILY_SHOWN of them, else `s[12]=0.3..0.7` (instance
count, then the range).
"""

from __future__ import annotations

from kmr_dsl.search.trial import SKIPPED, Trial

# families with at most this many instances print every instance
FAMILY_SHOWN = 4
# meter dimension -> (unit, scale) steps, largest first; used by `format_value`
_UNITS = {
    "bytes": ((1e9, "GB"), (1e6, "MB"), (1e3, "KB"), (1, "B")),
    "time": ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")),
}


def format_value(value, dim: str | None = None) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    v = float(value)
    for scale, unit in _UNITS.get(dim or "", ()):
        if abs(v) >= scale or scale == _UNITS[dim][-1][0]:
            return f"{v / scale:.1f} {unit}" if unit not in ("B",) else f"{v:.0f} B"
    if dim == "count" and abs(v) >= 1e4:
        return f"{v / 1e6:.2f} M" if abs(v) >= 1e6 else f"{v / 1e3:.1f} K"
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.4g}"


def _knob_text(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def setting_text(setting: dict, families: dict[str, tuple[str, ...]] | None = None) -> str:
    """`sparsity=0.5 bits=8`, with families folded (see the module docstring)."""
    families = families or {}
    members = {m: fam for fam, ms in families.items() for m in ms}
    parts, done = [], set()
    for name, value in setting.items():
        fam = members.get(name)
        if fam is None:
            parts.append(f"{name}={_knob_text(value)}")
        elif fam not in done:
            done.add(fam)
            values = [setting[m] for m in families[fam] if m in setting]
            if len(values) <= FAMILY_SHOWN and not all(v == values[0] for v in values):
                parts += [f"{m}={_knob_text(setting[m])}" for m in families[fam] if m in setting]
            elif all(v == values[0] for v in values):
                parts.append(f"{fam}[*]={_knob_text(values[0])}")
            elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                parts.append(f"{fam}[{len(values)}]={_knob_text(min(values))}..{_knob_text(max(values))}")
            else:
                parts.append(f"{fam}[{len(values)}]=" + ",".join(_knob_text(v) for v in values))
    return " ".join(parts)


def status_text(trial: Trial) -> str:
    if trial.status == "fails budget":
        return "fails: " + "; ".join(trial.missed())
    if trial.status == "error":
        return f"error: {trial.message}"
    return trial.status + (" (from journal)" if trial.replayed else "")


def progress_line(trial: Trial, run: int | None, max_runs: int, shown: list[str], units: dict[str, str],
                  families=None) -> str:
    head = f"[{run}/{max_runs}]" if trial.status != SKIPPED else f"[-/{max_runs}]"
    meters = "  ".join(f"{m}={format_value(trial.meters[m], units.get(m))}" for m in shown if m in trial.meters)
    body = setting_text(trial.setting, families)
    return f"{head} {body}  {meters + '  ' if meters else ''}{status_text(trial)}"


def trials_table(result, shown: list[str], units: dict[str, str], families=None, max_skipped: int = 100) -> str:
    """Every trial; skipped ones only while there are at most `max_skipped` of them."""
    head = ["#", "setting", *shown, "objective", "s", "status"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best = result.best.index if result.best else None
    skipped = [t for t in result.trials if t.status == SKIPPED]
    listed = result.trials if len(skipped) <= max_skipped else [t for t in result.trials if t.ran]
    for t in listed:
        mark = f"**{t.index}**" if t.index == best else str(t.index)
        cells = [mark, setting_text(t.setting, families)]
        cells += [format_value(t.meters.get(m), units.get(m)) for m in shown]
        cells += [format_value(t.objective), f"{t.seconds:.2f}" if t.ran else "-", status_text(t)]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if len(listed) < len(result.trials):
        rows.append(f"\n{len(skipped)} settings skipped as analytically infeasible are not listed "
                    "(see journal.jsonl).")
    return "\n".join(rows)


def _trial_brief(t: Trial) -> dict:
    return {"index": t.index, "setting": t.setting, "status": t.status, "objective": t.objective,
            "feasible": t.feasible, "violation": t.violation if t.violation != float("inf") else None,
            "missed": t.missed(), "seconds": round(t.seconds, 4), "replayed": t.replayed,
            "meters": t.meters, "message": t.message}


def summary_json(result, *, pipeline: str, file: str, strategy: str, options: dict, seed,
                 backend: str, direction: str | None, verification: str, artifact: str | None) -> dict:
    def full(t: Trial | None):
        if t is None:
            return None
        return {"index": t.index, "setting": t.setting, "meters": t.meters, "objective": t.objective,
                "lines": [line.to_json() for line in t.lines], "missed": t.missed(), "violation": t.violation}

    return {
        "pipeline": pipeline, "file": file, "strategy": strategy, "options": options, "seed": seed,
        "backend": backend, "objective": direction, "verification": verification,
        "stop_reason": result.stop_reason, "found": result.best is not None,
        "best": full(result.best), "closest": full(result.closest), "artifact": artifact,
        "counts": {**result.counts, "runs_to_first_feasible": result.first_feasible_run},
        "elapsed_s": round(result.elapsed, 3),
        "trials": [_trial_brief(t) for t in result.trials],
    }


def summary_text(result, shown: list[str], units: dict[str, str], families=None) -> str:
    c = result.counts
    lines = [f"stopped: {result.stop_reason}; {c['runs']} runs, {c['skipped_infeasible']} skipped "
             f"(analytically infeasible), {c['replayed']} read back from the journal, {c['errors']} errors"]
    if result.best is not None:
        t = result.best
        meters = "  ".join(f"{m}={format_value(t.meters[m], units.get(m))}" for m in shown if m in t.meters)
        lines.append(f"best: #{t.index} {setting_text(t.setting, families)}  {meters}"
                     + (f"  objective={format_value(t.objective)}" if t.objective is not None else ""))
    return "\n".join(lines)
