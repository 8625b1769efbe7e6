"""The `kmr` command: a thin shell over the stages.

Contract: `main(argv) -> int` is callable in-process and never raises (a bug becomes
KMR500 with a hint, never a traceback, unless KMR_DEBUG=1). One function per
subcommand; heavy modules (sympy, z3, torch) are imported inside the commands that
need them, so `kmr --help`, `kmr --version` and `kmr fmt` never pay for torch.

Exit codes (spec §7): 0 verified / ok, 1 a proof or a budget line failed (or a runtime
error KMR4xx), 2 malformed program or misused command, 3 unknown (solver limit), 130
interrupted by Ctrl-C (KMR409; nothing partial is written). With several files, the
worst wins in the order 2, 1, 3, 0.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kmr_dsl import __version__
from kmr_dsl.app import (
    EXIT_FAILED, EXIT_INTERRUPTED, EXIT_MALFORMED, EXIT_OK, EXIT_UNKNOWN, Output, emit_json, load_checked,
    pipelines_to_check, read_sources, solver_options, worst,
)
from kmr_dsl.diagnostics import KmrError, Span, error, has_errors, render_all


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports misuse as KMR502 instead of exiting the process."""

    def error(self, message):
        raise _UsageError(f"{self.prog}: {message}")


# ---------------------------------------------------------------- commands

def cmd_check(args) -> int:
    out = Output(args.format)
    codes, payload = [], []
    for path in args.files:
        program, diags, sources = load_checked(path, trust=args.trust)
        entry = {"file": path, "diagnostics": [d.to_json() for d in diags], "pipelines": []}
        if program is None or has_errors(diags):
            out.diagnostics(diags, sources)
            codes.append(EXIT_MALFORMED)
            entry["exit_code"] = EXIT_MALFORMED
            payload.append(entry)
            continue
        code = EXIT_OK
        if args.explain == "layers":   # what each selector matched: no proof needed
            from kmr_dsl.check.selectors import explain_selection

            for name in pipelines_to_check(program, args.pipeline, path):
                if args.format == "text":
                    out.result(explain_selection(program, name))
                entry.setdefault("layers", {})[name] = [
                    {"rule": step.rule.name, "line": step.span.line, "layers": list(step.layers)}
                    for step in program.pipelines[name].steps]
        if not args.no_verify and program.pipelines:  # nothing to prove: no sympy/z3 import
            from kmr_dsl.verify import verify

            for name in pipelines_to_check(program, args.pipeline, path):
                report = verify(program, name, **solver_options(args))
                diags = diags + list(report.diagnostics)
                entry["pipelines"].append({"pipeline": name, **report.to_json()})
                code = worst([code, report.exit_code])
                if args.format == "text":
                    out.result(_render_report(path, name, report, args.verbose))
                if args.explain and args.explain != "layers":
                    from kmr_dsl.verify import explain

                    out.result(explain(program, name, args.explain))
        entry["diagnostics"] = [d.to_json() for d in diags]
        entry["exit_code"] = code
        out.diagnostics(diags, sources)
        if args.format == "text" and (args.no_verify or not program.pipelines):
            why = "verification skipped" if args.no_verify else "no pipeline to verify"
            out.result(f"{path}: well-formed ({why})")
        payload.append(entry)
        codes.append(code)
    final = worst(codes)
    if args.format == "json":
        emit_json({"exit_code": final, "files": payload})
    return final


def _render_report(path: str, pipeline: str, report, verbose: bool = False) -> str:
    # one line per obligation family; each layer's obligation with --verbose (and always in JSON)
    lines = [f"{path}: pipeline `{pipeline}`"] + [f"  {line}" for line in report.render(verbose)]
    verdict = {EXIT_OK: "verified", EXIT_FAILED: "refuted", EXIT_UNKNOWN: "unknown"}.get(report.exit_code, "?")
    lines.append(f"  => {verdict} (exit {report.exit_code})")
    return "\n".join(lines)


