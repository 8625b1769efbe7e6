"""KMR 0.2 training: optimizers against torch.optim's own updates, the learning-rate
schedules, `distill(loss = mse)`, `prune_gradually` (GMP: its schedule, its end state
equal to `prune`'s, its masks surviving later training), and selectors with `exclude`
and `re:` patterns on the real module tree."""

import copy

import pytest
import torch
import torch.nn as nn

from kmr_dsl.diagnostics import KmrError
from kmr_dsl.rules import distill, finetune, prune, prune_gradually
from kmr_dsl.core.step import round_half_up
from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime import training


def _params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(5, 3, generator=gen).requires_grad_(), torch.randn(4, generator=gen).requires_grad_()]


def _descend(opt, params, steps=5):
    for k in range(steps):
        opt.zero_grad()
        loss = sum(((p * (k + 1)) ** 2).sum() + p.sum() for p in params)
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("name,torch_name,kwargs", [
    ("sgd", "SGD", {"momentum": 0.9, "weight_decay": 0.01}),
    ("sgd", "SGD", {"momentum": 0.0, "weight_decay": 0.0}),
    ("adam", "Adam", {"weight_decay": 0.01}),
    ("adamw", "AdamW", {"weight_decay": 0.05}),
])
def test_optimizers_match_torch_optim(name, torch_name, kwargs):
    ours_p, ref_p = _params(), _params()
    ours = training.make_optimizer(name, ours_p, 0.01, kwargs.get("momentum", 0.9), kwargs.get("weight_decay", 0.0))
    ref_kwargs = dict(kwargs) if name == "sgd" else {"weight_decay": kwargs["weight_decay"], "betas": (0.9, 0.999)}
    ref = getattr(torch.optim, torch_name)(ref_p, lr=0.01, **ref_kwargs)
    for a, b in zip(_descend(ours, ours_p), _descend(ref, ref_p)):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()


def test_schedules():
    assert training.scheduled_lr(0.1, "constant", 7, 10) == 0.1
    assert training.scheduled_lr(0.1, "cosine", 0, 10) == pytest.approx(0.1)
    assert training.scheduled_lr(0.1, "cosine", 5, 10) == pytest.approx(0.05)
    assert training.scheduled_lr(0.1, "cosine", 9, 10) < 0.003
    assert [round(training.scheduled_lr(1.0, "step", t, 9), 6) for t in range(9)] == [1, 1, 1, .1, .1, .1, .01, .01, .01]


def test_finetune_options_change_training_and_are_deterministic(mlp, data, run):
    a = finetune.apply(copy.deepcopy(mlp), [], data, epochs=2, lr=0.01, optimizer="sgd", schedule="cosine")
    b = finetune.apply(copy.deepcopy(mlp), [], data, epochs=2, lr=0.01, optimizer="sgd", schedule="cosine")
    c = finetune.apply(copy.deepcopy(mlp), [], data, epochs=2, lr=0.01)
    wa, wb, wc = (dict(m.named_parameters())["0.weight"] for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    with pytest.raises(KmrError):
        finetune.apply(copy.deepcopy(mlp), [], data, optimizer="rmsprop")


def test_distill_mse_differs_from_kl(mlp, data, run):
    student = copy.deepcopy(mlp)
    with torch.no_grad():
        for p in student.parameters():
            p.mul_(0.5)
    a = distill.apply(copy.deepcopy(student), [], data, loss="mse", epochs=1)
    b = distill.apply(copy.deepcopy(student), [], data, loss="kl", epochs=1)
    assert not torch.equal(dict(a.named_parameters())["0.weight"], dict(b.named_parameters())["0.weight"])
    with pytest.raises(KmrError):
        distill.apply(copy.deepcopy(student), [], data, loss="l1")


def test_gradual_schedule_curves():
    cubic = [prune_gradually.sparsity_at(e, 5, 0.05, 0.88, "cubic") for e in range(5)]
    linear = [prune_gradually.sparsity_at(e, 5, 0.05, 0.88, "linear") for e in range(5)]
    assert cubic[0] == pytest.approx(0.05) and cubic[-1] == 0.88 and linear[-1] == 0.88
    assert all(x < y for x, y in zip(cubic, cubic[1:]))
    assert all(c >= lin for c, lin in zip(cubic, linear))     # cubic prunes early
    assert prune_gradually.sparsity_at(0, 1, 0.0, 0.5, "cubic") == 0.5


def _linear_layers(model):
    return [(n, m) for n, m in kl.logical_layers(model) if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("method", ["magnitude", "global"])
def test_prune_gradually_ends_where_prune_would(mlp, data, run, method):
    model = copy.deepcopy(mlp)
    layers = _linear_layers(model)
    n0 = {n: int((m.weight != 0).sum()) for n, m in layers}
    out = prune_gradually.apply(model, layers, final=0.75, data=data, initial=0.1, epochs=3, method=method)
    kept = {n: int((m.weight != 0).sum()) for n, m in _linear_layers(out)}
    if method == "magnitude":
        assert kept == {n: round_half_up(c * 0.25) for n, c in n0.items()}
    else:
        assert sum(kept.values()) == round_half_up(sum(n0.values()) * 0.25)
    # the masks survive training later in the pipeline
    again = finetune.apply(out, [], data, epochs=2, lr=0.01)
    assert {n: int((m.weight != 0).sum()) for n, m in _linear_layers(again)} == kept


def test_prune_gradually_refuses_final_below_initial(mlp, data, run):
    with pytest.raises(KmrError) as e:
        prune_gradually.apply(copy.deepcopy(mlp), _linear_layers(mlp), final=0.2, data=data, initial=0.5)
    assert "initial <= final" in e.value.diagnostic.message


def test_prune_gradually_matches_prune_state_effect(mlp, data, run):
    """The same effect as prune(amount = final): equal nonzero counts per layer."""
    a_model = copy.deepcopy(mlp)
    a = prune_gradually.apply(a_model, _linear_layers(a_model), final=0.5, data=data, epochs=2)
    b_model = copy.deepcopy(mlp)
    b = prune.apply(b_model, _linear_layers(b_model), amount=0.5)
    count = lambda m: [int((x.weight != 0).sum()) for _, x in _linear_layers(m)]  # noqa: E731
    assert count(a) == count(b)


def test_select_layers_with_exclude_and_regex(mlp):
    names = [n for n, _ in kl.logical_layers(mlp)]
    assert [n for n, _ in kl.select_layers(mlp, ("Linear",), None, ("4",))] == [n for n in names if n != "4"]
    assert [n for n, _ in kl.select_layers(mlp, ("Linear",), ("re:[02]",), None)] == ["0", "2"]
    assert [n for n, _ in kl.select_layers(mlp, ("Linear",), ("re:[02]", "4"), ("re:0",))] == ["2", "4"]
