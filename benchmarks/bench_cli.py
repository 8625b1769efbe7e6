"""CLI start-up time: how long `kmr` takes before it does any real work.

Usage: python benchmarks/bench_cli.py [--runs N] [--update-docs]

Times, as the median wall time of N fresh subprocesses (after one discarded warm-up
run each), `python -c pass` (the interpreter alone, the floor), `kmr --help`,
`kmr check` on a program with nothing to verify (no import: parse, names, types) and
`kmr check` on the standard library, and the main example when it is there (its model
facts cached by the warm-up run, so that row is parse + check + Z3 verification).
Prints a markdown table; `--update-docs` also writes it into the "## CLI start-up"
section of docs/benchmarks.md, leaving the other sections alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## CLI start-up"
NOTHING_TO_VERIFY = "knob sparsity : float in [0.0, 0.9] step 0.05 = 0.5\nmeter half = sparsity / 2\n"


def kmr_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m kmr_dsl`."""
    script = Path(sys.executable).with_name("kmr.exe" if os.name == "nt" else "kmr")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "kmr_dsl"]


def time_runs(cmd: list[str], runs: int, env: dict[str, str]) -> tuple[list[float], int]:
    """Wall times in ms of `runs` runs after a warm-up, and the exit code."""
    code = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True).returncode
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True)
        times.append((time.perf_counter() - start) * 1000)
    return times, code


def cases(tmp: Path) -> list[tuple[str, list[str]]]:
    kmr = kmr_command()
    plain = tmp / "nothing_to_verify.kmr"
    plain.write_text(NOTHING_TO_VERIFY, encoding="utf-8")
    rows = [
        ("`python -c pass` (baseline)", [sys.executable, "-c", "pass"]),
        ("`kmr --help`", kmr + ["--help"]),
        ("`kmr check` nothing to verify (no import)", kmr + ["check", str(plain)]),
        ("`kmr check stdlib/std.kmr`", kmr + ["check", str(ROOT / "stdlib" / "std.kmr")]),
    ]
    example = ROOT / "examples" / "digits"
    if (example / "mlp.safetensors").is_file():
        rows.append(("`kmr check examples/digits/digits.kmr` (facts cached)",
                     kmr + ["check", str(example / "digits.kmr")]))
    return rows


def table(results, runs: int) -> str:
    base = statistics.median(results[0][1])
    out = ["| command | median ms | min ms | max ms | over baseline | exit |",
           "|---|---:|---:|---:|---:|---:|"]
    for label, times, code in results:
        med = statistics.median(times)
        out.append(f"| {label} | {med:.0f} | {min(times):.0f} | {max(times):.0f} | "
                   f"{med - base:+.0f} ms | {code} |")
    cpu = platform.processor() or platform.machine()
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    out.append("")
    out.append(f"{runs} runs each after one warm-up; Python {platform.python_version()}, "
               f"{os.cpu_count()} CPUs ({cpu}){load}, {time.strftime('%Y-%m-%d')}.")
    return "\n".join(out)


def update_docs(text: str, docs: Path = DOCS) -> None:
    """Replace (or append) the CLI section of docs/benchmarks.md, keeping the others."""
    body = (f"{SECTION}\n\nMeasured with `python benchmarks/bench_cli.py --runs N --update-docs` (median wall\n"
            "time of N fresh processes, beside `python -c pass` in the same session; shared\n"
            "machines are noisy, so read the differences, not the absolute times). `kmr --help`\n"
            "should stay close to the interpreter's own start-up (it imports neither torch nor\n"
            "sympy nor z3); what `kmr check` adds on top is the checker and, for verification,\n"
            "sympy and z3.\n\n"
            f"{text}\n")
    old = docs.read_text(encoding="utf-8") if docs.is_file() else "# Benchmarks\n"
    start = old.find(SECTION)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + body
    else:
        end = old.find("\n## ", start + len(SECTION))
        new = old[:start] + body + ("\n" + old[end + 1:] if end >= 0 else "")
    docs.write_text(new, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--update-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = ap.parse_args(argv)
    env = dict(os.environ, NO_COLOR="1")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        env["KMR_CACHE_DIR"] = str(Path(tmp) / "cache")
        for label, cmd in cases(Path(tmp)):
            times, code = time_runs(cmd, args.runs, env)
            results.append((label, times, code))
            print(f"{label}: {statistics.median(times):.0f} ms", file=sys.stderr)
    text = table(results, args.runs)
    print(text)
    if args.update_docs:
        update_docs(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
