"""pytest plugin: the properties (and rule contracts) of .kmr files as test items.

Contract: registered as the `pytest11` entry point `kmr`. Without `--kmr` it collects
nothing and imports nothing beyond pytest and the standard library (no torch, lark,
sympy or z3: pytest's start-up is unchanged). With it:

    pytest --kmr examples/                 # every .kmr file under examples/
    pytest --kmr path/to/file.kmr          # one file
    pytest --kmr --kmr-contracts PATH      # also one item per rule contract

each `property` becomes an item `file.kmr::NAME`, run exactly as `kmr test` runs it
(`--kmr-examples N`, default 20; `--kmr-seed S`, default 0; `--kmr-trust` allows
pickled models); a failure reports the shrunk setting and the KMR507 diagnostic.
With `--kmr-contracts`, each rule in scope adds `file.kmr::contract[RULE]`
(N/2 cases, as `kmr test`); a rule several files import (the standard library) gets
one item, in the first file collected. A malformed file is a collection error showing its
diagnostics. The pipeline sessions of a file are shared by its items.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_addoption(parser) -> None:
    group = parser.getgroup("kmr", "KMR property tests")
    group.addoption("--kmr", action="store_true", default=False,
                    help="collect the properties of .kmr files under the given paths as tests")
    group.addoption("--kmr-contracts", action="store_true", default=False,
                    help="with --kmr: also test every rule's contract on generated models")
    group.addoption("--kmr-examples", type=int, default=20, metavar="N",
                    help="examples per property (rule contracts get N/2); default 20")
    group.addoption("--kmr-seed", type=int, default=0, metavar="S", help="Hypothesis seed; default 0")
    group.addoption("--kmr-trust", action="store_true", default=False,
                    help="allow loading pickled models (torch_module)")


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".kmr" and parent.config.getoption("kmr"):
        return KmrFile.from_parent(parent, path=file_path)
    return None


_CONTRACTS_SEEN = pytest.StashKey[set]()


class KmrTestFailed(Exception):
    """A property or contract failed; carries the report text."""


class KmrFile(pytest.File):
    """One .kmr file: checked at collection, one item per property (and rule contract)."""

    def collect(self):
        from kmr_dsl.app import load_checked
        from kmr_dsl.diagnostics import has_errors, render_all

        opts = self.config.option
        program, diags, sources = load_checked(str(self.path), trust=opts.kmr_trust)
        if program is None or has_errors(diags):
            raise self.CollectError(render_all([d for d in diags if d.severity.value == "error"], sources))
        self.program, self.sources, self._sessions = program, sources, None
        for prop in program.properties.values():
            yield KmrProperty.from_parent(self, name=prop.name, target=prop)
        if opts.kmr_contracts:
            seen = self.config.stash.setdefault(_CONTRACTS_SEEN, set())
            for rule in program.rules.values():
                # a rule imported by several files (the standard library) is tested once
                key = (str(Path(rule.span.file).resolve()), rule.span.line, rule.name)
                if key not in seen:
                    seen.add(key)
                    yield KmrContract.from_parent(self, name=f"contract[{rule.name}]", target=rule)

    def sessions(self):
        if self._sessions is None:
            from kmr_dsl.proptest.properties import Sessions

            opts = self.config.option
            self._sessions = Sessions(self.program, trust=opts.kmr_trust, seed=opts.kmr_seed)
        return self._sessions

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, self.CollectError):
            return str(excinfo.value.args[0])
        return super().repr_failure(excinfo, style)


class _KmrItem(pytest.Item):
    """A property or a contract; `run()` returns its result, a failure raises KmrTestFailed."""

    def __init__(self, *, target, **kwargs):
        super().__init__(**kwargs)
        self.target = target

    def run(self):
        raise NotImplementedError

    def runtest(self) -> None:
        from kmr_dsl.diagnostics import render_all

        result = self.run()
        if result.status == "untested":
            pytest.skip(result.summary())
        if result.failed:
            diags = render_all(result.diagnostics(), self.parent.sources)
            raise KmrTestFailed(f"{result.summary()}\n\n{diags}")

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, KmrTestFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        span = self.target.span
        return self.path, max(0, span.line - 1), f"{self.kind} {self.target.name}"


class KmrProperty(_KmrItem):
    kind = "property"

    def run(self):
        from kmr_dsl.proptest.properties import PropertyResult, run_property
        from kmr_dsl.proptest.runner import guarded

        opts, prop = self.config.option, self.target
        return guarded(lambda: run_property(self.parent.program, prop, self.parent.sessions(),
                                            examples=opts.kmr_examples, seed=opts.kmr_seed),
                       PropertyResult(prop.name, prop.pipeline, prop.span), f"property `{prop.name}`")


class KmrContract(_KmrItem):
    kind = "rule"

    def run(self):
        from kmr_dsl.proptest.contracts import ContractResult, check_contract
        from kmr_dsl.proptest.runner import contract_examples, guarded

        opts, rule = self.config.option, self.target
        return guarded(lambda: check_contract(rule, examples=contract_examples(opts.kmr_examples),
                                              seed=opts.kmr_seed, sources=self.parent.sources,
                                              trust=opts.kmr_trust),
                       ContractResult(rule.name, rule.impl, rule.span), f"the contract of `{rule.name}`")
