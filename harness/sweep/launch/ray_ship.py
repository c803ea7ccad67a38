"""Files a fleet sweep's cells need, shipped through Ray's object store by content hash (each file put once)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from quantbench.harness.measure.cell import CellSpec


class Shipper:
    """Files the cells need, each put in Ray's object store once, keyed by its sha256."""

    def __init__(self, ray: Any) -> None:
        self.ray = ray
        self.refs: dict[str, Any] = {}  # file sha256 -> ObjectRef (kept alive until the sweep ends)
        self.bundles: dict[tuple[str, bool], dict[str, Any]] = {}

    def bundle(self, path: str | Path, onnx: bool) -> dict[str, Any]:
        """A file (an ONNX model with its external-data files when ``onnx``) as a bundle a node can write."""
        path = Path(path)
        cached = self.bundles.get((str(path), onnx))
        if cached is not None:
            return cached
        from quantbench.exporters.artifacts import artifact_sha256, sha256_file

        if onnx:
            from quantbench.exporters.onnx_info import onnx_files

            files, key = onnx_files(path), artifact_sha256(path)
        else:
            files, key = [path], sha256_file(path)
        entries = []
        for f in files:
            digest = sha256_file(f)
            if digest not in self.refs:
                self.refs[digest] = self.ray.put(f.read_bytes())
            entries.append({"name": str(f.relative_to(path.parent)), "sha256": digest, "size": f.stat().st_size,
                            "ref": self.refs[digest]})
        bundle = {"key": key, "main": path.name, "files": entries}
        self.bundles[(str(path), onnx)] = bundle
        return bundle

    def files_for(self, spec: CellSpec) -> dict[str, dict[str, Any]]:
        """Dotted spec field -> bundle, for every file the cell's worker opens."""
        out: dict[str, dict[str, Any]] = {}
        for name, payload in (("artifact", spec.artifact), ("interleave_with", spec.interleave_with)):
            if not payload:
                continue
            if payload.get("path") and payload.get("format") in ("onnx", "trt-calibrate"):
                out[f"{name}.path"] = self.bundle(payload["path"], onnx=True)
            if payload.get("reference_path"):  # the fp32 ONNX the variant came from
                out[f"{name}.reference_path"] = self.bundle(payload["reference_path"], onnx=True)
            if payload.get("format") == "torch":
                from quantbench.exporters.registry import ModelSource

                weights = ModelSource.from_dict(payload["source"]).weights_file()
                if weights is not None and weights.is_file():
                    out[f"{name}.source.weights"] = self.bundle(weights, onnx=False)
        if spec.reference_logits:
            out["reference_logits"] = self.bundle(spec.reference_logits, onnx=False)
        return out
