"""Quantization-aware training (PyTorch eager-mode QAT) and export to plain QDQ ONNX.

``python -m quantbench.exporters.qat --out qat.onnx`` fine-tunes the shipped Fashion-MNIST CNN
(exporters/assets/fashion_cnn.pt) with fake quantization for one epoch and writes a QDQ ONNX file
that a ``[[variants]]`` table benchmarks as ``onnx = "qat.onnx"`` next to PTQ variants of the same
model. The fake quantizers match the PTQ defaults (exporters/quantize.py): activations QUInt8
asymmetric per tensor, weights QInt8 symmetric per output channel on ORT's symmetric grid [-127, 127]
with scale max|w|/127 (from the observer's range when it froze), no reduce_range. The exported integer
weights are torch's fake-quant integers bit for bit (``round(w·(1/s))`` in float32, as torch rounds).

Not modelled by torch's eager QAT: the INT32 bias. The fake-quantized torch model adds its biases in
float; the export stores them as INT32 at ``s_input·s_weight`` like ORT's PTQ, so a few logits of the
ONNX model differ from torch's by one output quantization step (about 2 % of them on the shipped CNN).

torch's exporter turns each FakeQuantize into QuantizeLinear/DequantizeLinear but leaves float
weights behind a Q, float biases, and MaxPool/Flatten outputs without Q/DQ, so ONNX Runtime would
run the next Conv/Gemm in float. :func:`to_plain_qdq` rewrites that into the form ORT's own
quantizer writes: INT8 weight initializers behind a DequantizeLinear, INT32 biases at scale
``s_input * s_weight``, and a Q/DQ pair (same scale) after each pass-through op.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from quantbench.common.onnx_save import save_model

SEED, EPOCHS, BATCH, LR = 0, 1, 128, 1e-4
FREEZE_AT = 0.8  # observers stop updating after this share of the steps (ranges settle, weights adapt)
OPSET = 17
PASS_THROUGH = ("MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze")
COMPUTE = ("Conv", "Gemm", "MatMul")


# ---- torch side ----------------------------------------------------------------------------------
def qat_qconfig() -> Any:
    """Fake quantizers matching the PTQ defaults: QUInt8 asymmetric activations, QInt8 symmetric
    per-channel weights on [-127, 127] (scale max|w|/127, as ORT's symmetric QInt8 weights)."""
    import torch
    import torch.ao.quantization as tq

    act = tq.FakeQuantize.with_args(observer=tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                    dtype=torch.quint8, qscheme=torch.per_tensor_affine, reduce_range=False)
    weight = tq.FakeQuantize.with_args(observer=tq.MovingAveragePerChannelMinMaxObserver, quant_min=-127,
                                       quant_max=127, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                       ch_axis=0)
    return tq.QConfig(activation=act, weight=weight)


def _fusable_pairs(module: Any) -> list[list[str]]:
    """Conv2d+ReLU and Linear+ReLU neighbours inside nn.Sequential containers (names under ``module``)."""
    from torch import nn

    pairs = []
    for name, seq in module.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        kids = list(seq.named_children())
        for (a, ma), (b, mb) in itertools.pairwise(kids):
            if isinstance(ma, (nn.Conv2d, nn.Linear)) and isinstance(mb, nn.ReLU):
                prefix = f"{name}." if name else ""
                pairs.append([prefix + a, prefix + b])
    return pairs


def prepare_qat(model: Any) -> Any:
    """``model`` (float, trained) wrapped in Quant/DeQuant stubs, Conv/Linear+ReLU fused, fake quantizers
    inserted (torch.ao.quantization eager mode), in train mode."""
    import torch.ao.quantization as tq
    from torch import nn

    class QatWrapper(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.quant, self.model, self.dequant = tq.QuantStub(), inner, tq.DeQuantStub()

        def forward(self, x):
            return self.dequant(self.model(self.quant(x)))

    wrapped = QatWrapper(model)
    wrapped.train()
    pairs = [[f"model.{a}", f"model.{b}"] for a, b in _fusable_pairs(model)]
    if pairs:
        tq.fuse_modules_qat(wrapped, pairs, inplace=True)
    wrapped.qconfig = qat_qconfig()
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice (the API still works)
        warnings.simplefilter("ignore", DeprecationWarning)
        tq.prepare_qat(wrapped, inplace=True)
    return wrapped


def finetune(qat_model: Any, x: np.ndarray, y: np.ndarray, *, epochs: int = EPOCHS, batch: int = BATCH,
             lr: float = LR, seed: int = SEED, max_batches: int | None = None,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``qat_model`` (from :func:`prepare_qat`) with Adam on preprocessed images ``x`` and labels ``y``;
    observers freeze after ``FREEZE_AT`` of the steps. Returns what ran (steps, final loss, seconds)."""
    import torch
    import torch.ao.quantization as tq
    from torch import nn

    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))
    gen = torch.Generator().manual_seed(seed)
    per_epoch = (len(xt) + batch - 1) // batch
    total = min(epochs * per_epoch, max_batches) if max_batches else epochs * per_epoch
    freeze_step = max(1, int(total * FREEZE_AT))
    opt = torch.optim.Adam(qat_model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    qat_model.train()
    step, loss, t0 = 0, None, time.time()
    while step < total:
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(perm), batch):
            if step >= total:
                break
            if step == freeze_step:
                qat_model.apply(tq.disable_observer)
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss = loss_fn(qat_model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            step += 1
            if step % 100 == 0 or step == total:
                log(f"step {step}/{total}: loss {loss.item():.3f} ({time.time() - t0:.0f} s)")
    qat_model.apply(tq.disable_observer)
    qat_model.eval()
    return {"steps": step, "final_loss": round(float(loss.item()), 4) if loss is not None else None,
            "train_seconds": round(time.time() - t0, 1), "observers_frozen_at_step": freeze_step}


def fake_quant_accuracy(qat_model: Any, x: np.ndarray, y: np.ndarray, batch: int = 1000) -> float:
    """Top-1 of the fake-quantized torch model (what training optimised), for comparison with the export."""
    import torch

    qat_model.eval()
    hits = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = qat_model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch], dtype=np.float32)))
            hits += int((logits.argmax(1).numpy() == y[i:i + batch]).sum())
    return hits / max(1, len(x))


@contextlib.contextmanager
def exportable(qat_model: Any) -> Iterator[tuple[int, int] | None]:
    """Within this block the weight fake quantizers clamp to their int8 type's full range (torch's ONNX
    exporter refuses [-127, 127]); yields the trained range, to which :func:`to_plain_qdq` clips the
    integers again. The scales do not change (the observers are off when exporting)."""
    import torch

    # FakeQuantize clamps to its observer's quant_min/quant_max (it keeps copies of its own, unused)
    holders = [h for m in qat_model.modules() if hasattr(m, "weight_fake_quant")
               for h in (m.weight_fake_quant, m.weight_fake_quant.activation_post_process)]
    trained = {h: (int(h.quant_min), int(h.quant_max)) for h in holders}
    if len(set(trained.values())) > 1:
        raise ValueError("QAT export needs one weight integer range for all layers, "
                         f"not {sorted(set(trained.values()))}")
    try:
        for h in holders:
            h.quant_min, h.quant_max = (-128, 127) if h.dtype == torch.qint8 else (0, 255)
        yield next(iter(trained.values()), None)
    finally:
        for h, (low, high) in trained.items():
            h.quant_min, h.quant_max = low, high


def export_qdq(qat_model: Any, out: Path, input_shape: tuple[int, ...], opset: int = OPSET) -> Path:
    """Export a trained QAT model to plain QDQ ONNX at ``out`` (input ``input``, output ``logits``,
    dynamic batch); raises ValueError when the graph cannot be made plain QDQ."""
    import onnx
    import torch
    import torch.ao.quantization as tq

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    qat_model.apply(tq.disable_observer)  # observers would export as copy ops
    qat_model.eval()
    tmp = out.with_suffix(".raw.onnx")
    with exportable(qat_model) as weight_range, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(qat_model, (torch.zeros((1, *input_shape)),), str(tmp), opset_version=opset,
                          dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    model = to_plain_qdq(onnx.load(str(tmp)), weight_range)
    tmp.unlink()
    onnx.checker.check_model(model, full_check=True)
    staged = out.with_suffix(".tmp.onnx")
    save_model(model, staged)
    staged.replace(out)
    return out


# ---- ONNX side -----------------------------------------------------------------------------------
def to_plain_qdq(model: Any, weight_range: tuple[int, int] | None = None) -> Any:
    """Rewrite torch's fake-quant export into ORT-style QDQ (see the module docstring); returns ``model``.

    Weights are rounded as torch's fake quantizer rounds them, ``clip(nearbyint(w·(1/s)) + z)`` in
    float32 (``w/s`` differs in the last bit now and then), clipped to ``weight_range`` (the trained
    quantizers' integer range; default the zero point type's)."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    # Constant Identity nodes (torch shares one zero point through Identity): make them initializers.
    for node in [n for n in g.node if n.op_type == "Identity" and n.input[0] in inits]:
        arr = numpy_helper.to_array(inits[node.input[0]])
        g.initializer.append(numpy_helper.from_array(arr, node.output[0]))
        inits[node.output[0]] = g.initializer[-1]
        g.node.remove(node)

    def arr(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name])

    # Q(float weight initializer) -> integer initializer feeding the DequantizeLinear directly.
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for q in [n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] in inits]:
        w, scale, zp = arr(q.input[0]), arr(q.input[1]), arr(q.input[2])
        axis = next((a.i for a in q.attribute if a.name == "axis"), 1)
        shape = [1] * w.ndim
        if scale.ndim == 1 and scale.size > 1:
            shape[axis] = scale.size
        info = np.iinfo(zp.dtype)
        low, high = weight_range if weight_range is not None else (info.min, info.max)
        inv = (np.float32(1) / scale.astype(np.float32)).reshape(shape)  # torch: inv_scale = 1.0f / scale
        qw = np.clip(np.rint(w.astype(np.float32) * inv) + zp.astype(np.int64).reshape(shape),
                     max(low, info.min), min(high, info.max))
        name = q.input[0] + "_quantized"
        g.initializer.append(numpy_helper.from_array(qw.astype(zp.dtype), name))
        inits[name] = g.initializer[-1]
        for c in consumers.get(q.output[0], []):
            for k, i in enumerate(c.input):
                if i == q.output[0]:
                    c.input[k] = name
        g.node.remove(q)

    producer = {o: n for n in g.node for o in n.output}

    # Pass-through ops fed by a DequantizeLinear get a Q/DQ pair (same scale) on their output, so the
    # next compute node sees a DQ input like in ORT's own QDQ files.
    for node in [n for n in g.node if n.op_type in PASS_THROUGH]:
        src = producer.get(node.input[0])
        if src is None or src.op_type != "DequantizeLinear" or inits.get(src.input[1]) is None \
                or arr(src.input[1]).size != 1:
            continue
        out = node.output[0]
        new_out = out + "_float"
        node.output[0] = new_out
        qn = helper.make_node("QuantizeLinear", [new_out, src.input[1], src.input[2]], [out + "_q"],
                              name=f"{node.name or out}_QuantizeLinear")
        dqn = helper.make_node("DequantizeLinear", [out + "_q", src.input[1], src.input[2]], [out],
                               name=f"{node.name or out}_DequantizeLinear")
        pos = list(g.node).index(node)
        g.node.insert(pos + 1, qn)
        g.node.insert(pos + 2, dqn)
        producer.update({new_out: node, out + "_q": qn, out: dqn})

    # Float biases -> INT32 at scale s_input * s_weight (zero point 0) behind a DequantizeLinear.
    for node in [n for n in g.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2 and n.input[2] in inits]:
        dq_x, dq_w = producer.get(node.input[0]), producer.get(node.input[1])
        if not (dq_x is not None and dq_w is not None and dq_x.op_type == dq_w.op_type == "DequantizeLinear"):
            continue
        if node.op_type == "Gemm" and any(a.name == "transB" and a.i == 0 for a in node.attribute):
            continue  # per-channel weight scales are on axis 0 only when transB = 1
        bias = arr(node.input[2]).astype(np.float64)
        scale = (arr(dq_x.input[1]).astype(np.float64) * arr(dq_w.input[1]).astype(np.float64)).reshape(-1)
        scale = np.broadcast_to(scale, bias.shape).astype(np.float32)
        qb = np.clip(np.rint(bias / scale), -2**31, 2**31 - 1).astype(np.int32)
        base = node.input[2]
        g.initializer.extend([numpy_helper.from_array(qb, base + "_quantized"),
                              numpy_helper.from_array(scale, base + "_quantized_scale"),
                              numpy_helper.from_array(np.zeros_like(qb), base + "_quantized_zero_point")])
        dqb = helper.make_node("DequantizeLinear", [base + "_quantized", base + "_quantized_scale",
                                                    base + "_quantized_zero_point"], [base + "_dequantized"],
                               name=f"{base}_DequantizeLinear", axis=0)
        g.node.insert(list(g.node).index(node), dqb)
        node.input[2] = base + "_dequantized"

    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)
    for inp in [i for i in g.input if i.name not in used]:
        g.input.remove(inp)
    problems = qdq_problems(model)
    if problems:
        raise ValueError(f"QAT export is not plain QDQ: {problems[0]}")
    return model


