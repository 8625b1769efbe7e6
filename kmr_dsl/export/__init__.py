"""`kmr export`: a KMR artifact in formats other tools load.

Module map: samples.py (load the artifact with the runtime's data-only loader, sample
inputs, the agreement measure) -> twin.py (the float twin and each weight's format) ->
onnx_export.py (ONNX via torch's exporter, with onnx_ops.py's translations of the
operators it lacks; int8 through onnxruntime's tooling, checked by onnxruntime) and
hf_export.py (a transformers `save_pretrained` folder, quantized weights through
compressed-tensors, checked by loading it back) -> command.py.
torch, onnx, onnxruntime, transformers and compressed-tensors are imported here only
(the `export` extra).
"""
