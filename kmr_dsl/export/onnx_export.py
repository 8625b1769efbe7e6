"""`kmr export --format onnx`: a KMR artifact as an ONNX model, checked by onnxruntime.

Contract: `export_onnx(artifact, out_dir, dense, trust, base_dir) -> ExportResult` writes
`out_dir/model.onnx` and returns where, how every weight was encoded, and the
agreement of onnxruntime's outputs with the torch artifact's on sample inputs. The file
appears only when that check passes (it is written beside, checked, then moved into
place); otherwise KMR522 with the figures.

How each weight is encoded (the artifact's format -> ONNX):
- float32, and bfloat16 widened to float32 (exact; onnxruntime's CPU kernels have no
  bf16 matmul): float initializers. Pruned weights are stored dense (same values).
- int8 weight-only: the int8 codes ([out, in]) and per-row scales as initializers feeding
  a `DequantizeLinear` (axis 0), then a `Transpose` where the graph multiplies by the
  weight [in, out]: the values are exactly the artifact's, and onnxruntime keeps them
  (a DequantizeLinear on axis 1 straight into a MatMul it fuses into MatMulNBits, which
  quantizes the activations as well).
- int8 dynamic: the float graph is exported, then onnxruntime's own quantizer
  (`quantize_dynamic`, per-channel symmetric weights) quantizes exactly those layers'
  matmuls (torch's quantized modules do not export). The weights are stored uint8 with
  zero point 128 (codes q + 128, so KMR's codes are kept exactly), and KMR's codes and
  scales replace the ones onnxruntime computed (its scales differ). Why uint8: signed
  int8 weights with uint8 activations (U8S8) saturate in the AVX2 kernels here —
  measured 6-11% relative error on a small MLP against 0.4-0.8% for U8U8.
- int4 / int2 (KMR's zero-preserving midrise grid): no ONNX equivalent; KMR520 names
  the layer, or `dense=True` writes its dequantized values as float.

The check runs four sample batches, the last with another batch size (and sequence
length, for token ids) than the traced one, since the graph declares those axes free.
Its tolerances are `samples.Check`'s: float and weight-only graphs must match the
artifact to float32 rounding (1e-4); with int8 dynamic layers, onnxruntime's error
against the float model may be at most max(0.05, 1.5 x torch's own).
The torch exporter used is the TorchScript one (`dynamo=False`): on this CPU it exports
in well under a second where the dynamo exporter takes tens of seconds, and it keeps
parameter names on the initializers. Two operators it cannot translate as transformers
5 uses them (decoders' causal masks: `aten::diff`, bool `aten::cumsum`) are translated
by `onnx_ops`.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kmr_dsl.diagnostics import KmrError, Span, error
from kmr_dsl.export import onnx_ops
from kmr_dsl.export.samples import Check, Primary, judge, load_artifact, outputs, sample_inputs
from kmr_dsl.export.twin import Leaf, float_twin

OPSET = 17


@dataclass
class ExportResult:
    path: Path
    encodings: dict[str, str] = field(default_factory=dict)   # leaf -> how it was written
    check: Check | None = None
    samples: int = 0
    config_changes: dict = field(default_factory=dict)        # config field -> (before, after): hf only

    def summary(self) -> str:
        kinds: dict[str, int] = {}
        for how in self.encodings.values():
            kinds[how] = kinds.get(how, 0) + 1
        enc = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        size = self.path.stat().st_size if self.path.is_file() else sum(
            p.stat().st_size for p in self.path.parent.iterdir() if p.is_file())
        config = "".join(f"\n  config.json: {k} {a} -> {b}" for k, (a, b) in sorted(self.config_changes.items()))
        return (f"wrote {self.path} ({size:,} bytes; layers: {enc}){config}\n"
                f"  checked on {self.samples} sample batches against the torch artifact: "
                f"{self.check.vs_artifact.summary()}\n"
                f"  passed: {self.check.rule()}")


def refuse(leaf: Leaf, target: str) -> KmrError:
    return KmrError(error(
        "KMR520", Span.unknown(leaf.name),
        f"layer `{leaf.name}` is stored as {leaf.format}, which {target} cannot hold",
        f"{leaf.format} codes are KMR's zero-preserving midrise grid (docs/artifact.md), not an integer format "
        f"{target} knows",
        hint="quantize that layer to 8 bits, or pass --dense to write its dequantized values as float"))


def export_onnx(artifact: str, out_dir: str | Path, dense: bool = False, trust: bool = False,
                base_dir: str | None = None) -> ExportResult:
    model, spec = load_artifact(artifact, trust, base_dir)
    twin, plan = float_twin(model)
    result = ExportResult(Path(out_dir) / "model.onnx")
    for leaf in plan.values():
        if leaf.format in ("int4", "int2") and not dense:
            raise refuse(leaf, "ONNX")
        result.encodings[leaf.name] = {"int8": "int8 DequantizeLinear", "int8_dynamic": "int8 dynamic (onnxruntime)",
                                       "bfloat16": "float32 (from bfloat16)"}.get(
            leaf.format, "float32" if leaf.format == "float32" else f"float32 (dense, from {leaf.format})")
    samples = sample_inputs(model, spec, vary=True)
    artifact_out, float_out = outputs(model, samples), outputs(twin, samples)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".model.", suffix=".onnx.tmp", dir=out)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # tracing can leave state behind in a model (transformers' caches): trace a copy
        _torch_export(copy.deepcopy(twin), samples[0], tmp, artifact)
        # the traced graph itself first: before any quantization it must compute the float
        # model to float32 rounding, so quantization noise cannot hide a wrong graph
        graph = judge(float_out, float_out, _run(tmp, samples, artifact), False)
        if not graph.ok:
            raise KmrError(error("KMR522", Span.unknown(artifact), "the exported float graph disagrees with the model",
                                 graph.vs_artifact.summary(), f"required: {graph.rule()}",
                                 hint="the model's forward may branch on its input's values (traced once); "
                                      "report this with the artifact; nothing was written"))
        # an int8 layer the primary output never reads (BERT's pooler under
        # last_hidden_state) was dropped by the exporter: say so instead of claiming int8
        absent = _absent(tmp, [leaf for leaf in plan.values() if leaf.format in ("int8", "int8_dynamic")])
        for name in absent:
            result.encodings[name] = "absent (the exported output does not use it)"
        dynamic = [leaf for leaf in plan.values() if leaf.format == "int8_dynamic" and leaf.name not in absent]
        if dynamic:
            _quantize_dynamic(tmp, dynamic)
        _weight_only_int8(tmp, [leaf for leaf in plan.values() if leaf.format == "int8" and leaf.name not in absent])
        result.check = judge(artifact_out, float_out, _run(tmp, samples, artifact), bool(dynamic))
        result.samples = len(samples)
        if not result.check.ok:
            raise KmrError(error("KMR522", Span.unknown(artifact), "the ONNX model disagrees with the torch artifact",
                                 result.check.vs_artifact.summary(), f"required: {result.check.rule()}",
                                 hint="report this with the artifact; nothing was written"))
        os.replace(tmp, result.path)
    finally:
        tmp.unlink(missing_ok=True)
    return result


def _torch_export(twin, x: torch.Tensor, path: Path, artifact: str) -> None:
    axes = {0: "batch"} if x.dim() < 2 or x.is_floating_point() else {0: "batch", 1: "sequence"}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            onnx_ops.register(OPSET)
            with onnx_ops.quiet_stdout():
                torch.onnx.export(Primary(twin), (x,), str(path), dynamo=False, opset_version=OPSET,
                                  input_names=["input"], output_names=["output"],
                                  dynamic_axes={"input": axes, "output": {0: "batch"}})
    except Exception as exc:  # noqa: BLE001 - the exporter's message names the operator
        raise KmrError(error("KMR521", Span.unknown(artifact), "the model cannot be exported to ONNX",
                             f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}",
                             hint="the note names the operator ONNX lacks; replace it in the model's code")) from exc


def _matching(graph, weight: np.ndarray):
    """Initializers holding exactly this weight: (initializer, transposed?)."""
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.data_type != 1 or tuple(init.dims) not in (weight.shape, weight.T.shape):
            continue
        arr = numpy_helper.to_array(init)
        if arr.shape == weight.shape and np.array_equal(arr, weight):
            yield init, False
        elif weight.ndim == 2 and arr.shape == weight.T.shape and np.array_equal(arr, weight.T):
            yield init, True


def _absent(path: Path, leaves: list[Leaf]) -> set[str]:
    """The leaves whose weight is no initializer of the exported graph (as is or
    transposed). The float graph has passed the check by then, so such a layer does not
    shape the output the file computes: its weight was folded away with unused code."""
    import onnx

    if not leaves:
        return set()
    graph = onnx.load(str(path)).graph
    return {leaf.name for leaf in leaves if next(_matching(graph, leaf.weight.numpy()), None) is None}


def _quantize_dynamic(path: Path, leaves: list[Leaf]) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.onnx_model import ONNXModel

    # onnxruntime's quantizer turns Gemm into MatMul + Add (renaming the nodes) before
    # it quantizes; do that step first with its own code so the names picked below hold
    wrapped = ONNXModel(onnx.load(str(path)))
    wrapped.replace_gemm_with_matmul()
    graph = wrapped.model.graph
    names, targets = set(), {}
    for leaf in leaves:
        inits = {init.name: transposed for init, transposed in _matching(graph, leaf.weight.numpy())}
        found = [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits]
        if not found:
            raise KmrError(error("KMR521", Span.unknown(leaf.name), f"layer `{leaf.name}`: no matmul found for it "
                                 "in the exported graph",
                                 "its weight is in the graph, but no MatMul multiplies by it (shared with another "
                                 "layer?), and onnxruntime quantizes activations only at a MatMul",
                                 hint="store that layer as int8 weight-only (`scheme = weight_only`) or float"))
        names.update(n.name for n in found)
        targets.update({n.input[1]: (leaf, inits[n.input[1]]) for n in found})
    onnx.save(wrapped.model, str(path))
    level = logging.root.level
    logging.root.setLevel(logging.ERROR)  # its advice to pre-process is for static quantization
    try:
        quantize_dynamic(str(path), str(path), per_channel=True, weight_type=QuantType.QUInt8,
                         extra_options={"WeightSymmetric": True},
                         nodes_to_quantize=sorted(names))
    finally:
        logging.root.setLevel(level)
    _restore_codes(path, targets)


def _restore_codes(path: Path, targets: dict[str, tuple[Leaf, bool]]) -> None:
    """Put KMR's own codes, scales and zero points in the weights onnxruntime re-quantized.

    onnxruntime quantizes each MatMul weight `W` to `W_quantized` (uint8, [in, out]),
    `W_scale` and `W_zero_point` (one per output column). Its codes are its own: a
    symmetric scale of max|w| / 127.5, where KMR's are max|w| / 127, or / 64 for the
    codes the quantize rule keeps within the kernels' no-saturation range. Writing KMR's
    codes (q + 128), scales and zero point 128 there makes every weight exactly the
    artifact's, in onnxruntime's own graph."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    for name, (leaf, transposed) in targets.items():
        codes = (leaf.codes.to(torch.int16) + 128).numpy().astype(np.uint8)
        codes = codes.T if transposed else codes
        parts = [inits.get(name + suffix) for suffix in ("_quantized", "_scale", "_zero_point")]
        if any(p is None for p in parts) or tuple(parts[0].dims) != codes.shape:
            raise KmrError(error("KMR522", Span.unknown(leaf.name), f"layer `{leaf.name}`: onnxruntime's quantizer "
                                 "did not write the weight KMR looks for",
                                 f"expected {name}_quantized {list(codes.shape)} with its scale and zero point",
                                 hint="report this with the artifact and the onnxruntime version; nothing was "
                                      "written"))
        quantized, scale, zero = parts
        quantized.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(codes), quantized.name))
        scale.CopyFrom(numpy_helper.from_array(leaf.scale.float().numpy().reshape(tuple(scale.dims)), scale.name))
        zero.CopyFrom(numpy_helper.from_array(np.full(tuple(zero.dims), 128, dtype=np.uint8), zero.name))
    onnx.save(model, str(path))


