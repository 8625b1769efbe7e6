"""The application layer: what every command does before and after its own work.

Contract (the commands `kmr check`, `run`, `search`, `test`, the pytest plugin and the
Ray workers import this module, never `kmr_dsl.cli`):
- `load_checked(path, trust)` parses and checks one file with the real facts provider
  and returns `(CheckedProgram | None, diagnostics, sources)`; a missing file is KMR501.
- `facts_provider(spec, trust, span)`: cached model facts (`kmr_dsl.facts`); on a miss
  the model is loaded with torch (`kmr_dsl.runtime.introspect`, imported only then).
- `pick_pipeline(program, wanted, path)`: the one pipeline a command works on (the only
  one, or `--pipeline NAME`); `pipelines_to_check(...)`: every pipeline, or the named
  one. Anything else is KMR502 listing the pipelines.
- `solver_options(args)`: `--rlimit`/`--timeout` as `verify(...)` keywords.
- `Output(fmt)`: diagnostics to stderr (colour on a terminal, unless NO_COLOR) and
  text results to stdout; `emit_json(payload)` for `--format json`.
- `program_session(path, pipeline, ...)`: a `PipelineSession` for a program re-read
  from its file (what a Ray worker builds; nothing unpicklable crosses processes).
- Exit codes (spec §7): `EXIT_OK` 0, `EXIT_FAILED` 1, `EXIT_MALFORMED` 2,
  `EXIT_UNKNOWN` 3, and `EXIT_INTERRUPTED` 130 for Ctrl-C (KMR409; the shell's
  128 + SIGINT); `worst(codes)` combines several in the order 2, 1, 3, 0.
Importing this module imports no torch, z3, sympy or lark: `kmr --help` stays cheap.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kmr_dsl.diagnostics import Diagnostic, KmrError, Span, error, has_errors, render_all, sort_key, use_color

EXIT_OK, EXIT_FAILED, EXIT_MALFORMED, EXIT_UNKNOWN = 0, 1, 2, 3
EXIT_INTERRUPTED = 130   # Ctrl-C (KMR409), the shell's 128 + SIGINT
_PRIORITY = {EXIT_MALFORMED: 3, EXIT_FAILED: 2, EXIT_UNKNOWN: 1, EXIT_OK: 0}


def worst(codes) -> int:
    return max(codes, key=lambda c: _PRIORITY.get(c, 4), default=EXIT_OK)


# ---------------------------------------------------------------- output

class Output:
    """Where diagnostics and results go; text (colour unless NO_COLOR) or JSON."""

    def __init__(self, fmt: str = "text"):
        self.fmt = fmt
        self.color = use_color(sys.stderr)

    def diagnostics(self, diags: list[Diagnostic], sources: dict[str, str] | None = None) -> None:
        if self.fmt == "text" and diags:
            print(render_all(sorted(diags, key=sort_key), sources, self.color), file=sys.stderr)

    def result(self, text: str) -> None:
        if self.fmt == "text":
            print(text)


def emit_json(payload) -> None:
    print(json.dumps(payload, indent=2, default=str))
    sys.stdout.flush()


# ---------------------------------------------------------------- loading

def facts_provider(spec, trust: bool, span: Span):
    """Cached model facts; on a miss, load the model with torch and cache the facts."""
    from kmr_dsl.facts import load_cached, store_cached

    cached = load_cached(spec)
    if cached is not None:
        return cached
    from kmr_dsl.runtime.introspect import model_facts

    facts = model_facts(spec, trust=trust, span=span)
    store_cached(spec, facts)
    return facts


def load_checked(path: str, trust: bool = False):
    """Parse and check one file: (CheckedProgram or None, diagnostics, sources)."""
    from kmr_dsl.check import check_file

    p = Path(path)
    if not p.is_file():
        diag = error("KMR501", Span.unknown(path), f"no such file: {path}", hint="check the path")
        return None, [diag], {}
    program, diags = check_file(str(p), facts_provider=facts_provider, trust=trust)
    sources = program.sources if program is not None else read_sources(diags)
    return program, diags, sources


def read_sources(diags) -> dict[str, str]:
    """The text of every file the diagnostics point into (for rendering source lines)."""
    out = {}
    for d in diags:
        try:
            out.setdefault(d.span.file, Path(d.span.file).read_text(encoding="utf-8", errors="replace"))
        except OSError:
            pass
    return out


def program_session(path: str, pipeline: str, trust: bool = False, seed: int = 0, threads: int | None = None):
    """A PipelineSession for `pipeline` of the program in `path` (checked afresh)."""
    from kmr_dsl.runtime.session import PipelineSession

    program, diags, _ = load_checked(path, trust=trust)
    if program is None or has_errors(diags):
        first = next((d for d in diags if d.severity.value == "error"), None)
        raise KmrError(first or error("KMR501", Span.unknown(path), f"cannot load {path}"))
    return PipelineSession(program, pipeline, trust=trust, seed=seed, threads=threads)


# ---------------------------------------------------------------- choosing

def _no_pipeline(program, path: str, message: str, hint: str) -> KmrError:
    names = ", ".join(program.pipelines) or "(none)"
    return KmrError(error("KMR502", Span.unknown(path), message, f"pipelines: {names}", hint=hint))


def pick_pipeline(program, wanted: str | None, path: str) -> str:
    """The one pipeline a run or a search works on: `wanted`, or the file's only one."""
    if wanted is not None:
        if wanted not in program.pipelines:
            raise _no_pipeline(program, path, f"no pipeline named `{wanted}`",
                               "pass one of the listed names to --pipeline")
        return wanted
    if len(program.pipelines) != 1:
        raise _no_pipeline(program, path,
                           "the file has several pipelines" if program.pipelines else "the file has no pipeline",
                           "choose one with --pipeline NAME")
    return next(iter(program.pipelines))


def pipelines_to_check(program, wanted: str | None, path: str) -> list[str]:
    """Every pipeline of the file, or only `wanted`."""
    if wanted is None:
        return list(program.pipelines)
    if wanted not in program.pipelines:
        raise _no_pipeline(program, path, f"no pipeline named `{wanted}`", "pass one of the listed names to --pipeline")
    return [wanted]


def solver_options(args) -> dict:
    """`--rlimit` and `--timeout` as keyword arguments of `kmr_dsl.verify.verify`."""
    opts = {}
    if getattr(args, "rlimit", None) is not None:
        opts["rlimit"] = args.rlimit
    if getattr(args, "timeout", None) is not None:
        opts["timeout_s"] = args.timeout
    return opts


__all__ = [
    "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_MALFORMED", "EXIT_OK", "EXIT_UNKNOWN", "Output", "emit_json", "facts_provider",
    "load_checked", "pick_pipeline", "pipelines_to_check", "program_session", "read_sources", "solver_options",
    "worst",
]