def cmd_fmt(args) -> int:
    from kmr_dsl.fmt import format_source

    out = Output("text")
    code = EXIT_OK
    for path in args.files:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            out.diagnostics([error("KMR501", Span.unknown(path), f"cannot read {path}: {e}")])
            code = worst([code, EXIT_MALFORMED])
            continue
        formatted, diags = format_source(text, str(p))
        if formatted is None:
            out.diagnostics(diags, {str(p): text})
            code = worst([code, EXIT_MALFORMED])
        elif args.check:
            if formatted != text:
                out.diagnostics([error("KMR504", Span(str(p), 1, 1, 1, 2), f"{path} is not formatted")], {str(p): text})
                code = worst([code, EXIT_FAILED])
        elif formatted != text:
            tmp = p.with_name(f".{p.name}.kmrfmt.tmp")
            tmp.write_text(formatted, encoding="utf-8")
            os.replace(tmp, p)  # atomic: an interrupted fmt never leaves half a file
            out.result(f"formatted {path}")
    return code


def _dispatch(module: str, function: str, args) -> int:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and not e.name.startswith("kmr_dsl"):
            raise KmrError(error("KMR506", Span.unknown(args.command), f"missing dependency `{e.name}`",
                                 hint=f"pip install {e.name}"))
        raise
    return getattr(mod, function)(args)


# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="kmr", description="KMR: verified model-efficiency pipelines on PyTorch.")
    ap.add_argument("--version", action="version", version=f"kmr {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def common(p):
        p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
        p.add_argument("--trust", action="store_true",
                       help="allow pickled models and code outside the program's folder (docs/security.md)")

    def solver(p):
        p.add_argument("--rlimit", type=int, default=None, help="solver resource limit per obligation")
        p.add_argument("--timeout", type=float, default=None, help="solver wall-clock cap per obligation (s)")

    p = sub.add_parser("check", help="prove a program well-formed, composable and feasible")
    p.add_argument("files", nargs="+", metavar="FILE")
    common(p)
    solver(p)
    p.add_argument("--pipeline", help="check only this pipeline")
    p.add_argument("--explain", metavar="METER",
                   help="print an analytic meter's cost formula, or `layers`: what each selector matched")
    p.add_argument("--no-verify", action="store_true", help="stop after names, types and units")
    p.add_argument("--verbose", action="store_true", help="list every obligation (one per layer), not one per family")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("fmt", help="format files canonically")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--check", action="store_true", help="exit 1 if a file is not formatted; change nothing")
    p.set_defaults(func=cmd_fmt)

    p = sub.add_parser("run", help="apply the pipeline, measure every meter, check the budget")
    p.add_argument("file", metavar="FILE")
    common(p)
    solver(p)
    p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE", help="knob setting (repeatable)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: out/<pipeline>)")
    p.add_argument("--force", action="store_true", help="run even if verification refutes the program")
    p.add_argument("--pipeline", help="the pipeline to run (default: the only one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads for the rules and meters (default: 1 for models under 1 M "
                        "parameters, else torch's own)")
    p.set_defaults(func=lambda a: _dispatch("kmr_dsl.runtime.command", "run_command", a))

    p = sub.add_parser("search", help="Budgeted-KMR: find the best setting that meets the budget")
    p.add_argument("file", metavar="FILE")
    common(p)
    solver(p)
    p.add_argument("--out", default=None, metavar="DIR")
    p.add_argument("--pipeline")
    p.add_argument("--strategy", default=None, help="override the program's search strategy")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue the journal in --out")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS")
    p.add_argument("--backend", choices=("local", "ray"), default="local")
    p.add_argument("--address", default=None, help="Ray cluster address")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads per trial for the rules and meters (default: 1 for models under "
                        "1 M parameters, else torch's own)")
    p.set_defaults(func=lambda a: _dispatch("kmr_dsl.search.command", "search_command", a))

    p = sub.add_parser("test", help="property-test the file's laws and every rule's contract")
    p.add_argument("file", metavar="FILE")
    common(p)
    p.add_argument("--examples", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-contracts", action="store_true", help="skip the rule-contract tests")
    p.set_defaults(func=lambda a: _dispatch("kmr_dsl.proptest.command", "test_command", a))

    p = sub.add_parser("import", help="an llm-compressor or SparseML recipe as a KMR program")
    p.add_argument("recipe", metavar="RECIPE", help="recipe.yaml (or a SparseML recipe.md)")
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="write the program here (default: stdout)")
    p.add_argument("--model", default=None, metavar="SPEC", help="the model's loader call, e.g. 'hf(\"path\")'")
    p.add_argument("--data", default=None, metavar="SPEC", help="the calibration / training data's loader call")
    p.set_defaults(func=lambda a: _dispatch("kmr_dsl.importer.command", "import_command", a))

    p = sub.add_parser("export", help="write an artifact as ONNX or a Hugging Face folder")
    p.add_argument("artifact", metavar="ARTIFACT", help="OUT/model.safetensors written by kmr run or search")
    p.add_argument("--format", dest="export_format", choices=("onnx", "hf"), required=True)
    p.add_argument("-o", "--output", default=None, metavar="DIR", help="output folder")
    p.add_argument("--dense", action="store_true", help="write layers the format cannot hold as float values")
    p.add_argument("--trust", action="store_true", help="rebuild the architecture with the loader the artifact names")
    p.add_argument("--base-dir", default=None, metavar="DIR",
                   help="the program folder whose loader rebuilds the architecture")
    p.add_argument("--json", dest="format", action="store_const", const="json", default="text",
                   help="print the result as JSON")
    p.set_defaults(func=lambda a: _dispatch("kmr_dsl.export.command", "export_command", a))

    p = sub.add_parser("lsp", help="language server on stdio (for editors)")
    p.add_argument("--load-models", action="store_true",
                   help="load models whose facts are not cached (runs their loader's code)")
    p.add_argument("--rlimit", type=int, default=None, help="solver resource limit per obligation")
    p.set_defaults(func=lambda a: _dispatch("kmr_dsl.lsp.server", "lsp_command", a))
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as e:
        print(render_all([error("KMR502", Span.unknown("kmr"), str(e))]), file=sys.stderr)
        return EXIT_MALFORMED
    except SystemExit as e:  # --help and --version exit 0 through argparse
        return int(e.code or 0)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_MALFORMED
    if getattr(args, "threads", None) is not None and args.threads < 1:
        print(render_all([error("KMR502", Span.unknown(f"kmr {args.command}"),
                                f"--threads must be a positive number, not {args.threads}",
                                hint="for example --threads 1 (steady latency on a shared machine)")]), file=sys.stderr)
        return EXIT_MALFORMED
    try:
        return args.func(args)
    except KmrError as e:
        print(render_all([e.diagnostic], read_sources([e.diagnostic])), file=sys.stderr)
        return EXIT_FAILED if e.diagnostic.code.startswith("KMR4") else EXIT_MALFORMED
    except KeyboardInterrupt:
        print(render_all([error("KMR409", Span.unknown(args.command), "interrupted")]), file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as e:   # user code (a model, data, rule or meter) that no loader wrapped
        print(render_all([error("KMR411", Span.unknown(args.command), f"user code called sys.exit({e.code!r})",
                                hint="remove the sys.exit call (raise an exception to report a problem)")]),
              file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:  # a bug: no traceback for users unless asked for
        if os.environ.get("KMR_DEBUG"):
            raise
        print(render_all([error("KMR500", Span.unknown(args.command), f"internal error: {type(e).__name__}: {e}")]),
              file=sys.stderr)
        return EXIT_MALFORMED


def main_entry() -> None:
    sys.exit(main())
