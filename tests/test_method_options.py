"""The step-size schedule every method shares: milestones, linear warm-up, and their checks."""

import pytest

from psgd.methods.options import MethodOptions


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
