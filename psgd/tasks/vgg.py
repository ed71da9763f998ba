"""VGG-11 and VGG-19 for 32x32 inputs (Simonyan & Zisserman 2015; the CIFAR form used in
paper 1's experiments): five stages of 3x3 conv + norm + ReLU, each followed by a 2x2
max-pool, widths w, 2w, 4w, 8w, 8w (w = 64), then one linear layer on the 1x1x8w map.
With BatchNorm on CIFAR-10: VGG-11 has 9,231,114 parameters, VGG-19 20,040,522.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

CONVS_PER_STAGE = {"vgg11": (1, 1, 2, 2, 2), "vgg19": (2, 2, 4, 4, 4)}
STAGE_WIDTH = (1, 2, 4, 8, 8)  # multiples of w


class VGG(nn.Module):
    def __init__(self, convs: tuple[int, ...], classes: int, width: int, norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for count, multiple in zip(convs, STAGE_WIDTH, strict=True):
            for _ in range(count):
                c_out = width * multiple
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1), norm(c_out), nn.ReLU(inplace=True)]
                c_in = c_out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Linear(c_in, classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def vgg(name: str, classes: int, width: int, norm: Callable[[int], nn.Module]) -> VGG:
    return VGG(CONVS_PER_STAGE[name], classes, width, norm)
