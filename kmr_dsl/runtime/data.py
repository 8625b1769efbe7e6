"""Datasets and the data loaders `sklearn`, `tensors` and `factory`.

Contract: a `Dataset` is an inputs tensor (first dimension = examples), an optional
targets tensor of the same length, and a name. Its `task` is "classification" when the
targets are integers of one dimension, "span" when they are integer pairs (n, 2): the
(start, end) token positions of an extractive question-answering answer, "regression"
for float targets and "unsupervised" without targets; the training rules and meters
choose their loss from it (`span_logits` reads a span model's output).
`batches` yields deterministic batches: in order, or shuffled by a seeded generator.

`sklearn(name, split)` serves the datasets scikit-learn ships without download
(digits, iris, wine, breast_cancer) with a fixed, seeded, stratified three-way split
(`stratified_split`): within each class (in class order) the rows are permuted by one
`numpy.random.RandomState(0)`; round(0.2 * n_class) go to "test", as many again to
"val", the rest to "train"; each split is then put in one seeded random order. Sizes
(train / val / test): digits 1079 / 359 / 359, iris 90 / 30 / 30, wine 106 / 36 / 36,
breast_cancer 343 / 113 / 113 (a test pins them). Budgets and objectives should read "val"; "test" is
for reporting (`report accuracy(test)`).
Features are float32: digits divided by 16 (its pixels lie in 0..16); the others
standardized with the mean and standard deviation of the *train* rows (a zero std
counts as 1). Targets are int64 class indices.

Every failure raises `KmrError` KMR403 (data could not be loaded: a missing or
unreadable file, a pickle, a value that is not tensors, a bad request), as
docs/errors.md says; model files have their own codes (KMR401/KMR402).
"""

from __future__ import annotations

import pickle

from dataclasses import dataclass
from pathlib import Path

import torch

from kmr_dsl.diagnostics import KmrError, Span, error

SKLEARN_DATASETS = ("digits", "iris", "wine", "breast_cancer")
SPLITS = ("train", "val", "test")
HELD_OUT_FRACTION = 0.2        # of each class, for "val" and again for "test"
SPLIT_SEED = 0


@dataclass
class Dataset:
    inputs: torch.Tensor
    targets: torch.Tensor | None = None
    name: str = "data"

    def __post_init__(self):
        if self.targets is not None and len(self.targets) != len(self.inputs):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def task(self) -> str:
        if self.targets is None:
            return "unsupervised"
        if not self.targets.is_floating_point() and self.targets.dim() == 1:
            return "classification"
        if not self.targets.is_floating_point() and self.targets.dim() == 2 and self.targets.shape[1] == 2:
            return "span"
        return "regression"

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None):
        """Yield (inputs, targets-or-None) batches; shuffled order comes from `generator`."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, max(1, int(batch_size))):
            idx = order[start:start + batch_size]
            yield self.inputs[idx], (None if self.targets is None else self.targets[idx])


def as_dataset(value, name: str, span: Span) -> Dataset:
    """Accept a Dataset, an (inputs, targets) pair, a {"inputs", "targets"} dict or a tensor."""
    if isinstance(value, Dataset):
        return value
    inputs, targets = None, None
    if isinstance(value, torch.Tensor):
        inputs = value
    elif isinstance(value, (tuple, list)) and len(value) in (1, 2):
        inputs = value[0]
        targets = value[1] if len(value) == 2 else None
    elif isinstance(value, dict) and "inputs" in value:
        inputs, targets = value["inputs"], value.get("targets")
    if not isinstance(inputs, torch.Tensor) or not (targets is None or isinstance(targets, torch.Tensor)):
        raise KmrError(error("KMR403", span, f"data `{name}` is not an (inputs, targets) pair of tensors",
                             f"got {type(value).__name__}",
                             hint="return a Dataset, a tensor, or a tuple (inputs, targets) of tensors"))
    if targets is not None and len(targets) != len(inputs):
        raise KmrError(error("KMR403", span, f"data `{name}` has {len(inputs)} inputs but {len(targets)} targets"))
    if inputs.dtype == torch.float64:
        inputs = inputs.float()   # models are float32; doubles would fail in the first Linear
    return Dataset(inputs, targets, name)


def stratified_split(labels) -> dict:
    """Row indices of "train", "val" and "test": per class, round(0.2 * n) rows to test,
    as many to val, the rest to train, drawn by one RandomState(SPLIT_SEED); each split
    in a seeded random order. Deterministic for the same labels."""
    import numpy as np

    rng = np.random.RandomState(SPLIT_SEED)
    labels = np.asarray(labels)
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(HELD_OUT_FRACTION * len(rows)))
        parts["test"].extend(rows[:k])
        parts["val"].extend(rows[k:2 * k])
        parts["train"].extend(rows[2 * k:])
    return {key: rng.permutation(np.asarray(sorted(v), dtype=np.int64)) for key, v in parts.items()}


def sklearn(name: str, split: str = "train", span: Span | None = None) -> Dataset:
    span = span or Span.unknown()
    if name not in SKLEARN_DATASETS:
        raise KmrError(error("KMR403", span, f"unknown scikit-learn dataset `{name}`",
                             f"available offline: {', '.join(SKLEARN_DATASETS)}",
                             hint="use one of the datasets scikit-learn ships; fetch_* loaders need a network"))
    if split not in SPLITS:
        raise KmrError(error("KMR403", span, f"unknown split `{split}`", hint='use split = "train", "val" or "test"'))
    try:
        import numpy as np
        from sklearn import datasets
    except ImportError as exc:
        raise KmrError(error("KMR506", span, "scikit-learn is not installed", str(exc),
                             hint="pip install scikit-learn")) from exc
    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    parts = stratified_split(y)
    train_idx = parts["train"]
    x = x.astype("float32")
    if name == "digits":
        x = x / 16.0
    else:
        mean = x[train_idx].mean(axis=0)
        std = x[train_idx].std(axis=0)
        x = (x - mean) / np.where(std > 0, std, 1.0)
    idx = parts[split]
    return Dataset(torch.from_numpy(np.ascontiguousarray(x[idx], dtype="float32")),
                   torch.from_numpy(y[idx].astype("int64")), f"{name}:{split}")


def tensors(path: str | Path, span: Span | None = None, name: str | None = None) -> Dataset:
    """A saved (inputs, targets) pair: torch.save'd tensors (loaded weights_only) or a
    safetensors file with `inputs` (and optionally `targets`) entries."""
    span = span or Span.unknown()
    path = Path(path)
    # every failure of a data loader is KMR403 (docs/errors.md), whatever the cause
    if not path.is_file():
        raise KmrError(error("KMR403", span, f"data file `{path}` not found",
                             hint="fix the path; it is relative to the program's folder"))
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            value = load_file(str(path))
        else:
            value = torch.load(str(path), weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a data error
        pickled = isinstance(exc, pickle.UnpicklingError)
        notes = (["it holds Python objects besides tensors; data files are never unpickled"] if pickled
                 else [f"{type(exc).__name__}: {str(exc)[:300]}"])
        raise KmrError(error("KMR403", span, f"cannot read data file `{path}`", *notes,
                             hint="save the data with torch.save((inputs, targets), path) "
                                  "or as safetensors with `inputs` and `targets`")) from exc
    return as_dataset(value, name or path.stem, span)


__all__ = ["Dataset", "SKLEARN_DATASETS", "as_dataset", "sklearn", "tensors"]
