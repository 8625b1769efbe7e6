"""`kmr export ARTIFACT --format onnx|hf [-o DIR] [--dense] [--trust] [--base-dir DIR]`.

Contract: exports, prints what each layer became and the check's figures (or the same
as JSON), returns 0. Every failure is a KmrError the CLI renders (KMR5xx: exit 2).
The default output folder is the artifact's own folder for ONNX (`OUT/model.onnx`)
and `OUT/hf/` for Hugging Face.
"""

from __future__ import annotations

import json
from pathlib import Path


def export_command(args) -> int:
    artifact = Path(args.artifact)
    if args.export_format == "onnx":
        from kmr_dsl.export.onnx_export import export_onnx as run
        out = Path(args.output) if args.output else artifact.parent
    else:
        from kmr_dsl.export.hf_export import export_hf as run
        out = Path(args.output) if args.output else artifact.parent / "hf"
    result = run(str(artifact), out, dense=args.dense, trust=args.trust, base_dir=args.base_dir)
    if args.format == "json":
        print(json.dumps({"path": str(result.path), "format": args.export_format, "layers": result.encodings,
                          "config_changes": {k: list(v) for k, v in result.config_changes.items()},
                          "check": {"samples": result.samples, **result.check.to_json()}}, indent=2))
    else:
        print(result.summary())
    return 0
