"""The side-by-side benchmarks' shared helpers: docs sections and paired timing."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import sidebyside  # noqa: E402


def test_update_docs_replaces_only_its_section(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Theirs\n\nkeep me\n\n## Mine\n\nold\n\n## Last\n\nkeep me too\n")
    sidebyside.update_docs("Mine", "new\n\n| a |", docs)
    sidebyside.update_docs("Added", "appended", docs)
    text = docs.read_text()
    assert text == ("# Benchmarks\n\n## Theirs\n\nkeep me\n\n## Mine\n\nnew\n\n| a |\n\n## Last\n\nkeep me too\n"
                    "\n## Added\n\nappended\n")
    sidebyside.update_docs("Added", "again", docs)
    assert docs.read_text().endswith("## Added\n\nagain\n") and text.count("## ") == docs.read_text().count("## ")


def test_paired_latency_reports_ratios_to_the_first_model():
    torch = pytest.importorskip("torch")
    fast, slow = torch.nn.Linear(8, 8), torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(50)])
    result = sidebyside.paired_latency({"fast": fast, "slow": slow}, lambda: torch.zeros(4, 8), rounds=5)
    assert result["fast"]["ratio"] == 1.0
    assert result["slow"]["ratio"] > 1.0 and result["slow"]["min_s"] > 0


def test_paired_rounds_rotate_the_order_and_time_every_model_every_round():
    calls = []

    class Model:
        def __init__(self, name):
            self.name = name

        def __call__(self, x):
            calls.append(self.name)

    pytest.importorskip("torch")
    times = sidebyside.paired_rounds({n: Model(n) for n in "abc"}, lambda: None, rounds=3, warmup=0)
    assert calls == list("abc" "bca" "cab")
    assert {n: len(t) for n, t in times.items()} == {"a": 3, "b": 3, "c": 3}


def test_quartiles_interpolate_between_ranks():
    assert sidebyside.quartiles([4.0, 1.0, 3.0, 2.0, 5.0]) == (1.0, 2.0, 3.0, 4.0, 5.0)
    assert sidebyside.quartiles([1.0, 2.0]) == (1.0, 1.25, 1.5, 1.75, 2.0)
    assert sidebyside.quartiles([7.0]) == (7.0,) * 5


def test_environment_names_threads_only_when_asked():
    import torch

    line = sidebyside.environment(3, ("pytest",))
    assert f"torch {torch.__version__}" in line and f"pytest {pytest.__version__}" in line
    assert "3 thread(s) for latency" in line and "load" in line
    assert "thread" not in sidebyside.environment(None, latency_threads=False)
    assert "no surely-not-installed" in sidebyside.environment(1, ("surely-not-installed",))


def test_bench_methods_only_takes_exact_row_names(capsys):
    import bench_methods

    with pytest.raises(SystemExit) as exit_:
        bench_methods.main(["--only", "GPTQ"])      # a substring of two rows: refused, not both
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown row 'GPTQ'" in err and "'KMR int4 g128 GPTQ'" in err
