"""Image models by name, and the normalisation layer they use.

Normalisation (task.norm):
  "batch" (default, as in the papers): BatchNorm. Its affine weights are parameters, in the
      flat vector and communicated; its running mean and variance are buffers, kept out of
      the flat vector and never communicated. Workers train with batch statistics; the
      server, before each evaluation, re-estimates the running statistics of the model it
      holds from fixed training batches (the same batches every time), then evaluates in
      eval mode, so evaluation is deterministic and needs no extra communication.
  "group": GroupNorm (gcd(32, channels) groups): no buffers at all.
  "none": no normalisation layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from psgd.tasks import googlenet, resnet, senet, vgg
from psgd.tasks.cnn import cnn, mlp

MODELS: dict[str, Callable[..., nn.Module]] = {
    **dict.fromkeys(resnet.BLOCKS, resnet.resnet),
    **dict.fromkeys(senet.BLOCKS, senet.senet),
    "googlenet": googlenet.googlenet,
    **dict.fromkeys(vgg.CONVS_PER_STAGE, vgg.vgg),
    "mlp": mlp,
    "cnn": cnn,
}
NORMS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm2d,
    "group": lambda c: nn.GroupNorm(math.gcd(32, c), c),
    "none": lambda c: nn.Identity(),
}


def build_model(name: str, classes: int, width: int = 64, norm: str = "batch") -> nn.Module:
    return MODELS[name](name, classes, width, NORMS[norm])


def reset_batchnorm(module: nn.Module) -> bool:
    """Prepare the re-estimation of module's BatchNorm running statistics: reset them, switch them
    to a cumulative average (momentum None) and the module to train mode. False when it has none."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    module.train()
    return bool(norms)
