"""Calibrated ranges and the scales of the quantized model, against values worked out by hand.

The model is y = Conv(x; w = 2, b = -10), z = 0.5 * y on two 2-pixel samples, so every range is known:
x in [-2, 3], y in [-14, -4], z in [-7, -2]. A symmetric range is [-m, m] with m = max(|lo|, |hi|);
int8 scales are m / 127 (symmetric, QInt8) and (hi - lo) / 255 over the range widened to hold 0
(asymmetric, QUInt8).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantbench.common.onnx_save import save_model
from quantbench.exporters.calibrate import CalibrationConfig, calibrate

pytestmark = pytest.mark.ort_cpu

SAMPLES = [np.array([[[[-1.0, 3.0]]]], np.float32), np.array([[[[0.5, -2.0]]]], np.float32)]


def conv_mul_model(path: Path) -> Path:
    inits = [numpy_helper.from_array(np.full((1, 1, 1, 1), 2.0, np.float32), "w"),
             numpy_helper.from_array(np.array([-10.0], np.float32), "b"),
             numpy_helper.from_array(np.array(0.5, np.float32), "h")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv"),
             helper.make_node("Mul", ["y", "h"], ["z"], name="mul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 1, 2])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 1, 1, 2])], inits)
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


class Reader:
    """ORT's CalibrationDataReader protocol over a list of batches."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self.batches, self.i = batches, 0

    def rewind(self) -> None:
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {"x": self.batches[self.i - 1]}


def _ranges(tmp_path, symmetric: bool, batches=SAMPLES) -> dict[str, tuple[float, float]]:
    result = calibrate(conv_mul_model(tmp_path / "m.onnx"), CalibrationConfig("minmax", symmetric=symmetric),
                       Reader(batches), tmp_path)
    assert result.samples == 2
    return {t: tuple(float(v) for v in result.ranges[t].range_value) for t in result.ranges}


def test_minmax_ranges(tmp_path):
    assert _ranges(tmp_path, symmetric=False) == {"x": (-2.0, 3.0), "y": (-14.0, -4.0), "z": (-7.0, -2.0)}


def test_symmetric_minmax_takes_the_larger_magnitude(tmp_path):
    # x: max(|-2|, |3|) = 3 (the positive side); y and z: the negative side is larger
    assert _ranges(tmp_path, symmetric=True) == {"x": (-3.0, 3.0), "y": (-14.0, 14.0), "z": (-7.0, 7.0)}


def test_ranges_do_not_depend_on_batching(tmp_path):
    one_batch = [np.concatenate(SAMPLES)]
    assert _ranges(tmp_path, symmetric=True, batches=one_batch) == _ranges(tmp_path, symmetric=True)


def _scales(path: Path) -> dict[str, tuple[float, int]]:
    """(scale, zero point) of each QuantizeLinear, by the float tensor it quantizes."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear":
            name = n.input[0]
            if name not in ("x", "y", "z") and name in producers:  # ORT renames a graph output it quantizes
                name = producers[name].output[0].replace("_QuantizeLinear_Input", "")
            out[name] = (float(inits[n.input[1]]), int(inits[n.input[2]]))
    return out


@pytest.mark.parametrize(("symmetric", "expected"), [
    (True, {"x": (3 / 127, 0), "z": (7 / 127, 0)}),
    (False, {"x": (5 / 255, 102), "z": (7 / 255, 255)}),  # x: [-2, 3], zero at 2/(5/255) = 102; z: [-7, 0]
])
def test_quantized_model_scales(tmp_path, symmetric, expected):
    from quantbench.exporters.quantize import QuantSettings, quantize_qdq

    settings = QuantSettings(calibration="minmax", symmetric_activation=symmetric,
                             activation_type="QInt8" if symmetric else "QUInt8")
    out = tmp_path / "q.onnx"
    quantize_qdq(conv_mul_model(tmp_path / "m.onnx"), out, settings, Reader(SAMPLES))
    scales = _scales(out)
    for tensor, (scale, zero) in expected.items():
        assert scales[tensor][0] == pytest.approx(scale, rel=1e-6), tensor
        assert scales[tensor][1] == zero, tensor
