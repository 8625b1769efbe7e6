"""Hypothesis profiles for the whole suite.

The suite runs the `deterministic` profile by default: every property test draws the
same examples on every run, so CI does not pass or fail by luck. To explore new
examples, run `pytest --hypothesis-profile=explore` (random draws, examples that fail
kept in the local .hypothesis database); a failure found that way becomes a plain
regression test.

Under pytest-xdist (`bash scripts/test.sh` runs one worker per CPU) each worker runs
torch on one thread unless OMP_NUM_THREADS says otherwise: the models here are tiny,
and N workers each starting a pool as large as the machine only fight over its cores.
"""

import os
import sys

from hypothesis import settings

settings.register_profile("deterministic", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("deterministic")


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"        # read by torch when it is first imported
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)