def qdq_problems(model: Any) -> list[str]:
    """Compute nodes whose data input or weight does not come from a DequantizeLinear (with an integer
    initializer for the weight): what would make ORT run them in float. Empty when the file is plain QDQ.
    A node whose weight is a plain float initializer was left float on purpose (conv-only or dense-only QAT)."""
    from onnx import TensorProto

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    problems = []
    for node in g.node:
        if node.op_type not in COMPUTE:
            continue
        if getattr(producer.get(node.input[1]), "op_type", None) != "DequantizeLinear":
            continue  # a float weight: left float on purpose (its input may still carry a Q/DQ from upstream)
        for k, role in ((0, "input"), (1, "weight")):
            src = producer.get(node.input[k])
            if src is None or src.op_type != "DequantizeLinear":
                problems.append(f"{node.op_type} {node.name or node.output[0]}: {role} not from a DequantizeLinear")
            elif k == 1 and (src.input[0] not in inits
                             or inits[src.input[0]].data_type not in (TensorProto.INT8, TensorProto.UINT8)):
                problems.append(f"{node.op_type} {node.name or node.output[0]}: weight is not an INT8 initializer")
    return problems


# ---- the Fashion-MNIST example -------------------------------------------------------------------
def run_fashion(out: Path, *, epochs: int = EPOCHS, max_batches: int | None = None, eval_samples: int | None = None,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """QAT fine-tune of the shipped Fashion-MNIST CNN from its FP32 weights; writes ``out`` (QDQ ONNX) and
    ``out`` with suffix ``.json`` (recipe, torch fake-quant accuracy, sha256). Returns the recipe."""
    import torch

    from quantbench.calibration_data import Preprocess, open_source

    from .registry import ASSETS, resolve_model
    from .small_cnns import FashionNormalCNN
    from .torch_models import load_state_dict

    torch.manual_seed(SEED)
    spec = resolve_model("fashion_cnn")
    pre = Preprocess.from_dict(spec.preprocess)
    source = open_source("fashion-mnist")
    train, test = source.calibration, source.evaluation
    x_train, y_train = pre.apply(train.images), np.asarray(train.labels)
    n_eval = len(test.labels) if eval_samples is None else min(eval_samples, len(test.labels))
    x_test, y_test = pre.apply(test.images[:n_eval]), np.asarray(test.labels[:n_eval])
    model = FashionNormalCNN()
    model.load_state_dict(load_state_dict(ASSETS / "fashion_cnn.pt"))
    qat = prepare_qat(model)
    ran = finetune(qat, x_train, y_train, epochs=epochs, max_batches=max_batches, log=log)
    acc = fake_quant_accuracy(qat, x_test, y_test)
    log(f"fake-quantized torch model: top-1 {acc:.4f} on {n_eval} test images")
    export_qdq(qat, out, tuple(spec.input_shape))
    recipe = {"model": "fashion_cnn (FashionNormalCNN), from exporters/assets/fashion_cnn.pt",
              "method": "torch.ao.quantization eager QAT (prepare_qat, Conv/Linear+ReLU fused)",
              "fake_quant": "activations QUInt8 asymmetric per tensor (moving-average min/max), weights QInt8 "
                            "symmetric per output channel on [-127, 127] (scale max|w|/127); biases float "
                            "(INT32 in the export)",
              "train_data": f"Fashion-MNIST {source.info.get('variant', '')} calibration split, {len(y_train)} images",
              "seed": SEED, "epochs": epochs, "max_batches": max_batches, "batch": BATCH, "optimizer": f"Adam lr={LR}",
              **ran, "torch_fake_quant_top1": round(acc, 4), "eval_samples": n_eval, "torch": torch.__version__,
              "opset": OPSET, "sha256": hashlib.sha256(Path(out).read_bytes()).hexdigest()}
    Path(out).with_suffix(".json").write_text(json.dumps(recipe, indent=1) + "\n")
    return recipe


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quantbench.exporters.qat", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="where to write the QDQ ONNX file")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--max-batches", type=int, default=None, help="stop after this many training steps")
    args = ap.parse_args(argv)
    if args.epochs < 1 or (args.max_batches is not None and args.max_batches < 1):
        print("error: --epochs and --max-batches must be >= 1")
        return 2
    try:
        recipe = run_fashion(args.out, epochs=args.epochs, max_batches=args.max_batches)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return 1
    print(f"wrote {args.out} ({recipe['steps']} steps in {recipe['train_seconds']} s, "
          f"fake-quant top-1 {recipe['torch_fake_quant_top1']:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
