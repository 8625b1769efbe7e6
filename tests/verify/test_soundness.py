"""`kmr check` against `kmr run`, end to end, on generated programs and on the reproducers
of every disagreement class the generated ones found (tests/verify/soundness.py says
what is compared and names the kinds).

The generated test runs KMR_SOUND_EXAMPLES cases (default 150; the deterministic
profile draws the same ones every run; benchmarks/bench_differential.py runs 2,000+).
Shrinking is off: one case is a check, a proof and a few real runs, so a shrink would
cost minutes; the failure prints the program and every disagreement instead, and the
benchmark keeps the shortest program per kind.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, note, settings

from tests.verify.soundness import Harness, layer_names
from tests.verify.soundness_cases import cases

EXAMPLES = int(os.environ.get("KMR_SOUND_EXAMPLES", "150"))


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # tiny models: a thread pool costs more than the work
    yield Harness(tmp_path_factory.mktemp("sound"))
    torch.set_num_threads(threads)


def _show(res) -> str:
    return "\n".join(f"{kind}: {detail}" for kind, detail in res.disagreements) + "\n" + res.program


@settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
@given(case=cases(layer_names, extra_settings=1))
def test_check_and_run_agree(harness, case):
    res = harness.run(case)
    note(res.program)
    assert not res.disagreements, _show(res)


# ---------------------------------------------------------------- reproducers

MLP = 'model m = factory("sound_factory:make", family = "mlp", sizes = "{sizes}", bias = "{bias}")'
DATA = 'data train = factory("sound_factory:data", family = "{family}", sizes = "{sizes}", n = 16)'


def _program(model: str, knobs: str, steps: str, budget: str, data: str = "") -> str:
    body = "\n".join("    " + s for s in steps.strip().splitlines())
    lines = "\n".join("        " + s for s in budget.strip().splitlines())
    return (f'import "std"\n{model}\n{data}\n{knobs}\npipeline p(m) {{\n{body}\n'
            f"    budget {{\n{lines}\n    }}\n}}\n")


REPRODUCERS = {}
