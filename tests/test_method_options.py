"""The step-size schedule every method shares: milestones, linear warm-up, and their checks."""

import pytest
import torch

from psgd import config
from psgd.errors import ConfigError
from psgd.methods import build
from psgd.methods.optim import SGDStep
from psgd.methods.options import MethodOptions
from psgd.tasks import task_class


def test_milestones_multiply_by_gamma():
    o = MethodOptions(lr=1.0, lr_milestones=[10, 20], lr_gamma=0.5)
    assert [o.lr_at(t) for t in (0, 9, 10, 19, 20, 99)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_warm_up_rises_linearly_from_its_start_to_lr():
    """Sahu et al.'s schedule: from 0.1 to 1.6 over 125 rounds, then x0.1 at the milestones."""
    o = MethodOptions(lr=1.6, lr_warmup=125, lr_warmup_start=0.1, lr_milestones=[3750], lr_gamma=0.1)
    assert o.lr_at(0) == pytest.approx(0.1)
    assert o.lr_at(50) == pytest.approx(0.1 + 1.5 * 50 / 125)
    assert o.lr_at(124) < 1.6 and o.lr_at(125) == pytest.approx(1.6) and o.lr_at(3749) == pytest.approx(1.6)
    assert o.lr_at(3750) == pytest.approx(0.16)
    steps = [o.lr_at(t) for t in range(126)]
    assert all(b > a for a, b in zip(steps, steps[1:], strict=False))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"lr_warmup": -1}, "lr_warmup"),
        ({"lr_warmup": 5, "lr_warmup_start": 2.0}, "above lr"),
        ({"lr": 0.0}, "method.lr must be > 0"),
    ],
)
def test_bad_schedules_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        MethodOptions(**{"lr": 1.0, **options})


def test_biases_and_norm_scales_can_be_exempt_from_weight_decay():
    """decay_norm_and_bias = false: weight decay only on tensors of >= 2 dimensions (Sahu et al.'s setting)."""

    cfg = config.from_dict(
        {
            "task": {"name": "digits_mlp", "hidden": 64},
            "method": {"name": "sgd", "weight_decay": 0.5, "decay_norm_and_bias": False},
        }
    )
    task = task_class("digits_mlp")(cfg.task, 0, 2)
    method = build(cfg.method, task)
    mask = method.decay_mask
    assert mask.tolist() == [1.0] * 4096 + [0.0] * 64 + [1.0] * 640 + [0.0] * 10  # W1, b1, W2, b2
    x, g = torch.ones(4810), torch.zeros(4810)
    d = SGDStep(method.options, mask).direction(x, g)
    assert torch.equal(d, 0.5 * mask)
    assert (
        build(
            config.from_dict({**cfg.to_dict(), "method": {"name": "sgd", "weight_decay": 0.5}}).method, task
        ).decay_mask
        is None
    )


def test_a_task_without_layers_cannot_exempt_them():

    cfg = config.from_dict({"task": {"name": "synthetic"}, "method": {"name": "sgd", "decay_norm_and_bias": False}})
    with pytest.raises(ConfigError, match="no layers to exempt"):
        build(cfg.method, task_class("synthetic")(cfg.task, 0, 2))
