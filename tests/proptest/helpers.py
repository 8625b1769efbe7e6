"""Helpers of the property-test tests: loading programs, a program with its own rules."""

from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"


def load(path):
    """The checked program of a file (asserting it is well-formed)."""
    from kmr_dsl.app import load_checked

    program, diags, _ = load_checked(str(path))
    assert program is not None, [d.message for d in diags]
    return program


USER_RULES = '''\
import torch
import torch.nn as nn


def prune_quarter(model, layers):
    """Zero the smallest quarter of each selected layer's weights."""
    for _, layer in layers:
        w = layer.weight.data.view(-1)
        w[w.abs().argsort()[: round(w.numel() * 0.25)]] = 0.0
    return model


def strict_clip(model, layers, limit=1.0):
    if limit > 1.0:
        raise RuntimeError(f"called with limit = {limit} > 1")
    return model


def add_parameter(model, layers):
    model.extra = nn.Parameter(torch.zeros(10))
    return model
'''

USER_KMR = '''\
rule halve()
    accepts Linear
    requires layer.bits >= 16
    effect layer.density = layer.density * 0.5
    impl "user_rules:prune_quarter"

rule quarter()
    accepts Linear
    requires layer.bits >= 16
    effect layer.density = layer.density * 0.75
    impl "user_rules:prune_quarter"

rule clip(limit : float in [0.0, 2.0] = 1.0)
    accepts Linear
    requires limit <= 1.0
    impl "user_rules:strict_clip"

rule clip_unguarded(limit : float in [0.0, 2.0] = 1.0)
    accepts Linear
    impl "user_rules:strict_clip"

rule bloat()
    impl "user_rules:add_parameter"

rule conv1(limit : float in [0.0, 1.0] = 1.0)
    accepts Conv1d
    impl "user_rules:strict_clip"
'''
