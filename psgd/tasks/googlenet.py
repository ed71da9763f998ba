"""GoogLeNet, CIFAR variant (Szegedy et al. 2015, Inception v1; the form of kuangliu's
pytorch-cifar that Sahu et al.'s experiments train): a 3x3 stem of 192 channels with stride 1
and no pooling, then nine Inception modules in three stages at 32x32, 16x16 and 8x8 (3x3
max-pools with stride 2 between stages), global average pool and one linear layer on 1024
channels. No auxiliary classifiers, no dropout.

An Inception module concatenates four branches of conv + norm + ReLU layers:
    1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 (the paper's 5x5 as two 3x3) | 3x3 max-pool -> 1x1
Every convolution has a bias. Channel counts are the paper's Table 1 scaled by w / 64 (w = 64:
the paper's). With BatchNorm (w = 64): 6,166,250 parameters on CIFAR-10, 6,258,500 on CIFAR-100.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

STEM = 192
# per Inception module at w = 64: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection);
# modules 3a-3b, 4a-4e, 5a-5b of the paper's Table 1
STAGES = (
    ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)),
    (
        (192, 96, 208, 16, 48, 64),
        (160, 112, 224, 24, 64, 64),
        (128, 128, 256, 24, 64, 64),
        (112, 144, 288, 32, 64, 64),
        (256, 160, 320, 32, 128, 128),
    ),
    ((256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)),
)


def chain(c_in: int, links: list[tuple[int, int]], norm: Callable[[int], nn.Module]) -> list[nn.Module]:
    """conv + norm + ReLU for each (channels, kernel) of links, one after another."""
    layers: list[nn.Module] = []
    for c_out, kernel in links:
        layers += [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2), norm(c_out), nn.ReLU(inplace=True)]
        c_in = c_out
    return layers


class Inception(nn.Module):
    def __init__(self, c_in: int, channels: tuple[int, ...], norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        n1, r3, n3, r5, n5, pool = channels
        convs = ([(n1, 1)], [(r3, 1), (n3, 3)], [(r5, 1), (n5, 3), (n5, 3)])
        self.branches = nn.ModuleList(
            [nn.Sequential(*chain(c_in, links, norm)) for links in convs]
            + [nn.Sequential(nn.MaxPool2d(3, 1, 1), *chain(c_in, [(pool, 1)], norm))]
        )
        self.c_out = n1 + n3 + n5 + pool

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class GoogLeNet(nn.Module):
    def __init__(self, classes: int, width: int, norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        c = scaled(STEM, width)
        layers = chain(3, [(c, 3)], norm)
        for stage, modules in enumerate(STAGES):
            if stage > 0:
                layers.append(nn.MaxPool2d(3, 2, 1))
            for channels in modules:
                layers.append(Inception(c, tuple(scaled(n, width) for n in channels), norm))
                c = layers[-1].c_out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(c, classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def scaled(channels: int, width: int) -> int:
    """The paper's channel count at w = 64, scaled to width w (rounded down, at least 1)."""
    return max(1, channels * width // 64)


def googlenet(name: str, classes: int, width: int, norm: Callable[[int], nn.Module]) -> GoogLeNet:
    return GoogLeNet(classes, width, norm)
