"""FP32 → FP16 ONNX conversion keeping the model's inputs and outputs in float32."""
from __future__ import annotations

import warnings
from pathlib import Path

from quantbench.common.onnx_save import save_model


def convert_fp16(fp32_path: Path, out_path: Path) -> Path:
    """Write an FP16 copy of ``fp32_path`` (weights and compute in half, I/O in float32)."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(fp32_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    onnx.checker.check_model(half)
    save_model(half, out_path)
    return Path(out_path)
