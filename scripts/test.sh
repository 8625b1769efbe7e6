#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh) and run the whole test suite. Extra arguments go to
# pytest (e.g. `bash scripts/test.sh -m "not slow"`, or `-n 0` for one process);
# pytest's exit code is ours.
#
# The suite runs on every CPU this process may use (pytest-xdist, at most 8 workers;
# PYTEST_XDIST_AUTO_NUM_WORKERS=N sets the count), one torch thread per worker: the
# tests' models are tiny, and workers each running a pool of threads would only fight
# over the same cores. xdist's own `-n auto` counts physical cores, which is 1 on many
# 2-vCPU machines. `--dist loadfile` keeps each test file on one worker, so a module's
# expensive fixtures (the trained example models) are built once.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
cpus='import os; print(min(8, len(getattr(os, "sched_getaffinity", lambda _: range(os.cpu_count() or 1))(0))))'
export PYTEST_XDIST_AUTO_NUM_WORKERS="${PYTEST_XDIST_AUTO_NUM_WORKERS:-$(.venv/bin/python -c "$cpus")}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest -q -n auto --dist loadfile "$@"
