"""examples/digits/laws.kmr: the example's laws hold (`kmr test`, properties only)."""

import shutil
from pathlib import Path

from kmr_dsl.cli import main
from kmr_dsl.runtime import user_code

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits"


def test_digits_laws_hold(tmp_path, capsys):
    folder = tmp_path / "digits"
    folder.mkdir()
    for name in ("digits.kmr", "laws.kmr", "digits_model.py"):
        shutil.copy(DIGITS / name, folder / name)
    # the laws are about structure, not accuracy: two epochs of the baseline suffice
    script = user_code.import_module_from("train_baseline", DIGITS)
    assert script.main(["--out", str(folder / "mlp.safetensors"), "--epochs", "2"]) == 0
    capsys.readouterr()
    code = main(["test", str(folder / "laws.kmr"), "--no-contracts", "--examples", "4"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    for name in ("smaller", "sparse", "narrower"):
        assert f"property {name} passed" in out
