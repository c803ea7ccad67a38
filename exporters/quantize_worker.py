"""Subprocess entry: quantize one model and print time, peak RSS and notes as one JSON line."""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    job = json.loads(sys.argv[1])
    try:
        import onnxruntime  # noqa: F401 - import before the baseline so it is not counted

        from quantbench.calibration_data import BatchReader, Preprocess, open_source

        from .quantize import QuantSettings, quantize_qdq

        settings = QuantSettings.from_dict(job["settings"])
        split = open_source(job["data"]).calibration
        idx = split.select(settings.calib_samples, seed=settings.calib_seed,
                           classes=list(settings.calib_classes) if settings.calib_classes else None)
        reader = BatchReader(split, Preprocess.from_dict(job["preprocess"]), idx, settings.calib_batch, "input")
        import onnx

        reader.input_name = onnx.load(job["fp32"], load_external_data=False).graph.input[0].name
        base = _rss_mb()
        t0 = time.perf_counter()
        out = Path(job["out"])
        tmp = out.with_suffix(".tmp.onnx")
        notes = quantize_qdq(Path(job["fp32"]), tmp, settings, reader)
        tmp.replace(out)
        elapsed = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"time_s": round(elapsed, 3), "peak_rss_mb": round(peak, 1),
                          "delta_rss_mb": round(peak - base, 1), "notes": notes, "calib_samples": len(idx)}))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(json.dumps({"error": msg}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
