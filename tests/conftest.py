"""Hypothesis profiles for the whole suite.

The suite runs the `deterministic` profile by default: every property test draws the
same examples on every run, so CI does not pass or fail by luck. To explore new
examples, run `pytest --hypothesis-profile=explore` (random draws, examples that fail
kept in the local .hypothesis database); a failure found that way becomes a plain
regression test.
"""

from hypothesis import settings

settings.register_profile("deterministic", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("deterministic")
