"""What the side-by-side benchmarks (bench_overhead, bench_cnn, bench_minilm) share.

Contract:
- `paired_rounds(models, make_input, rounds, threads)`: every round runs each model
  once on the same input, in turn, so a load spike from another process hits every
  model of that round alike; the order rotates from round to round, so no model always
  runs first (or right after the slowest one). Returns each model's seconds per round.
- `paired_latency(...)`: the same rounds summarised: per model, the median seconds, the
  minimum and the median of its per-round ratio to the first model (the reference). On
  a shared machine the paired ratio is the figure to read; absolute times move with
  the load.
- `quartiles(values)`: (min, 25th, median, 75th percentile, max), for a per-round spread.
- `environment(threads, packages)`: one line naming the CPU, torch (and other packages),
  the threads and the load; every benchmark writes this line, none its own.
- `update_docs(section, text)`: replace the body of `## SECTION` in
  docs/benchmarks.md (append the section if it is missing), leaving every other
  section alone. Other engineers own other sections of that file.
- `kmr_session(path, pipeline)`: a checked program's `PipelineSession`, the object
  `kmr run` and `kmr search` use to apply a pipeline and read its meters.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def paired_rounds(models: dict, make_input, rounds: int = 10, threads: int | None = 1,
                  warmup: int = 2) -> dict[str, list[float]]:
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    names = list(models)
    times: dict[str, list[float]] = {n: [] for n in names}
    try:
        x = make_input()
        with torch.no_grad():
            for _ in range(warmup):
                for n in names:
                    models[n](x)
            for r in range(rounds):
                for n in names[r % len(names):] + names[:r % len(names)]:
                    start = time.perf_counter()
                    models[n](x)
                    times[n].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return times


def paired_latency(models: dict, make_input, rounds: int = 10, threads: int | None = 1, warmup: int = 2) -> dict:
    times = paired_rounds(models, make_input, rounds, threads, warmup)
    ref = times[next(iter(models))]
    return {n: {"median_s": statistics.median(t), "min_s": min(t),
                "ratio": statistics.median([a / b for a, b in zip(t, ref)])} for n, t in times.items()}


def quartiles(values) -> tuple[float, float, float, float, float]:
    """(min, 25th percentile, median, 75th percentile, max), linearly interpolated."""
    v = sorted(values)

    def at(f: float) -> float:
        i = f * (len(v) - 1)
        lo = int(i)
        return v[lo] + (v[min(lo + 1, len(v) - 1)] - v[lo]) * (i - lo)
    return v[0], at(0.25), at(0.5), at(0.75), v[-1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(threads: int | None, packages: tuple[str, ...] = (), *, latency_threads: bool = True) -> str:
    """The CPU, torch (and `packages`' versions), the threads latency ran on (None: torch's
    current count; left out with `latency_threads=False`, for tables whose rows name
    them), the load average and the date: one line, the same in every benchmark."""
    import importlib.metadata

    import torch

    try:
        load = f"load average {os.getloadavg()[0]:.1f}"
    except OSError:
        load = "load unknown"
    isa = torch.backends.cpu.get_cpu_capability()
    parts = [f"{cpu_name()} ({isa})", f"{os.cpu_count()} CPUs", f"torch {torch.__version__}"]
    for name in packages:
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"no {name}")
    if latency_threads:
        parts.append(f"{threads or torch.get_num_threads()} thread(s) for latency")
    return ", ".join(parts + [load, date.today().isoformat()])


def update_docs(section: str, text: str, docs: Path = DOCS) -> None:
    heading = f"## {section}"
    body = text.strip("\n") + "\n"
    lines = docs.read_text(encoding="utf-8").split("\n") if docs.is_file() else ["# Benchmarks", ""]
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        while lines and not lines[-1].strip():
            lines.pop()
        new = lines + ["", heading, "", body]
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = lines[end:]
        new = lines[:start] + [heading, "", body] + (tail if tail else [])
    docs.write_text("\n".join(new).rstrip("\n") + "\n", encoding="utf-8")


def kmr_session(path: str | Path, pipeline: str | None = None, trust: bool = False):
    from kmr_dsl.app import load_checked
    from kmr_dsl.diagnostics import render_all
    from kmr_dsl.runtime.session import PipelineSession

    program, diags, sources = load_checked(str(path), trust=trust)
    if program is None:
        raise SystemExit(render_all(diags, sources))
    name = pipeline or next(iter(program.pipelines))
    return program, PipelineSession(program, name, trust=trust)


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    marks = ["---" if a == "l" else "---:" for a in align]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(marks) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)
