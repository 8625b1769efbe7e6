"""The artifact byte layout (pure arithmetic) and the runtime's import layering."""

import subprocess
import sys
from pathlib import Path

import pytest

from kmr_dsl import artifact_layout as layout
from kmr_dsl import artifact_recipe

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("numel,rows,bits,nnz,expected", [
    (1000, 10, 32, 1000, 4000),                 # dense fp32
    (1000, 10, 16, 1000, 2000),                 # dense bf16
    (1000, 10, 8, 1000, 1000 + 40),             # int8 + fp32 scales
    (1001, 11, 4, 1001, 501 + 44),              # int4 packed, odd count rounds up
    (1001, 11, 2, 1001, 251 + 44),              # int2 packed
    (1000, 10, 32, 100, 125 + 400),             # sparse fp32: bitmap + values
    (1000, 10, 8, 500, 125 + 500 + 40),         # sparse int8 beats dense (1040)
    (1000, 10, 4, 900, 500 + 40),               # dense int4 (540) beats sparse (125+450+40)
    (64, 4, 32, 0, 8),                          # all zero: just the bitmap
])
def test_tensor_bytes(numel, rows, bits, nnz, expected):
    assert layout.tensor_bytes(numel, rows, bits, nnz) == expected


def test_data_sparse_only_when_strictly_smaller():
    # dense 4*8 = 32; sparse 1 + 4*nnz: equal at nnz = 7.75, never equal; check the boundary
    assert layout.data_sparse(8, 1, 32, 7)
    assert not layout.data_sparse(8, 1, 32, 8)
    assert layout.tensor_bytes(8, 1, 32, 7) == 29


@pytest.mark.parametrize("name,dtype,shape", [
    ("fc.weight", "F32", (3, 5)), ("a.b.weight.values", "BF16", (17,)), ("x", "U8", (1000,)),
    ('odd"name\\', "I8", (2, 3, 4, 1)), ("e.weight", "F16", ()),
])
def test_entry_chars_is_the_header_safetensors_writes(name, dtype, shape):
    from safetensors.numpy import save
    import numpy as np

    types = {"F32": np.float32, "F16": np.float16, "I8": np.int8, "U8": np.uint8}
    if dtype == "BF16":
        pytest.importorskip("torch")
        import torch
        from safetensors.torch import save as save_torch
        raw = save_torch({name: torch.zeros(shape, dtype=torch.bfloat16)})
    else:
        raw = save({name: np.zeros(shape, dtype=types[dtype])})
    n = int.from_bytes(raw[:8], "little")
    header = raw[8:8 + n].rstrip(b" ")
    size = len(raw) - 8 - n
    # one entry: offsets 0 and `size`; entry_chars writes both at `digits` digits
    digits = len(str(size))
    assert len(header) == 2 + layout.entry_chars(name, dtype, shape, digits) - 1 - (digits - 1)


def test_the_writer_counts_the_header_entries():
    # 8 fp32 weights, 7 non-zero: the sparse data is smaller (29 B < 32 B), but its two
    # entries cost more than the dense form's one: dense
    assert layout.data_sparse(8, 1, 32, 7)
    assert not layout.is_sparse("fc.weight", (2, 4), 32, 7, 3)
    assert layout.form_bytes("fc.weight", (2, 4), 32, 7, True, 3) > layout.form_bytes("fc.weight", (2, 4), 32, 7, False, 3)
    # a 64x64 layer at 10% density: sparse by far
    assert layout.is_sparse("fc.weight", (64, 64), 32, 410, 5)
    # the boundary moves with the entries' cost: longer names, more offset digits
    def threshold(name, digits, bits=32):
        return max(nnz for nnz in range(4097) if layout.is_sparse(name, (64, 64), bits, nnz, digits))
    assert threshold("a", 9) < threshold("a", 2) < 4096 * 31 // 32
    assert threshold("model.layers.0.self_attn.q_proj.first.weight", 5) < threshold("q", 5)
    for bits in (8, 4, 2):
        t = threshold("fc.weight", 5, bits)
        assert layout.form_bytes("fc.weight", (64, 64), bits, t, True, 5) < \
            layout.form_bytes("fc.weight", (64, 64), bits, t, False, 5) <= \
            layout.form_bytes("fc.weight", (64, 64), bits, t + 1, True, 5)


