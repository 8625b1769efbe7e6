"""Loaders: models and data from LoaderSpecs, and their error codes."""

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from runtime_helpers import HERE, spec
from kmr_dsl.diagnostics import KmrError
from kmr_dsl.facts import LoaderSpec
from kmr_dsl.runtime import loaders, quant, user_code
from kmr_dsl.runtime.data import Dataset


def code_of(excinfo) -> str:
    return excinfo.value.diagnostic.code


# ---------------------------------------------------------------- quant helpers

@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("numel", [1, 7, 64, 101])
def test_pack_roundtrip(bits, numel):
    # every code of the width: [-8, 7] at 4 bits, [-2, 1] at 2, [-128, 127] at 8
    q = torch.randint(quant.QMIN[bits], quant.QMAX[bits] + 1, (numel,), dtype=torch.int8)
    packed = quant.pack(q, bits)
    assert packed.numel() == -(-numel * bits // 8)
    assert torch.equal(quant.unpack(packed, bits, numel), q)


def test_bitmap_roundtrip():
    mask = torch.rand(77) > 0.5
    bm = quant.bitmap(mask)
    assert bm.numel() == 10 and torch.equal(quant.unbitmap(bm, 77), mask)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantize_keeps_zero_pattern(bits):
    w = torch.randn(6, 20)
    w[w.abs() < 0.5] = 0
    w[0, 0] = 1e-6           # tiny non-zero: must not round to zero
    q, scale = quant.quantize(w, bits)
    assert torch.equal(q != 0, w != 0)
    assert scale.dtype == torch.float32 and scale.shape == (6,)
    err = (quant.dequantize(q, scale, bits) - w).abs().max()
    assert err <= scale.max()   # at most one step: the forced +-1 of tiny weights


@pytest.mark.parametrize("bits", [2, 4])
def test_low_bits_keep_small_weights_within_half_a_step_and_clip_outliers(bits):
    # heavy tails, as in pretrained transformers: a few outliers per row set the largest
    # magnitude; on the usual grid, with the +-1 rule that keeps density exact, most
    # weights would be pushed a whole step away
    torch.manual_seed(0)
    w = torch.randn(64, 256) * 0.02
    w[:, :3] = torch.randn(64, 3) * 0.5
    w[w.abs() < 0.004] = 0                                 # some pruned weights
    q, scale = quant.quantize(w, bits)
    qmax = quant.QMAX[bits]
    assert torch.equal(q != 0, w != 0)                     # density exact
    assert torch.all((q >= quant.QMIN[bits]) & (q <= qmax))
    back = quant.dequantize(q, scale, bits)
    assert torch.all(back[w == 0] == 0)
    # not clipped: within the last level of the weight's side
    inside = (w <= (qmax - 0.5) * scale[:, None]) & (w >= -(qmax + 0.5) * scale[:, None])
    err = (back - w).abs()
    assert torch.all(err[inside] <= 0.5 * scale[:, None].expand_as(w)[inside] * (1 + 1e-5))
    # against the usual grid at the largest magnitude with the +-1 rule
    usual = w.abs().amax(dim=1) / qmax
    q_usual = torch.round(w / usual[:, None]).clamp(-qmax, qmax)
    q_usual = torch.where((w != 0) & (q_usual == 0), torch.sign(w), q_usual)
    ours = ((back - w) ** 2).sum()
    theirs = ((q_usual * usual[:, None] - w) ** 2).sum()
    assert ours < 0.2 * theirs


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantizing_a_quantized_row_again_changes_nothing(bits):
    w = torch.randn(8, 40)
    q, scale = quant.quantize(w, bits)
    q2, scale2 = quant.quantize(quant.dequantize(q, scale, bits), bits)
    assert torch.equal(q2, q) and torch.allclose(scale2, scale)


def test_midrise_levels():
    q = torch.tensor([-8, -7, -1, 0, 1, 3, 7], dtype=torch.int8)
    assert quant.levels(q, 4).tolist() == [-7.5, -6.5, -0.5, 0.0, 0.5, 2.5, 6.5]
    assert quant.levels(q, 8).tolist() == [-8.0, -7.0, -1.0, 0.0, 1.0, 3.0, 7.0]


@pytest.mark.parametrize("bits", [2, 4])
def test_low_bits_use_every_code_of_the_width(bits):
    # the reference GPTQ / compressed-tensors grid spends all 2**bits codes ([-8, 7] at 4
    # bits); so does KMR's: 15 non-zero midrise levels and an exact 0 at 4 bits
    qmax, qmin = quant.QMAX[bits], quant.QMIN[bits]
    x = torch.tensor([-99.0, -qmax - 0.2, -0.3, 0.0, 0.3, qmax - 0.1, 99.0])
    assert quant.midrise_codes(x, bits).tolist() == [qmin, qmin, -1, 0, 1, qmax, qmax]
    # a row on the grid (every code once, step 0.1) is given back exactly
    codes = torch.arange(qmin, qmax + 1, dtype=torch.int8)
    w = (quant.levels(codes, bits) * 0.1).reshape(1, -1)
    q, scale = quant.quantize(w, bits)
    assert torch.equal(q[0], codes) and torch.allclose(scale, torch.tensor([0.1]))
    assert torch.equal(quant.unpack(quant.pack(q, bits), bits, q.numel()), codes)
    # unclipped (GPTQ's scales): the largest magnitude is qmax steps, between the last
    # two levels of its side, as it is 7.5 steps between codes 7 and 8 on the reference grid
    _, scale = quant.quantize(torch.tensor([[-1.0, 0.5], [0.25, 2.0]]), bits, clip=False)
    assert torch.allclose(scale, torch.tensor([1.0, 2.0]) / qmax)


@pytest.mark.parametrize("dim,bits", [(384, 4), (7, 4), (10, 2), (6, 2), (33, 8)])
def test_quantized_embedding_looks_up_packed_rows(dim, bits):
    from kmr_dsl.runtime import modules as km

    emb = torch.nn.Embedding(100, dim)
    layer = km.quantized_leaf(emb, emb.weight.detach(), bits)
    x = torch.randint(0, 100, (3, 5))
    assert torch.equal(layer(x), layer.dequantized()[x])


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("group_size", [0, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("dim", [24, 7])
def test_quantized_embedding_lookup_equals_the_dequantized_table(bits, group_size, symmetric, dim):
    # every storage form, rows on and off byte boundaries, a strided (expanded) index
    # tensor as BERT passes its token types, and an empty lookup
    from kmr_dsl.runtime import modules as km

    emb = torch.nn.Embedding(50, dim)
    layer = km.quantized_leaf(emb, emb.weight.detach(), bits, group_size=group_size, symmetric=symmetric)
    table = layer.dequantized()
    for x in (torch.randint(0, 50, (4, 9)), torch.tensor([3, 49, 0, 3]), torch.randint(0, 50, (1, 6)).expand(3, 6),
              torch.zeros(2, 0, dtype=torch.long), torch.randint(0, 50, (5,), dtype=torch.int32)):
        out = layer(x)
        assert out.dtype == torch.float32 and out.shape == (*x.shape, dim)
        assert torch.equal(out, table[x.long()])


def test_quantized_embedding_refuses_indices_out_of_range_like_torch():
    from kmr_dsl.runtime import modules as km

    emb = torch.nn.Embedding(10, 8)
    layer = km.quantized_leaf(emb, emb.weight.detach(), 8)
    for bad in (torch.tensor([10]), torch.tensor([-1])):
        with pytest.raises(IndexError):
            emb(bad)
        with pytest.raises(IndexError):
            layer(bad)


# ---------------------------------------------------------------- models

def test_factory_with_weights(tmp_path):
    model = loaders.load_model(spec())
    path = tmp_path / "w.safetensors"
    with torch.no_grad():
        model[0].weight.fill_(0.25)
    save_file(model.state_dict(), str(path))
    loaded = loaders.load_model(LoaderSpec("factory", ("toy_models:make_mlp",), (("weights", str(path)),), str(HERE)))
    assert torch.all(loaded[0].weight == 0.25)
    assert not loaded.training and all(p.requires_grad for p in loaded.parameters())


def test_factory_passes_kwargs():
    model = loaders.load_model(spec(seed=3))
    assert torch.equal(model[0].weight, user_code.import_ref("toy_models:make_mlp", HERE)(seed=3)[0].weight)


def test_factory_errors(tmp_path):
    with pytest.raises(KmrError) as e:
        loaders.load_model(LoaderSpec("factory", ("no_such_module:f",), (), str(tmp_path)))
    assert code_of(e) == "KMR401"
    with pytest.raises(KmrError) as e:
        loaders.load_model(LoaderSpec("factory", ("toy_models:nope",), (), str(HERE)))
    assert code_of(e) == "KMR402"
    with pytest.raises(KmrError) as e:
        loaders.load_model(spec(weights="missing.safetensors"))
    assert code_of(e) == "KMR401"
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(KmrError) as e:
        loaders.load_model(spec(weights=str(tmp_path / "junk.safetensors")))
    assert code_of(e) == "KMR402"
    other = loaders.load_model(spec("make_mlp", sizes=(16, 8, 10)))
    save_file(other.state_dict(), str(tmp_path / "other.safetensors"))
    with pytest.raises(KmrError) as e:
        loaders.load_model(spec(weights=str(tmp_path / "other.safetensors")))
    assert code_of(e) == "KMR404"
    assert e.value.diagnostic.hint


def test_local_module_shadows_same_name(tmp_path):
    (tmp_path / "toy_models.py").write_text(
        "import torch.nn as nn\ndef make_mlp():\n    return nn.Linear(3, 2)\n")
    local = loaders.load_model(LoaderSpec("factory", ("toy_models:make_mlp",), (), str(tmp_path)))
    assert isinstance(local, nn.Linear)
    again = loaders.load_model(spec())
    assert isinstance(again, nn.Sequential)


def test_torch_module_refuses_pickle_without_trust(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(loaders.load_model(spec()), str(path))
    with pytest.raises(KmrError) as e:
        loaders.load_model(LoaderSpec("torch_module", ("whole.pt",), (), str(tmp_path)))
    assert code_of(e) == "KMR217" and "trust" in e.value.diagnostic.hint
    trusted = loaders.load_model(LoaderSpec("torch_module", ("whole.pt",), (), str(tmp_path)), trust=True)
    assert isinstance(trusted, nn.Sequential)
    by_kwarg = loaders.load_model(LoaderSpec("torch_module", ("whole.pt",), (("trust", True),), str(tmp_path)))
    assert isinstance(by_kwarg, nn.Sequential)


def test_torch_module_errors(tmp_path):
    with pytest.raises(KmrError) as e:
        loaders.load_model(LoaderSpec("torch_module", ("absent.pt",), (), str(tmp_path)))
    assert code_of(e) == "KMR401"
    torch.save(loaders.load_model(spec()).state_dict(), str(tmp_path / "sd.pt"))
    with pytest.raises(KmrError) as e:
        loaders.load_model(LoaderSpec("torch_module", ("sd.pt",), (), str(tmp_path)))
    assert code_of(e) == "KMR402" and "factory" in e.value.diagnostic.hint
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(KmrError) as e:
        loaders.load_model(LoaderSpec("torch_module", ("text.pt",), (), str(tmp_path)))
    assert code_of(e) == "KMR402"


def test_hf_errors(tmp_path):
    with pytest.raises(KmrError) as e:
        loaders.load_model(LoaderSpec("hf", ("no_such_folder_or_package",), (), str(tmp_path)))
    assert code_of(e) == "KMR401"
    (tmp_path / "empty").mkdir()
    with pytest.raises(KmrError) as e:
        loaders.load_model(LoaderSpec("hf", ("empty",), (), str(tmp_path)))
    assert code_of(e) == "KMR402"


def test_hf_without_transformers(tmp_path, monkeypatch):
    import builtins
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "transformers":
            raise ImportError("No module named 'transformers'")
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(KmrError) as e:
        loaders.load_model(LoaderSpec("hf", ("m",), (), str(tmp_path)))
    assert code_of(e) == "KMR506" and "pip install" in e.value.diagnostic.hint


# ---------------------------------------------------------------- data

def test_sklearn_split_is_fixed_stratified_and_disjoint():
    train = loaders.load_data(LoaderSpec("sklearn", ("digits",), (("split", "train"),)))
    val = loaders.load_data(LoaderSpec("sklearn", ("digits",), (("split", "val"),)))
    test = loaders.load_data(LoaderSpec("sklearn", ("digits",), (("split", "test"),)))
    again = loaders.load_data(LoaderSpec("sklearn", ("digits",), (("split", "train"),)))
    assert (len(train), len(val), len(test)) == (1079, 359, 359)      # the sizes docs/stdlib.md states
    for split in (val, test):      # stratified: every class within one row of a fifth of its count
        counts = torch.bincount(split.targets, minlength=10)
        whole = counts + torch.bincount(train.targets, minlength=10) + torch.bincount(
            (test if split is val else val).targets, minlength=10)
        assert torch.all((counts.float() - 0.2 * whole.float()).abs() <= 1.0)
    assert torch.equal(train.inputs, again.inputs) and torch.equal(train.targets, again.targets)
    assert train.inputs.dtype == torch.float32 and float(train.inputs.max()) <= 1.0
    assert train.task == "classification"
    rows = {tuple(r.tolist()) for r in train.inputs}
    overlap = sum(tuple(r.tolist()) in rows for r in test.inputs)
    assert overlap < 10      # digits has a few duplicate images; the split itself is disjoint
    from kmr_dsl.runtime.data import stratified_split
    parts = stratified_split([k % 3 for k in range(30)])
    assert sorted(sum((list(v) for v in parts.values()), [])) == list(range(30))
    assert [len(parts[k]) for k in ("train", "val", "test")] == [18, 6, 6]
    iris = loaders.load_data(LoaderSpec("sklearn", ("iris",), (("split", "train"),)))
    assert abs(float(iris.inputs.mean())) < 1e-5


def test_data_errors(tmp_path):
    for s in [LoaderSpec("sklearn", ("mnist",), ()), LoaderSpec("sklearn", ("digits",), (("split", "dev"),))]:
        with pytest.raises(KmrError) as e:
            loaders.load_data(s)
        assert code_of(e) == "KMR403"
    with pytest.raises(KmrError) as e:
        loaders.load_data(LoaderSpec("tensors", ("none.pt",), (), str(tmp_path)))
    assert code_of(e) == "KMR403"       # every data failure is KMR403, as docs/errors.md says
    (tmp_path / "bad.pt").write_text("x")
    with pytest.raises(KmrError) as e:
        loaders.load_data(LoaderSpec("tensors", ("bad.pt",), (), str(tmp_path)))
    assert code_of(e) == "KMR403"
    torch.save((torch.zeros(3, 2), torch.zeros(4)), str(tmp_path / "uneven.pt"))
    with pytest.raises(KmrError) as e:
        loaders.load_data(LoaderSpec("tensors", ("uneven.pt",), (), str(tmp_path)))
    assert code_of(e) == "KMR403"


class _Payload:
    def __init__(self, x):
        self.x = x


def test_a_pickled_data_file_is_kmr403_and_never_unpickled(tmp_path):
    torch.save((_Payload(torch.zeros(3, 2)), torch.zeros(3)), str(tmp_path / "pickled.pt"))
    with pytest.raises(KmrError) as e:
        loaders.load_data(LoaderSpec("tensors", ("pickled.pt",), (), str(tmp_path)))
    assert code_of(e) == "KMR403" and "Python objects" in " ".join(e.value.diagnostic.notes)


def test_weights_whose_dtype_is_not_the_models_are_kmr404(tmp_path):
    """F32 bytes declared as I32 pass safetensors' own checks (same byte length);
    loading them would silently turn the bit patterns into huge numbers."""
    model = loaders.load_model(spec())
    state = {k: (v.view(torch.int32) if v.dtype == torch.float32 else v) for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "i32.safetensors"))
    with pytest.raises(KmrError) as e:
        loaders.load_model(spec(weights=str(tmp_path / "i32.safetensors")))
    assert code_of(e) == "KMR404" and "int32" in " ".join(e.value.diagnostic.notes)
    half = {k: v.half() for k, v in model.state_dict().items()}
    save_file(half, str(tmp_path / "f16.safetensors"))
    with pytest.raises(KmrError) as e:
        loaders.load_model(spec(weights=str(tmp_path / "f16.safetensors")))
    assert code_of(e) == "KMR404"


def test_tensors_and_factory_data(tmp_path):
    x, y = torch.randn(10, 4), torch.arange(10) % 3
    torch.save((x, y), str(tmp_path / "d.pt"))
    ds = loaders.load_data(LoaderSpec("tensors", ("d.pt",), (), str(tmp_path)))
    assert torch.equal(ds.inputs, x) and torch.equal(ds.targets, y)
    save_file({"inputs": x}, str(tmp_path / "d.safetensors"))
    ds = loaders.load_data(LoaderSpec("tensors", ("d.safetensors",), (), str(tmp_path)))
    assert ds.targets is None and ds.task == "unsupervised"
    ds = loaders.load_data(LoaderSpec("factory", ("toy_models:make_data",), (("n", 20),), str(HERE)))
    assert isinstance(ds, Dataset) and len(ds) == 20


def test_batches_are_deterministic():
    ds = Dataset(torch.arange(10).float()[:, None], torch.arange(10))
    a = [y.tolist() for _, y in ds.batches(4, shuffle=True, generator=torch.Generator().manual_seed(5))]
    b = [y.tolist() for _, y in ds.batches(4, shuffle=True, generator=torch.Generator().manual_seed(5))]
    assert a == b and sorted(sum(a, [])) == list(range(10)) and [len(v) for v in a] == [4, 4, 2]


_ARCH = ("import torch.nn as nn\n"
         "class Net(nn.Module):\n"
         "    def __init__(self):\n"
         "        super().__init__()\n"
         "        self.fc = nn.Linear(4, 2)\n"
         "    def forward(self, x):\n"
         "        return self.fc(x)\n")


def _save_pickled_net(tmp_path, module_name: str):
    """A whole module whose class lives in `module_name`.py of another folder."""
    import importlib
    import sys
    src = tmp_path / "src"
    src.mkdir()
    (src / f"{module_name}.py").write_text(_ARCH)
    sys.path.insert(0, str(src))
    try:
        net = importlib.import_module(module_name).Net()
        prog = tmp_path / "prog"
        prog.mkdir()
        torch.save(net, str(prog / "m.pt"))
    finally:
        sys.path.remove(str(src))
        sys.modules.pop(module_name, None)
    return src, prog


def test_torch_module_class_not_importable_says_which_module_and_where(tmp_path):
    src, prog = _save_pickled_net(tmp_path, "kmr_pickled_arch_a")
    with pytest.raises(KmrError) as e:
        loaders.load_model(LoaderSpec("torch_module", ("m.pt",), (), str(prog)), trust=True)
    d = e.value.diagnostic
    assert code_of(e) == "KMR402"
    assert "kmr_pickled_arch_a" in d.message and "cannot be imported" in d.message
    assert "program's folder" in " ".join(d.notes)
    assert "kmr_pickled_arch_a.py" in d.hint and "next to the program" in d.hint and "install" in d.hint


def test_torch_module_class_from_the_program_folder_loads(tmp_path):
    src, prog = _save_pickled_net(tmp_path, "kmr_pickled_arch_b")
    (prog / "kmr_pickled_arch_b.py").write_text(_ARCH)
    import sys
    try:
        model = loaders.load_model(LoaderSpec("torch_module", ("m.pt",), (), str(prog)), trust=True)
        assert type(model).__name__ == "Net" and str(prog) not in sys.path
    finally:
        sys.modules.pop("kmr_pickled_arch_b", None)


def test_torch_module_class_saved_from_a_script(tmp_path):
    import subprocess
    import sys
    script = ("import torch, torch.nn as nn\n" + _ARCH.split("\n", 1)[1]
              + f"torch.save(Net(), {str(tmp_path / 'm.pt')!r})\n")
    subprocess.run([sys.executable, "-c", script], check=True)
    with pytest.raises(KmrError) as e:
        loaders.load_model(LoaderSpec("torch_module", ("m.pt",), (), str(tmp_path)), trust=True)
    assert code_of(e) == "KMR402" and "__main__" in e.value.diagnostic.message
    assert "module file" in e.value.diagnostic.hint
