"""A question-answering head measures accuracy: exact match of the predicted answer
span (start and end logits) on a generated extractive-QA set, like a classifier's top-1
accuracy; `kmr check`'s predictions are unaffected (they equal the run's)."""

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

from kmr_dsl.app import load_checked  # noqa: E402
from kmr_dsl.cli import main  # noqa: E402
from kmr_dsl.diagnostics import KmrError  # noqa: E402
from kmr_dsl.runtime import meters  # noqa: E402
from kmr_dsl.runtime.data import Dataset  # noqa: E402
from kmr_dsl.runtime.session import PipelineSession  # noqa: E402
from kmr_dsl.verify import predict  # noqa: E402

HERE = Path(__file__).resolve().parent

QA = '''import "std"

model qa = factory("hf_models:make_bert_qa")
data spans = factory("hf_models:make_spans")

pipeline p(qa) {
    finetune(data = spans, epochs = 15, lr = 0.01, batch_size = 32)
    prune(amount = 0.5, method = channel) on layers(Linear, name = "*.intermediate.dense")
    budget {
        params <= baseline.params
        macs <= baseline.macs
        accuracy(spans) >= baseline.accuracy(spans)
    }
    report loss(spans), fidelity(spans)
}
'''


def exact_match(model, x, y) -> float:
    """Independent reading: argmax of start_logits and of end_logits, both right."""
    with torch.no_grad():
        out = model(x)
    return float(((out.start_logits.argmax(-1) == y[:, 0]) & (out.end_logits.argmax(-1) == y[:, 1])).float().mean())


def test_question_answering_accuracy_is_exact_match_and_check_agrees(tmp_path, monkeypatch, capsys):
    import hf_models

    shutil.copy(HERE / "hf_models.py", tmp_path / "hf_models.py")
    (tmp_path / "qa.kmr").write_text(QA)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["check", "--format", "json", "qa.kmr"]) == 0
    (pipeline,) = json.loads(capsys.readouterr().out)["files"][0]["pipelines"]
    assert pipeline["verdict"] == "proved", pipeline
    program, diags, _ = load_checked("qa.kmr")
    want = predict(program, "p", {})
    session = PipelineSession(program, "p")
    outcome = session.evaluate({})
    for meter in ("params", "nonzero", "macs"):
        assert outcome.meters[meter] == want[meter]
    x, y = hf_models.make_spans()
    # the baseline (random head) and the result (fine-tuned, then pruned) read alike
    assert outcome.baseline["accuracy(spans)"] == pytest.approx(exact_match(hf_models.make_bert_qa(), x, y))
    result = session.apply({})
    assert outcome.meters["accuracy(spans)"] == pytest.approx(exact_match(result, x, y))
    # the generated task is learnable: fine-tuning on the span loss finds the answers
    assert outcome.meters["accuracy(spans)"] >= 0.8 > outcome.baseline["accuracy(spans)"]
    assert outcome.feasible
    data = Dataset(x, y, name="spans")
    assert 0.0 < meters.loss(result, data) < meters.loss(hf_models.make_bert_qa(), data)


def test_span_meters_on_a_model_without_spans_are_a_diagnostic():
    import hf_models

    data = Dataset(*hf_models.make_spans(16), name="spans")
    assert data.task == "span"
    with pytest.raises(KmrError) as info:
        meters.accuracy(hf_models.make_bert_classifier(), data)
    d = info.value.diagnostic
    assert d.code == "KMR408" and "spans" in d.message and "question-answering" in d.hint


def test_fidelity_of_spans_is_agreement_of_both_positions():
    import hf_models

    data = Dataset(*hf_models.make_spans(32), name="spans")
    a, b = hf_models.make_bert_qa(seed=0), hf_models.make_bert_qa(seed=1)
    assert meters.fidelity(a, a, data) == 1.0
    x = data.inputs
    with torch.no_grad():
        oa, ob = a(x), b(x)
    same = ((oa.start_logits.argmax(-1) == ob.start_logits.argmax(-1))
            & (oa.end_logits.argmax(-1) == ob.end_logits.argmax(-1))).float().mean()
    assert meters.fidelity(b, a, data) == pytest.approx(float(same))