def test_form_entries_name_dtype_and_shape():
    assert layout.form_entries("w", (4, 6), 32, 5, False) == [("w", "F32", (4, 6))]
    assert layout.form_entries("w", (4, 6), 16, 5, True, "BF16") == [("w.bitmap", "U8", (3,)), ("w.values", "BF16", (5,))]
    assert layout.form_entries("w", (4, 6), 8, 5, False) == [("w.q", "I8", (4, 6))]
    assert layout.form_entries("w", (4, 6), 4, 5, False) == [("w.q", "U8", (12,))]
    assert layout.form_entries("w", (4, 6), 2, 5, True) == [("w.bitmap", "U8", (3,)), ("w.values", "U8", (2,))]
    assert layout.offset_digits(0) == 1 and layout.offset_digits(99_999) == 5 and layout.offset_digits(100_000) == 6


def test_bad_arguments():
    with pytest.raises(ValueError):
        layout.tensor_bytes(10, 1, 3, 10)
    with pytest.raises(ValueError):
        layout.tensor_bytes(10, 1, 8, 11)


def test_entry_names():
    assert layout.weight_entry_names("fc.weight", 32, False) == ["fc.weight"]
    assert layout.weight_entry_names("fc.weight", 8, False) == ["fc.weight.q", "fc.weight.scale"]
    assert layout.weight_entry_names("fc.weight", 16, True) == ["fc.weight.bitmap", "fc.weight.values"]
    assert layout.weight_entry_names("fc.weight", 4, True) == ["fc.weight.bitmap", "fc.weight.values", "fc.weight.scale"]


def _imported(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, cwd=ROOT, check=True, env={"PYTHONPATH": str(ROOT)})
    return set(out.stdout.split())


def test_layout_and_runtime_package_do_not_import_torch():
    mods = _imported("import kmr_dsl.artifact_layout, kmr_dsl.artifact_recipe, kmr_dsl.runtime, kmr_dsl.rules, "
                     "kmr_dsl.runtime.context")
    assert "torch" not in mods


@pytest.mark.parametrize("bias", [True, False])
def test_every_form_of_a_linear_describes_at_least_the_lower_bound(bias):
    """The `size` model's lower end counts a Linear's recipe config as at least the plain
    `{"bias","in","out","type":"Linear"}` (artifact_recipe.config_chars_low): no form of it
    that codec.describe writes is shorter."""
    import torch
    import torch.nn as nn

    from kmr_dsl.runtime import int8_kernels as k8

    from kmr_dsl.runtime import codec, layers as kl, modules as km

    torch.manual_seed(0)

    def leaf():
        return nn.Linear(12, 7, bias=bias)

    lin = leaf()
    q = torch.randint(-100, 100, (7, 12), dtype=torch.int8)
    scale = torch.full((7,), 0.01)
    forms = {
        "Linear": lin,
        "HalfLinear": km.to_half(leaf()),
        "QuantLinear 8": km.quantized_leaf(leaf(), lin.weight.detach(), 8),
        "QuantLinear 2, groups": km.quantized_leaf(leaf(), lin.weight.detach(), 2, group_size=4),
        "DynamicLinear": k8.dynamic_linear(q, scale, lin.bias.detach() if bias else None),
        "StaticLinear": k8.static_int8(leaf(), q, scale, lin.bias.detach() if bias else None, (0.1, 0), (0.1, 0)),
        "FactorizedLinear": km.FactorizedLinear(nn.Linear(12, 1, bias=False), nn.Linear(1, 7, bias=bias)),
        "LoRALinear": km.LoRALinear(leaf(), 1, 1.0),
    }
    masked = leaf()
    kl.set_mask(masked, masked.weight.detach() != 0)
    forms["masked Linear"] = masked
    low = artifact_recipe.config_chars_low("Linear", bias, 2, 1)
    assert low == artifact_recipe._config_chars({"bias": bias, "in": 12, "out": 7, "type": "Linear"})
    for name, module in forms.items():
        assert artifact_recipe._config_chars(codec.describe(module)) >= low, name
    # other kinds: at least `{"type":"keep"}`, the shortest config of all
    assert artifact_recipe.config_chars_low("Conv2d", True, 3, 3) == artifact_recipe.MIN_CONFIG_CHARS
    assert artifact_recipe._config_chars(codec.describe(nn.Identity())) == artifact_recipe.MIN_CONFIG_CHARS
