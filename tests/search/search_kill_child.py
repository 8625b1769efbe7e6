"""A slow search on the fakes, for test_search_journal to kill with SIGKILL.

Usage: python search_kill_child.py JOURNAL_PATH
"""

import sys

from search_fakes import FakeProblem, FakeSession, make_space, run

from kmr_dsl.search.budgeted import Budgeted

if __name__ == "__main__":
    witness = {"sparsity": 0.95, "bits": 2, "ratio": 0.1}
    run(Budgeted(seed=0), FakeProblem(make_space(), witness=witness), FakeSession(delay=0.25), sys.argv[1])
