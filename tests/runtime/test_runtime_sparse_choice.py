"""The writer's dense-or-sparse choice counts the header entries (artifact_layout.is_sparse).

The `size` meter's upper end (verify/cost.py) takes the smaller of a weight's two forms,
data and entries, at any density: that holds only if a file never stores a form larger
than the other would have been. Files written with the older, data-only choice load all
the same (the reader takes whichever form it finds).
"""

import struct

import pytest
import torch
import torch.nn as nn

from kmr_dsl import artifact_layout as layout
from kmr_dsl.rules import quantize
from kmr_dsl.runtime import artifact, codec
from kmr_dsl.runtime import layers as kl


def net(zeros: int, bits: int) -> nn.Module:
    """One 64x32 Linear (no bias) with `zeros` of its weights set to zero, stored at `bits`."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64, bias=False))
    with torch.no_grad():
        flat = model[0].weight.view(-1)
        flat[torch.randperm(flat.numel())[:zeros]] = 0
        # no weight rounds to a zero code at 4 or 2 bits: the density is what we set
        flat[flat != 0] = torch.sign(flat[flat != 0]) * (0.5 + flat[flat != 0].abs())
    if bits == 16:
        quantize.apply(model, kl.select_layers(model, ("Linear",)), bits=16)
    elif bits < 16:
        quantize.apply(model, kl.select_layers(model, ("Linear",)), bits=bits, scheme="weight_only")
    return model


def unpadded(raw: bytes) -> int:
    """The file's bytes without the header's padding (it moves with the header's length)."""
    n = struct.unpack("<Q", raw[:8])[0]
    return 8 + len(raw[8:8 + n].rstrip(b" ")) + len(raw) - 8 - n


def write(model, monkeypatch, choice=None) -> bytes:
    from safetensors.torch import save

    with monkeypatch.context() as m:
        if choice is not None:
            m.setattr(layout, "is_sparse", choice)
        tensors, metadata = artifact.encode(model, {"base": None})
    return save(tensors, metadata=metadata)


def _numel(shape):
    return int(torch.Size(shape).numel())


def old_choice(name, shape, bits, nnz, digits, dtype="F32"):
    """The writer's choice before the header counted: the data alone."""
    return layout.data_sparse(_numel(shape), 1, bits, nnz)


@pytest.mark.parametrize("bits", [32, 16, 8, 4, 2])
def test_the_file_is_never_larger_than_either_form(bits, monkeypatch):
    numel = 64 * 32
    # the data-only threshold is at nnz = numel * (1 - 1/bits): sweep the densities around it
    edge = numel - numel // bits
    for zeros in sorted({0, numel // bits - 40, numel // bits - 8, numel // bits - 2, numel // bits,
                         numel // bits + 2, numel // bits + 8, numel // bits + 40, numel // 2}):
        model = net(zeros, bits)
        chosen = write(model, monkeypatch)
        dense = write(model, monkeypatch, lambda *a, **k: False)
        sparse = write(model, monkeypatch, lambda *a, **k: True)
        assert unpadded(chosen) <= min(unpadded(dense), unpadded(sparse)), (bits, zeros)
        assert len(chosen) in (len(dense), len(sparse))
    # between the two rules the old one stored sparse where the new one stores dense
    nnz = edge - 4
    assert layout.data_sparse(numel, 64, bits, nnz)
    assert not layout.is_sparse("0.weight", (64, 32), bits, nnz, 4, "BF16" if bits == 16 else "F32")


@pytest.mark.parametrize("bits", [32, 16, 8, 4])
def test_a_file_written_with_the_data_only_choice_still_loads(bits, monkeypatch, tmp_path):
    numel = 64 * 32
    zeros = numel // bits + 2           # sparse by its data, dense by its file bytes
    model = net(zeros, bits)
    numel_, rows, b, nnz = codec.weight_record(model[0])
    assert layout.data_sparse(numel_, rows, b, nnz)
    old = write(model, monkeypatch, old_choice)
    new = write(model, monkeypatch)
    assert len(old) > len(new)
    path = tmp_path / "old.safetensors"
    path.write_bytes(old)
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as handle:
        assert "0.weight.bitmap" in handle.keys()
    loaded = artifact.load(path, base=nn.Sequential(nn.Linear(32, 64, bias=False)))
    assert torch.equal(kl.leaf_weight(loaded[0]), kl.leaf_weight(model[0]))
    x = torch.randn(3, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
