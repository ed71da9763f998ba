"""Sahu et al.'s CIFAR models (ResNet-18, SENet-18, GoogLeNet): parameter counts pinned to the
reference implementation's, and every width and normalisation builds a working model."""

import pytest
import torch

from psgd.tasks.models import NORMS, build_model
from psgd.tasks.senet import SEPreActBlock

# d at w = 64 with BatchNorm, counted by instantiating the reference code (kuangliu/pytorch-cifar
# at 49b7aa97b0c12fe0d4054e670403a16b6b834ddd): models/senet.py SENet(PreActBlock, [2, 2, 2, 2],
# num_classes), models/googlenet.py GoogLeNet() with its Linear(1024, 10) replaced by
# Linear(1024, 100) for 100 classes (the reference fixes 10), models/resnet.py ResNet(BasicBlock,
# [2, 2, 2, 2], 100). Sahu et al.'s table of d (sands-lab/rethinking-sparsification at 0687b1b,
# cnn-lstm/run.sh) lists these counts for CIFAR-10 and for GoogLeNet and ResNet-18 on CIFAR-100.
# Their released files differ in places: their senet.py files hold another SE-ResNet-18
# (post-activation blocks, biased convolutions, 516 channels in the last stage: 11,389,726 and
# 11,436,256 parameters; the table's CIFAR-100 SENet is the latter), and their CIFAR-100
# googlenet.py a three-convolution stem (6,402,564).
REFERENCE = {
    ("resnet18", 100): 11_220_132,  # 10 classes: tests/test_tasks_cifar.py
    ("senet18", 10): 11_260_354,
    ("senet18", 100): 11_306_524,
    ("googlenet", 10): 6_166_250,
    ("googlenet", 100): 6_258_500,
}


@pytest.mark.parametrize("name, classes", REFERENCE, ids=lambda v: str(v))
def test_parameter_count_is_the_reference_implementations(name, classes):
    model = build_model(name, classes)
    assert sum(p.numel() for p in model.parameters()) == REFERENCE[name, classes]


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", ["senet18", "googlenet"])
def test_small_widths_and_every_norm_give_finite_logits(name, norm, one_thread):
    torch.manual_seed(0)
    model = build_model(name, 100, width=4, norm=norm)
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 100) and bool(logits.isfinite().all())
    assert (norm == "batch") == bool(list(model.buffers()))  # group and none: nothing outside the flat vector


def test_identity_shortcut_adds_the_block_input_unchanged(one_thread):
    """With norm = none the pre-activation is relu(x): done in place, it would overwrite the x
    that the identity shortcut adds."""
    block = SEPreActBlock(8, 8, 1, NORMS["none"])
    x = torch.randn(2, 8, 4, 4)
    before = x.clone()
    y = block(x)
    assert torch.equal(x, before)
    u = block.body(x.relu())
    assert torch.allclose(y, u * block.excitation(u) + x, atol=1e-6)
