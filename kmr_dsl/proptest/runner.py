"""Test a whole checked program: every property, then every rule's contract.

Contract: `test_program(program, examples=N, seed=S, contracts=True, trust=False,
on_result=None) -> FileReport` runs each `property` of the file (N examples each) and,
unless `contracts` is false, the contract of each rule in scope that has an
implementation (the standard library's when the file imports "std", and the file's
own; `contract_examples(N)` cases each, 10 by default). `on_result(result)` is called
as each one finishes, so a front end can print as it goes. `FileReport.exit_code` is 1
when a property or a contract failed (or could not run), else 0;
`diagnostics()` gathers KMR507 / KMR410 and the errors behind them; `to_json()` is
what `kmr test --format json` prints; `render()` the text summary.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from kmr_dsl.core.program import CheckedProgram
from kmr_dsl.diagnostics import Diagnostic, KmrError, error


def contract_examples(examples: int) -> int:
    """Cases per rule contract: half the property budget (10 for the default 20), at least 1."""
    return max(1, (int(examples) + 1) // 2)


@dataclass
class FileReport:
    file: str
    seed: int
    examples: int
    properties: list = field(default_factory=list)     # PropertyResult
    contracts: list = field(default_factory=list)      # ContractResult

    @property
    def results(self) -> list:
        return list(self.properties) + list(self.contracts)

    @property
    def exit_code(self) -> int:
        return 1 if any(r.failed for r in self.results) else 0

    def diagnostics(self) -> list[Diagnostic]:
        return [d for r in self.results for d in r.diagnostics()]

    def counts(self) -> dict[str, int]:
        out = {"passed": 0, "failed": 0, "untested": 0}
        for r in self.results:
            key = "failed" if r.failed else ("untested" if r.status == "untested" else "passed")
            out[key] += 1
        return out

    def render(self) -> str:
        lines = [header(self.file, self.examples, self.seed, bool(self.contracts))]
        lines += [r.summary() for r in self.results]
        lines.append(footer(self))
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"file": self.file, "seed": self.seed, "examples": self.examples,
                "contract_examples": contract_examples(self.examples), "exit_code": self.exit_code,
                "counts": self.counts(), "properties": [r.to_json() for r in self.properties],
                "contracts": [r.to_json() for r in self.contracts],
                "diagnostics": [d.to_json() for d in self.diagnostics()]}


def header(file: str, examples: int, seed: int, contracts: bool) -> str:
    rules = f", {contract_examples(examples)} cases per rule contract" if contracts else ""
    return f"kmr test {file}: {examples} examples per property{rules}, seed {seed}"


def footer(report: FileReport) -> str:
    c = report.counts()
    parts = [f"{c['passed']} passed", f"{c['failed']} failed"]
    if c["untested"]:
        parts.append(f"{c['untested']} untested")
    return f"=> {', '.join(parts)} (exit {report.exit_code})"


def test_program(program: CheckedProgram, *, examples: int = 20, seed: int = 0, contracts: bool = True,
                 trust: bool = False, on_result=None) -> FileReport:
    from kmr_dsl.proptest.contracts import check_contract
    from kmr_dsl.proptest.properties import Sessions, run_property

    from kmr_dsl.proptest.contracts import ContractResult
    from kmr_dsl.proptest.properties import PropertyResult

    report = FileReport(program.file, seed, examples)
    sessions = Sessions(program, trust=trust, seed=seed)
    for prop in program.properties.values():
        result = guarded(lambda: run_property(program, prop, sessions, examples=examples, seed=seed),
                         PropertyResult(prop.name, prop.pipeline, prop.span), f"property `{prop.name}`")
        report.properties.append(result)
        if on_result is not None:
            on_result(result)
    if contracts:
        for rule in program.rules.values():
            result = guarded(lambda: check_contract(rule, examples=contract_examples(examples), seed=seed,
                                                    sources=program.sources, trust=trust),
                             ContractResult(rule.name, rule.impl, rule.span), f"the contract of `{rule.name}`")
            report.contracts.append(result)
            if on_result is not None:
                on_result(result)
    return report


def guarded(run, blank, what: str):
    """`run()`, or `blank` marked as an error when it raised: one broken test must not
    hide the others' results, and no traceback reaches the user."""
    try:
        return run()
    except KmrError as exc:
        blank.status, blank.error = "error", exc.diagnostic
    except Exception as exc:  # noqa: BLE001 - a bug in KMR or in user code it called
        if os.environ.get("KMR_DEBUG"):
            raise
        blank.status = "error"
        blank.error = error("KMR500", blank.span, f"internal error while testing {what}: {type(exc).__name__}: {exc}")
    return blank


__all__ = ["FileReport", "contract_examples", "footer", "header", "test_program"]
