"""rules/awq: the reference's two searches (scale, then activation-aware clipping), each
judged by the layer's output error on the calibration inputs, checked against direct
computations."""

from __future__ import annotations

import pytest
import torch

from kmr_dsl.rules import awq, quantize
from kmr_dsl.runtime import modules as km
from kmr_dsl.runtime import quant

from test_runtime_calibrated import POST, PostNorm, PreNorm, data, linears, out_error  # noqa: E402


def _outlier_inputs(rows=300, cols=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=gen)
    x[:, 2] *= 30.0          # a few channels carry large activations, as in trained transformers
    x[:, 11] *= 12.0
    return x


def test_the_output_error_through_the_second_moment_is_the_mean_over_rows():
    x = _outlier_inputs()
    d = torch.randn(5, 16, generator=torch.Generator().manual_seed(1))
    direct = float(((x.double() @ d.double().T) ** 2).sum(dim=1).mean())
    assert awq.output_error(d, (x.T @ x) / x.shape[0]) == pytest.approx(direct, rel=1e-5)


def test_the_activation_aware_clip_is_the_brute_force_least_output_error_per_group():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(6, 16, generator=gen)
    w[:, 5] *= 4.0           # weight outliers, so that clipping them pays on some channels
    x = _outlier_inputs()
    gram = quant.group_grams((x.T @ x) / x.shape[0], 8)
    _, chosen = quant.quantize(w, 4, 8, gram=gram)
    _, plain = quant.quantize(w, 4, 8)
    qmax = quant.QMAX[4]
    for r in range(6):
        for g in range(2):
            wg, xg = w[r, 8 * g:8 * g + 8].double(), x[:, 8 * g:8 * g + 8].double()
            amax = float(wg.abs().max())
            # every candidate step the quantizer considers: the side fit, then the clip ratios
            steps = [max(float(wg.max()) / (qmax - 0.5), float(-wg.min()) / (qmax + 0.5))]
            steps += [amax * ratio / qmax for ratio in quant.CLIP_RATIOS]

            def err(step):
                deq = quant.levels(quant.midrise_codes((wg / step).float(), 4), 4).double() * step
                return float(((xg @ (deq - wg)) ** 2).mean())
            best = min(err(step) for step in steps)
            assert err(float(chosen[r, g])) <= best * (1 + 1e-5)
    # the weights' own squared error picks other steps for some groups: the choice is the inputs'
    assert not torch.equal(chosen, plain)


@pytest.mark.parametrize("symmetric", [True, False])
def test_the_weighted_clip_never_loses_to_the_weight_error_clip_on_its_groups(symmetric):
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(32, 16, generator=gen)
    x = _outlier_inputs()
    h = (x.T @ x) / x.shape[0]
    grams = quant.group_grams(h, 8)

    def group_errors(codes):
        deq = quant.dequantize(codes[0], codes[1], 4, 8, zero=None if symmetric else codes[2])
        d = (deq - w).reshape(32, 2, 8)
        return torch.einsum("rnk,nkl,rnl->rn", d, grams, d)
    fn = quant.quantize if symmetric else quant.quantize_affine
    weighted, plain = group_errors(fn(w, 4, 8, gram=grams)), group_errors(fn(w, 4, 8))
    assert bool((weighted <= plain * (1 + 1e-5)).all()) and float(weighted.sum()) < float(plain.sum())


def _layer_errors(model, reference, paths, x) -> float:
    """The summed mean squared output error of each layer on the inputs it reads in the
    float reference model (the error AWQ's searches minimize). A path is (the module whose
    input is captured, the layer): a layer whose scale folded into its norm is compared
    with the norm in front of it, since the fold changed both."""
    seen = {}

    def keep(name):
        def hook(module, args, out):
            seen[name] = args[0]        # returns None: the output is left alone
        return hook
    hooks = [getattr(reference, first).register_forward_hook(keep(first)) for first, _ in paths]
    with torch.no_grad():
        reference(x)
        for h in hooks:
            h.remove()

        def run(m, first, layer):
            y = seen[first]
            return getattr(m, layer)(y if first == layer else getattr(m, first)(y))
        return sum(float(((run(model, *p) - run(reference, *p)) ** 2).mean()) for p in paths)


@pytest.mark.parametrize("symmetric", [True, False])
def test_awq_with_its_clip_beats_awq_without_it_and_round_to_nearest(monkeypatch, symmetric):
    """Each layer's output error on the calibration inputs: AWQ's scales with the
    quantizer's own (weight-error) clip, then with the activation-aware clip, against
    round-to-nearest on the same grid."""
    d = data()
    pre = (("norm", "q"), ("norm", "k"), ("norm2", "up"))
    for model_class, paths in ((PostNorm, [(n, n) for n in POST]), (PreNorm, pre)):
        names = [layer for _, layer in paths]
        reference = model_class()
        errors = {}
        for name in ("rtn", "awq without clip", "awq"):
            model = model_class()
            with monkeypatch.context() as patch:
                if name == "awq without clip":
                    patch.setattr(quant, "group_grams", lambda gram, group_size=0: None)
                if name == "rtn":
                    quantize.apply(model, linears(model, names), bits=4, scheme="weight_only", group_size=8,
                                   symmetric=symmetric)
                else:
                    awq.apply(model, linears(model, names), bits=4, group_size=8, calibration=d,
                              symmetric=symmetric)
            leaves = [getattr(model, n) for n in names]
            leaves = [m.linear if isinstance(m, km.ScaledLinear) else m for m in leaves]
            assert all(isinstance(m, km.QuantLinear) and m.symmetric == symmetric for m in leaves)
            errors[name] = _layer_errors(model, reference, paths, d.inputs)
            if name == "awq":
                errors["model"] = out_error(model, reference, d.inputs)
        assert errors["awq"] < errors["awq without clip"] < errors["rtn"], (model_class.__name__, errors)
