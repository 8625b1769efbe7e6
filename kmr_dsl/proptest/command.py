"""`kmr test FILE [--examples N] [--seed S] [--no-contracts] [--format json] [--trust]`.

Contract: check the file (exit 2 with its diagnostics when malformed), then test every
property (N examples, default 20) and every rule contract in scope (N/2 cases, 10 by
default) with `kmr_dsl.proptest.runner.test_program`, printing one summary line per
property and per rule as each finishes (stdout), then the diagnostics of the failures
(KMR507, KMR410, and the runtime errors behind them) on stderr. `--format json` prints
one JSON object instead (`FileReport.to_json`, plus the check's warnings). The same
seed gives the same draws, the same shrunk cases and the same output. Exit 0 when
everything passed, 1 when a property or a contract failed, 2 when the program is
malformed or the command misused.
"""

from __future__ import annotations

from kmr_dsl.app import Output, emit_json, load_checked
from kmr_dsl.diagnostics import KmrError, Span, error, has_errors


def test_command(args) -> int:
    if args.examples < 1:
        raise KmrError(error("KMR502", Span.unknown("--examples"), f"--examples must be at least 1, got {args.examples}",
                             hint="pass --examples N with N >= 1 (default 20)"))
    out = Output(args.format)
    program, diags, sources = load_checked(args.file, trust=args.trust)
    if program is None or has_errors(diags):
        out.diagnostics(diags, sources)
        if args.format == "json":
            emit_json({"file": args.file, "exit_code": 2, "diagnostics": [d.to_json() for d in diags]})
        return 2

    from kmr_dsl.proptest.runner import footer, header, test_program

    contracts = not args.no_contracts
    text = args.format == "text"
    if text:
        print(header(args.file, args.examples, args.seed, contracts), flush=True)
        if not program.properties and not (contracts and program.rules):
            print("nothing to test: the file declares no property (and contracts are off or no rule is in scope)")

    def show(result) -> None:
        if text:
            print(result.summary(), flush=True)

    report = test_program(program, examples=args.examples, seed=args.seed, contracts=contracts,
                          trust=args.trust, on_result=show)
    out.diagnostics(report.diagnostics(), sources)
    if text:
        print(footer(report), flush=True)
    else:
        payload = report.to_json()
        payload["file"] = args.file
        payload["check_diagnostics"] = [d.to_json() for d in diags]
        emit_json(payload)
    return report.exit_code


__all__ = ["test_command"]
