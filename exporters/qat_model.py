"""Quantization-aware training of any model quantbench can export (``mode = "qat"`` in a ``[[variants]]`` table).

The trained FP32 network (registry, ``torchvision:``, ``module:``) is traced with ``torch.fx`` and its
BatchNorm layers folded into the convolutions before them (eval-mode statistics, frozen during QAT: the
form the ONNX export and ORT's PTQ quantize). Every ``Conv2d`` and/or ``Linear`` the variant's
``op_types`` select (``Conv``; ``Gemm``/``MatMul``; all three when unset) is then wrapped in
:class:`FakeQuantLayer`: its input goes through an activation fake quantizer and its weight through a
weight fake quantizer (:func:`.qat.qat_qconfig`: QUInt8 asymmetric activations, QInt8 symmetric weights,
per output channel or per tensor), which is where ORT's QDQ files put their Q/DQ pairs. Layers not
selected stay float, so conv-only and dense-only QAT compare with conv-only and dense-only PTQ.

Training is Adam on the data source's training split (its calibration split: ``train/``, the IDX training
files, or a test-only set's held-out slice), preprocessed as the harness does; observers freeze after
``FREEZE_AT`` of the steps. The model is exported by :func:`.qat.export_qdq` into plain QDQ ONNX.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .qat import FREEZE_AT, export_qdq, qat_qconfig
from .registry import ModelSource

CONV_TYPES = ("Conv",)
DENSE_TYPES = ("Gemm", "MatMul")


def _fake_quant_layer_class() -> type:
    from torch import nn

    class FakeQuantLayer(nn.Module):
        """A Conv2d or Linear whose input and weight are fake-quantized (``weight_fake_quant`` is the name
        torch's own QAT modules use, which the exporter looks for)."""

        def __init__(self, layer: nn.Module, per_channel: bool, quantize_output: bool = True) -> None:
            super().__init__()
            qconfig = qat_qconfig()
            self.layer = layer
            self.input_fake_quant = qconfig.activation()
            self.weight_fake_quant = qconfig.weight() if per_channel else _per_tensor_weight(qconfig)
            # ORT runs a QDQ Conv/Gemm in integer kernels only with a Q on its output (after a fused ReLU)
            self.output_fake_quant = qconfig.activation() if quantize_output else nn.Identity()

        def forward(self, x):
            weight = self.weight_fake_quant(self.layer.weight)
            x = self.input_fake_quant(x)
            if isinstance(self.layer, nn.Conv2d):
                y = self.layer._conv_forward(x, weight, self.layer.bias)
            else:
                y = nn.functional.linear(x, weight, self.layer.bias)
            return self.output_fake_quant(y)

    return FakeQuantLayer


def _per_tensor_weight(qconfig: Any) -> Any:
    """A per-tensor symmetric weight fake quantizer on the same integer range as the per-channel one."""
    import torch
    import torch.ao.quantization as tq

    ref = qconfig.weight()
    return tq.FakeQuantize(observer=tq.MovingAverageMinMaxObserver, quant_min=int(ref.quant_min),
                           quant_max=int(ref.quant_max), dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)


def prepare(module: Any, op_types: tuple[str, ...] | None = None, per_channel: bool = True) -> tuple[Any, int]:
    """``module`` (trained, float) with BatchNorm folded and the selected layers fake-quantized; returns the
    prepared module (train mode) and how many layers were wrapped. Raises a one-line ValueError when the
    model cannot be traced while it has BatchNorm to fold, or when no layer matches ``op_types``."""
    import torch
    from torch import nn
    from torch.fx.experimental.optimization import fuse

    module = module.eval()
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
    try:
        module = fuse(module)
    except Exception as exc:  # noqa: BLE001 - fx raises many types on untraceable code
        if has_bn:
            raise ValueError(f"QAT needs a torch.fx-traceable model to fold its BatchNorm layers "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        raise ValueError("QAT could not fold every BatchNorm into a preceding convolution")
    types = tuple(op_types) if op_types else CONV_TYPES + DENSE_TYPES
    wanted: tuple[type, ...] = ((nn.Conv2d,) if set(types) & set(CONV_TYPES) else ()) + (
        (nn.Linear,) if set(types) & set(DENSE_TYPES) else ())
    layer_cls = _fake_quant_layer_class()
    targets = [name for name, m in module.named_modules() if isinstance(m, wanted) and name]
    activations = _single_activation_after(module, targets)
    for name in targets:
        act = activations.get(name)
        _replace(module, name, layer_cls(module.get_submodule(name), per_channel, quantize_output=act is None))
        if act is not None:  # quantize after the ReLU, as ORT fuses Conv+ReLU (a range from 0, no level wasted)
            _replace(module, act, nn.Sequential(module.get_submodule(act), qat_qconfig().activation()))
    if not targets:
        raise ValueError(f"op_types {list(types)} select no Conv2d/Linear layer of this model: nothing to train")
    torch.manual_seed(0)
    return module.train(), len(targets)


def drop_redundant_clips(path: Path) -> int:
    """Remove each ``Clip`` (ReLU6) between a Conv/Gemm and a QuantizeLinear whose integer range already lies
    inside the clip bounds (zero point at the type's minimum, ``scale * (qmax - zp) <= max``), as ORT's own
    quantizer does: the file computes the same, and ORT can fuse DQ→Conv→Q into an integer kernel instead of
    fusing Conv+Clip into a float ``FusedConv``. Returns how many were removed."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from quantbench.common.onnx_save import save_model

    model = onnx.load(str(path))
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in g.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    producer = {o: n for n in g.node for o in n.output}
    users: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    removed = 0
    for clip in [n for n in g.node if n.op_type == "Clip" and len(n.input) >= 3]:
        src, after = producer.get(clip.input[0]), users.get(clip.output[0], [])
        if src is None or src.op_type not in ("Conv", "Gemm") or len(users.get(clip.input[0], [])) != 1:
            continue
        if len(after) != 1 or after[0].op_type != "QuantizeLinear" or clip.input[1] not in consts \
                or clip.input[2] not in consts or any(i not in consts for i in after[0].input[1:3]):
            continue
        values = [consts[clip.input[1]], consts[clip.input[2]], consts[after[0].input[1]], consts[after[0].input[2]]]
        if any(v.size != 1 for v in values):
            continue
        low, high, scale, zp = (float(v.reshape(-1)[0]) for v in values)
        info = np.iinfo(values[3].dtype)
        # a float32 scale of 6/255 times 255 is 6.0000001: a relative tolerance far below half a step
        if int(zp) != info.min or low > 0 or scale * (info.max - int(zp)) > high * (1 + 1e-6):
            continue
        after[0].input[0] = clip.input[0]
        g.node.remove(clip)
        removed += 1
    if removed:
        save_model(model, path)
    return removed


def _replace(module: Any, name: str, new: Any) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, leaf, new)


def _single_activation_after(module: Any, layers: list[str]) -> dict[str, str]:
    """``{layer: activation module}`` for each layer whose output goes only to a ReLU/ReLU6 module that the
    graph calls once (a traced model; an untraced one gets ``{}``: its layers quantize their own output)."""
    from torch import nn

    graph = getattr(module, "graph", None)
    if graph is None:
        return {}
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    out = {}
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in layers or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        if (user.op == "call_module" and calls.get(user.target) == 1
                and isinstance(module.get_submodule(user.target), (nn.ReLU, nn.ReLU6))):
            out[node.target] = user.target
    return out


def run(source: ModelSource | Mapping[str, Any], settings: Any, data: str | Mapping[str, Any],
        preprocess: Mapping[str, Any], out: Path, *, progress: Callable[[int, int, float], None] | None = None,
        log: Callable[[str], None] = lambda _msg: None) -> dict[str, Any]:
    """Fine-tune ``source`` with fake quantization as ``settings`` (a QuantSettings with ``mode = "qat"``)
    says, and write plain QDQ ONNX to ``out``; returns what ran (steps, loss, seconds, data, layers)."""
    import torch
    import torch.ao.quantization as tq

    from quantbench.calibration_data import Preprocess, open_source

    from .torch_models import build_module
    from .train import TrainSettings, run_steps, training_batches

    src = source if isinstance(source, ModelSource) else ModelSource.from_dict(dict(source))
    if src.kind == "onnx":
        raise ValueError("mode = 'qat' trains the PyTorch model: it does not apply to an ONNX file "
                         "(use a registry name, torchvision:NAME or module:pkg.mod:fn)")
    split = open_source(data).calibration
    if len(split) == 0:
        raise ValueError("mode = 'qat' needs training images: the data source has no calibration/training split")
    train = TrainSettings(epochs=settings.qat_epochs, max_steps=settings.qat_steps, batch=settings.qat_batch,
                          lr=settings.qat_lr, seed=settings.qat_seed)
    total = train.total_steps(len(split))
    torch.manual_seed(train.seed)
    model, n_layers = prepare(build_module(src), settings.op_types, settings.per_channel)
    log(f"QAT of {src.name}: {n_layers} layers fake-quantized, {total} steps of {train.batch} on {split.name}")
    freeze_step = max(1, int(total * FREEZE_AT))

    def on_step(step: int) -> None:
        if step == freeze_step:
            model.apply(tq.disable_observer)

    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr)
    ran = run_steps(model, training_batches(split, Preprocess.from_dict(dict(preprocess)), train.batch, train.seed,
                                            total), total, optimizer, progress=progress, on_step=on_step)
    t0 = time.perf_counter()
    export_qdq(model, Path(out), tuple(src.input_shape))
    drop_redundant_clips(Path(out))
    return {**ran, "export_seconds": round(time.perf_counter() - t0, 1), "observers_frozen_at_step": freeze_step,
            "layers_fake_quantized": n_layers, "train_split": split.name, "n_train": len(split),
            "optimizer": f"Adam lr={train.lr:g}", "batch": train.batch, "torch": torch.__version__}
