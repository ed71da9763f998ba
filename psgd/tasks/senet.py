"""SENet-18, CIFAR variant (Hu et al. 2018, squeeze-and-excitation; the form of kuangliu's
pytorch-cifar that Sahu et al.'s experiments train): ResNet-18's CIFAR layout (3x3 stem with
stride 1, no max-pool, stages of two blocks with widths w, 2w, 4w, 8w, w = 64) built from
pre-activation blocks (He et al. 2016b), each ending in a squeeze-and-excitation gate:

    u = conv(relu(norm(conv(relu(norm(x))))))
    y = u * sigmoid(W2 relu(W1 avgpool(u))) + shortcut(x)

W1: c -> c/16 and W2: c/16 -> c (1x1 convolutions with biases). The shortcut is the identity,
or a strided 1x1 convolution of relu(norm(x)) where the shape changes. Global average pool and
one linear layer follow the last stage. With BatchNorm (w = 64): 11,260,354 parameters on
CIFAR-10, 11,306,524 on CIFAR-100.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from psgd.tasks.resnet import ResNet

BLOCKS = {"senet18": (2, 2, 2, 2)}
REDUCTION = 16  # the excitation's bottleneck: c -> c / 16 -> c


class SEPreActBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.pre = nn.Sequential(norm(c_in), nn.ReLU())  # not in place: with norm = none it would overwrite x
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
            norm(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
        )
        # the projection reads the pre-activated input, the identity the raw one (as the reference)
        self.projection = None
        if stride != 1 or c_in != c_out:
            self.projection = nn.Conv2d(c_in, c_out, 1, stride, bias=False)
        squeezed = max(1, c_out // REDUCTION)  # at least one unit for CPU widths under 16
        self.excitation = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(c_out, squeezed, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(squeezed, c_out, 1),
            nn.Sigmoid(),
        )

    def forward(self, x):
        a = self.pre(x)
        u = self.body(a)
        return u * self.excitation(u) + (x if self.projection is None else self.projection(a))


def senet(name: str, classes: int, width: int, norm: Callable[[int], nn.Module]) -> ResNet:
    """ResNet-18's trunk with squeeze-and-excitation pre-activation blocks."""
    return ResNet(BLOCKS[name], classes, width, norm, block=SEPreActBlock)
