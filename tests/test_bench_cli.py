"""benchmarks/bench_cli.py: its table, and that it rewrites only its own docs section."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_cli", ROOT / "benchmarks" / "bench_cli.py")
bench_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_cli)


def test_table_reports_medians_against_the_baseline():
    text = bench_cli.table([("base", [10.0, 30.0, 20.0], 0), ("kmr", [110.0, 90.0, 100.0], 2)], runs=3)
    lines = text.splitlines()
    assert lines[2] == "| base | 20 | 10 | 30 | +0 ms | 0 |"
    assert lines[3] == "| kmr | 100 | 90 | 110 | +80 ms | 2 |"


def test_update_docs_replaces_only_its_section(tmp_path):
    docs = tmp_path / "benchmarks.md"
    bench_cli.update_docs("| first |", docs)
    assert docs.read_text().startswith("# Benchmarks\n\n## CLI start-up\n")
    docs.write_text(docs.read_text() + "\n## Runtime\n\nnot ours\n")
    bench_cli.update_docs("| second |", docs)
    text = docs.read_text()
    assert "| second |" in text and "| first |" not in text
    assert text.count("## CLI start-up") == 1 and text.endswith("\n## Runtime\n\nnot ours\n")
    assert "| second |\n\n## Runtime" in text


def test_commands_to_time(tmp_path):
    rows = bench_cli.cases(tmp_path)
    labels = [label for label, _ in rows]
    assert labels[0].startswith("`python -c pass`") and "`kmr --help`" in labels
    assert any("stdlib/std.kmr" in label for label in labels)
