"""Adaptive average pooling that the ONNX exporter accepts at any input size (torch imported by the caller)."""
from __future__ import annotations

import torch
from torch import nn


class ExactAdaptiveAvgPool2d(nn.Module):
    """``AdaptiveAvgPool2d(output_size)`` for one fixed input size, as prefix sums gathered at PyTorch's bin
    edges (CumSum, Gather, Sub, Div in ONNX: float ops that no quantizer treats as weights)."""

    def __init__(self, output_size: tuple[int, int], input_size: tuple[int, int]) -> None:
        super().__init__()
        for axis, (n_in, n_out) in enumerate(zip(input_size, output_size, strict=True)):
            starts, ends = bins(n_in, n_out)
            self.register_buffer(f"start{axis}", torch.tensor(starts, dtype=torch.long), persistent=False)
            self.register_buffer(f"end{axis}", torch.tensor(ends, dtype=torch.long), persistent=False)
            self.register_buffer(f"count{axis}", torch.tensor([e - s for s, e in zip(starts, ends, strict=True)],
                                                              dtype=torch.float32), persistent=False)

    @staticmethod
    def _pool(x: torch.Tensor, dim: int, start: torch.Tensor, end: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        pad = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [1, 0]  # one leading zero along dim
        cs = torch.cumsum(nn.functional.pad(x, pad), dim)
        shape = [1] * x.dim()
        shape[dim] = -1
        return (cs.index_select(dim, end) - cs.index_select(dim, start)) / count.view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._pool(x, -2, self.start0, self.end0, self.count0)
        return self._pool(x, -1, self.start1, self.end1, self.count1)


def exportable_adaptive_pools(module: nn.Module, dummy: torch.Tensor) -> int:
    """Replace each ``AdaptiveAvgPool2d`` whose output size does not divide its input size (at ``dummy``'s
    size) by :class:`ExactAdaptiveAvgPool2d`, which the ONNX exporter accepts; returns how many.

    The TorchScript exporter writes a fixed AveragePool only when the output divides the input
    ("adaptive_avg_pool2d ... output size that are not factor of input size"), e.g. a 7×7 pool on a
    1×1 map at small inputs.
    """
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: sizes.__setitem__(name, tuple(inp[0].shape[-2:])))
             for name, m in module.named_modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    try:
        with torch.no_grad():
            module(dummy)
    finally:
        for h in hooks:
            h.remove()
    replaced = 0
    for name, (h, w) in sizes.items():
        pool = module.get_submodule(name)
        oh, ow = (pool.output_size, pool.output_size) if isinstance(pool.output_size, int) else pool.output_size
        oh, ow = oh or h, ow or w
        if h % oh == 0 and w % ow == 0:
            continue
        parent, _, leaf = name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, leaf, ExactAdaptiveAvgPool2d((oh, ow), (h, w)))
        replaced += 1
    return replaced


def bins(n_in: int, n_out: int) -> tuple[list[int], list[int]]:
    """PyTorch's adaptive pooling bins: ``[floor(i*n_in/n_out), ceil((i+1)*n_in/n_out))``."""
    starts = [(i * n_in) // n_out for i in range(n_out)]
    ends = [-((-(i + 1) * n_in) // n_out) for i in range(n_out)]
    return starts, ends

