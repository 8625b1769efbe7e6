"""The artifact byte layout (pure arithmetic) and the runtime's import layering."""

import subprocess
import sys
from pathlib import Path

import pytest

from kmr_dsl import artifact_layout as layout

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


def test_sparse_only_when_strictly_smaller():
    # dense 4*8 = 32; sparse 1 + 4*nnz: equal at nnz = 7.75, never equal; check the boundary
    assert layout.is_sparse(8, 1, 32, 7)
    assert not layout.is_sparse(8, 1, 32, 8)
    assert layout.tensor_bytes(8, 1, 32, 7) == 29


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
    mods = _imported("import kmr_dsl.artifact_layout, kmr_dsl.runtime, kmr_dsl.rules, kmr_dsl.runtime.context")
    assert "torch" not in mods
