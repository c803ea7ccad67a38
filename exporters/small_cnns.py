"""The small CNNs of the classic quantization studies (torch imported by the caller)."""
from __future__ import annotations

import torch
from torch import nn


class FashionNormalCNN(nn.Module):
    """The Fashion-MNIST "Normal CNN": 2 × (conv 3×3 + ReLU + max-pool 2) + dense 128 + dense 10."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = ((image_size - 2) // 2 - 2) // 2
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(),
                                        nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class TwoConvCNN(nn.Module):
    """A 2-conv MNIST/CIFAR CNN (5×5 convs with padding, 2 pools, one hidden dense layer)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * side * side, 64), nn.ReLU(),
                                        nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class Cifar10CNN(nn.Module):
    """A small CIFAR-10 CNN: 4 × (conv 3×3 + BN + ReLU), the first three followed by max-pool 2, then dense 10.

    BatchNorm folds into the convolutions on ONNX export, so the exported graph is Conv/Relu/MaxPool/Gemm.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(
            *block(in_channels, 32), nn.MaxPool2d(2),
            *block(32, 64), nn.MaxPool2d(2),
            *block(64, 128), nn.MaxPool2d(2),
            *block(128, 128),
        )
        side = image_size // 8
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(128 * side * side, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
