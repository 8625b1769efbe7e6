"""The pytest plugin: properties (and contracts) of .kmr files become test items."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import DATA, USER_KMR, USER_RULES

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def _warm(tmp_path_factory):
    """Run `kmr test` once in this process before any pytester run.

    pytester drops every module its in-process runs imported, but torch and the C
    extensions it loads lazily cannot be imported twice in one process (a crash). A
    first run here imports all of them where pytester will not remove them.
    """
    import contextlib
    import io

    from kmr_dsl.cli import main

    folder = tmp_path_factory.mktemp("warm")
    for name in ("laws.kmr", "proptest_tiny.py"):
        shutil.copy(DATA / name, folder / name)
    (folder / "user.kmr").write_text(USER_KMR)
    (folder / "user_rules.py").write_text(USER_RULES)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main(["test", str(folder / "laws.kmr"), "--examples", "1"])
        main(["test", str(folder / "user.kmr"), "--examples", "1"])


@pytest.fixture
def tree(pytester, monkeypatch):
    """The tiny programs in pytester's folder; only our plugin is loaded (by -p)."""
    # an installed entry point would register the plugin a second time next to -p
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    for name in ("laws.kmr", "family.kmr", "proptest_tiny.py"):
        shutil.copy(DATA / name, pytester.path / name)
    return pytester.path


def run(pytester, *args):
    return pytester.runpytest("-p", "kmr_dsl.proptest.plugin", "-p", "no:cacheprovider", *args)


def test_properties_are_collected_as_items(pytester, tree):
    result = run(pytester, "--kmr", "--collect-only", "-q", str(tree / "laws.kmr"))
    result.stdout.fnmatch_lines(["laws.kmr::smaller", "laws.kmr::tiny", "laws.kmr::strictly"])
    assert result.ret == 0


def test_failures_report_the_shrunk_setting(pytester, tree):
    result = run(pytester, "--kmr", "--kmr-examples", "5", str(tree / "laws.kmr"))
    result.assert_outcomes(passed=1, failed=2)
    out = result.stdout.str()
    assert "property tiny failed at sparsity = 0.0, bits = 8: size <= 10% * baseline.size" in out
    assert "error[KMR507]: property `tiny` failed" in out
    assert "shrunk setting: bits = 32, sparsity = 0.0" in out
    assert "Traceback" not in out


def test_a_folder_collects_every_kmr_file(pytester, tree):
    result = run(pytester, "--kmr", "--collect-only", "-q", str(tree))
    result.stdout.fnmatch_lines(["family.kmr::sparser", "family.kmr::always_pruned", "laws.kmr::smaller"])


def test_contract_items_with_kmr_contracts(pytester, tree):
    (tree / "user.kmr").write_text(USER_KMR)
    (tree / "user_rules.py").write_text(USER_RULES)
    result = run(pytester, "--kmr", "--kmr-contracts", "-rs", str(tree / "user.kmr"))
    result.assert_outcomes(passed=2, failed=3, skipped=1)
    out = result.stdout.str()
    assert "rule halve broke its contract: layer.density is 0.75, the effect says 0.5" in out
    assert "error[KMR410]: `halve` broke its contract" in out
    assert "rule conv1 untested: no generated model has a layer of kind Conv1d" in out


def test_without_kmr_nothing_is_collected(pytester, tree):
    result = run(pytester, str(tree))
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_a_malformed_file_is_a_collection_error(pytester, tree):
    (tree / "bad.kmr").write_text('import "std"\nproperty p(nowhere) {\n    forall nothing\n    check size <= 1 KB\n}\n')
    result = run(pytester, "--kmr", str(tree / "bad.kmr"))
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert "error[KMR201]" in result.stdout.str()


def test_importing_the_plugin_is_cheap():
    code = ("import sys, kmr_dsl.proptest.plugin; "
            "print(sorted(m for m in ('torch', 'lark', 'sympy', 'z3', 'hypothesis') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_a_rule_imported_by_several_files_gets_one_contract_item(pytester, tree):
    result = run(pytester, "--kmr", "--kmr-contracts", "--collect-only", "-q", str(tree))
    items = [line for line in result.stdout.lines if "::contract[prune]" in line]
    assert items == ["family.kmr::contract[prune]"]
