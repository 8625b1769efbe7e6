#!/usr/bin/env bash
# The main example end to end: set up .venv, train the digits MLP, then
# check (prove) -> run (apply and measure) -> search (Budgeted-KMR).
# Results land in out/digits and out/digits-search.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

KMR=.venv/bin/kmr
PROGRAM=examples/digits/digits.kmr
step() { printf '\n==> %s\n' "$*"; }

step "train the baseline model (examples/digits/mlp.safetensors)"
.venv/bin/python examples/digits/train_baseline.py

step "kmr check $PROGRAM"
"$KMR" check "$PROGRAM"

step "kmr run $PROGRAM --out out/digits"
"$KMR" run "$PROGRAM" --out out/digits

step "kmr search $PROGRAM --out out/digits-search"
"$KMR" search "$PROGRAM" --out out/digits-search

step "done: see out/digits and out/digits-search"
