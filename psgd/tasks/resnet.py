"""ResNet-18 and ResNet-34, CIFAR variant (He et al. 2016, as in the LIEC-SGD, EF21 and Sahu
et al. experiments): 3x3 stem with stride 1 and no max-pool, four stages of BasicBlocks
with widths w, 2w, 4w, 8w (w = 64 in the papers), global average pool, one linear layer.
ResNet-18 on CIFAR-10 has 11,173,962 parameters; ResNet-34 21,282,122 (w = 64, BatchNorm).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
            norm(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            norm(c_out),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:  # projection shortcut (option B)
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), norm(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """The CIFAR trunk: a 3x3 stem, stages of ``blocks`` blocks of widths w, 2w, 4w, 8w (the
    first of each later stage strided), global average pool, one linear layer. ``block`` builds
    each block (c_in, c_out, stride, norm): BasicBlock here, SENet-18's in senet.py."""

    def __init__(
        self,
        blocks: tuple[int, ...],
        classes: int,
        width: int,
        norm: Callable[[int], nn.Module],
        block: Callable[..., nn.Module] = BasicBlock,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, 1, 1, bias=False), norm(width), nn.ReLU(inplace=True)]
        c_in = width
        for stage, count in enumerate(blocks):
            c_out = width * 2**stage
            for i in range(count):
                layers.append(block(c_in, c_out, 2 if stage > 0 and i == 0 else 1, norm))
                c_in = c_out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(c_in, classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def resnet(name: str, classes: int, width: int, norm: Callable[[int], nn.Module]) -> ResNet:
    return ResNet(BLOCKS[name], classes, width, norm)
