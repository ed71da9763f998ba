"""How long a rank waits before it declares its peer stalled (psgd/runtime/patience.py)."""

import pytest

from psgd.runtime.patience import FIRST_S, FLOOR_S, GRACE_S, WORKER, Patience, grace


def test_a_fixed_timeout_is_kept_and_scaled():
    assert Patience(4.0).seconds() == 4.0
    p = Patience(4.0, WORKER)
    p.observe(100.0)
    assert p.seconds() == 8.0


def test_a_following_timeout_covers_start_up_then_the_slowest_round():
    p = Patience(0.0)
    assert p.seconds() == FIRST_S
    p.observe(30.0)  # start-up
    assert p.seconds() == 60.0 == max(FLOOR_S, 2 * 30.0)
    p.observe(0.1)
    assert p.seconds() == 60.0
    p.observe(5.0)  # a slow round (an evaluation): 20x the slowest
    assert p.seconds() == 100.0


@pytest.mark.parametrize("seconds", [0.5, 8.0, 120.0, 1200.0])
def test_rank_1_speaks_first_for_a_silent_server(seconds):
    assert grace(seconds, 1) == 0.0
    for rank in (2, 3, 64):
        assert grace(seconds, rank) >= GRACE_S and grace(seconds, rank) >= 0.25 * seconds
    assert grace(seconds, 2) == grace(seconds, 64)  # one step: the job still ends soon if rank 1 is gone