def _weight_only_int8(path: Path, leaves: list[Leaf]) -> None:
    import onnx
    from onnx import helper, numpy_helper

    if not leaves:
        return
    model = onnx.load(str(path))
    graph = model.graph
    new_nodes = []
    for leaf in leaves:
        codes = leaf.codes.to(torch.int8).numpy()
        scale = leaf.scale.float().numpy()
        for init, transposed in list(_matching(graph, leaf.weight.numpy())):
            # always KMR's [out, in] codes with one scale per row (axis 0); where the graph
            # wants the weight [in, out] (a MatMul's B), a Transpose follows. A
            # DequantizeLinear on axis 1 feeding a MatMul is what onnxruntime fuses into
            # MatMulNBits, which quantizes the activations too (accuracy_level 4): measured
            # 1.6e-3 off on GPT-2, where the weight-only layer must be exact
            name = init.name
            q = numpy_helper.from_array(codes, name + "_q")
            s = numpy_helper.from_array(scale, name + "_scale")
            graph.initializer.remove(init)
            graph.initializer.extend([q, s])
            dequantized = name + "_rows" if transposed else name
            new_nodes.append(helper.make_node("DequantizeLinear", [q.name, s.name], [dequantized],
                                              name=name + "_dequantize", axis=0))
            if transposed:
                new_nodes.append(helper.make_node("Transpose", [dequantized], [name], name=name + "_transpose",
                                                  perm=[1, 0]))
    for i, node in enumerate(new_nodes):
        graph.node.insert(i, node)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _run(path: Path, samples, artifact: str) -> list[torch.Tensor]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    opts.log_severity_level = 4     # its own log would print the failure below a second time
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - e.g. an operator given a type ONNX does not allow
        raise KmrError(error("KMR522", Span.unknown(artifact), "onnxruntime cannot load the exported graph",
                             f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}",
                             hint="report this with the artifact; nothing was written")) from exc
    out = []
    for x in samples:
        try:
            out.append(torch.from_numpy(session.run(None, {"input": x.numpy()})[0]))
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors carry the node that failed
            raise KmrError(error(
                "KMR522", Span.unknown(artifact), "onnxruntime cannot run the exported graph",
                f"traced on a batch of shape {tuple(samples[0].shape)}, run on {tuple(x.shape)}: "
                f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}",
                hint="the model's forward may fix a batch size or sequence length the graph declares free (the "
                     "check runs more than one); report this with the artifact; nothing was written")) from exc
    return out


__all__ = ["ExportResult", "export_onnx", "refuse"]
