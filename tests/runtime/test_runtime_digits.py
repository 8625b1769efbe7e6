"""The digits example: the baseline trains deterministically to >= 0.95 on the test split
of KMR's own sklearn loader, and loads through factory(..., weights = ...)."""

from pathlib import Path

import torch

from kmr_dsl.facts import LoaderSpec
from kmr_dsl.runtime import introspect, loaders, meters, user_code

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits"


def test_digits_baseline_trains_and_loads(tmp_path):
    script = user_code.import_module_from("train_baseline", DIGITS)
    out = tmp_path / "mlp.safetensors"
    assert script.main(["--out", str(out)]) == 0
    spec = LoaderSpec("factory", ("digits_model:make_mlp",), (("weights", str(out)),), str(DIGITS))
    model = loaders.load_model(spec)
    test = loaders.load_data(LoaderSpec("sklearn", ("digits",), (("split", "test"),)))
    accuracy = meters.accuracy(model, test)
    assert accuracy >= 0.95
    facts = introspect.model_facts(spec)
    assert facts.input_shape == (1, 64) and [l.out_features for l in facts.layers] == [128, 64, 10]
    a, _ = script.train(epochs=1)
    b, _ = script.train(epochs=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
