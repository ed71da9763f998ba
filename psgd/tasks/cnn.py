"""Small models for CIFAR-shaped inputs, for CPU runs: an MLP and a LeNet-style CNN.

mlp: 3072 -> 8w -> 8w -> classes with ReLU (w = 64: 512 hidden units).
cnn: two 5x5 conv (w/2, w channels) + norm + ReLU + 2x2 max-pool, then 8w -> classes.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def mlp(name: str, classes: int, width: int, norm: Callable[[int], nn.Module]) -> nn.Module:
    hidden = 8 * width
    layers = [nn.Flatten(), nn.Linear(3072, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden, classes))


def cnn(name: str, classes: int, width: int, norm: Callable[[int], nn.Module]) -> nn.Module:
    c1, c2 = max(1, width // 2), width
    return nn.Sequential(
        nn.Conv2d(3, c1, 5, padding=2), norm(c1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5, padding=2), norm(c2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * 64, 8 * width), nn.ReLU(), nn.Linear(8 * width, classes),
    )  # fmt: skip
