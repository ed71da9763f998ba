"""psgd.simulate: user gradient functions through the real runtime (frames, bytes, ledger)."""

import numpy as np
import pytest
import torch

import psgd
from psgd.compress import registered
from psgd.errors import ConfigError, PsgdError
from psgd.methods import build, method_class
from psgd.methods.theory import Constants
from tests.problems import quadratics
from tests.test_methods_wire import drive


def test_numpy_in_numpy_out_with_losses_and_bytes_per_round():
    p = quadratics(3, 10, seed=0)
    r = psgd.simulate(
        method="ef21",
        uplink="topk:k=1",
        downlink="identity",
        grads=p.grads,
        x0=np.zeros(10),
        lr=0.1,
        rounds=50,
        loss=p.f,
    )
    assert isinstance(r.x, np.ndarray) and r.x.dtype == np.float64 and r.x.shape == (10,)
    assert len(r.losses) == len(r.bytes_up) == len(r.bytes_down) == 50
    assert r.losses[-1] < r.losses[0]
    assert all(b > h for b, h in zip(r.bytes_up, r.body_up, strict=True))  # headers counted too
    assert r.summary["bytes_up"] and len(r.rounds) == 50


def test_torch_in_torch_out_and_theory_lr():
    p = quadratics(2, 8, seed=1, mu=0.3)
    grads = [lambda x, g=g: torch.from_numpy(g(x.numpy())) for g in p.grads]
    r = psgd.simulate(
        "ef21", "identity", grads=grads, x0=torch.zeros(8, dtype=torch.float64), lr="theory", rounds=200, L=p.L, mu=p.mu
    )
    assert isinstance(r.x, torch.Tensor) and r.x.dtype == torch.float64
    # EF21 with no compression (alpha = 1, beta = 0: the L~ term vanishes, no L_i needed) is GD with lr 1/L
    assert np.linalg.norm(r.x.numpy() - p.x_star) < 1e-8


@pytest.mark.parametrize(
    "method, up, options",
    [("ef21", "topk:k=2", {}), ("liec", "scaled_sign", {"period": 4}), ("cser", "topk:k=2", {"period": 3})]
    + ([("diana", "randk:k=3", {}), ("adiana", "randk:k=3", {})] if "randk" in registered() else []),
)
def test_the_wire_changes_nothing(method, up, options):
    """simulate (bytes through frames) == the rules run on the messages directly, to the bit."""
    p = quadratics(3, 12, seed=2, mu=0.3)
    down = "scaled_sign" if method == "liec" else "identity"
    r = psgd.simulate(method, up, down, grads=p.grads, x0=np.zeros(12), lr=0.05, rounds=12, L=p.L, mu=p.mu, **options)
    m = build(
        method_class(method).Options(name=method, uplink=up, downlink=down, lr=0.05, **options),
        constants=Constants(3, 12, p.L, p.mu),
    )
    grads = [lambda x, g=g: torch.from_numpy(g(x.numpy())) for g in p.grads]
    models = []  # observed before each round's server step: round 12's is the model after 12 rounds
    drive(
        m, grads, torch.zeros(12, dtype=torch.float64), 13, lambda t, s, w, g: models.append(m.server_model(s).clone())
    )
    assert np.array_equal(r.x, models[-1].numpy())


def test_bad_input():
    p = quadratics(2, 5, seed=0)
    with pytest.raises(ValueError, match="one gradient function per worker"):
        psgd.simulate("sgd", grads=[], x0=np.zeros(5))
    with pytest.raises(ConfigError, match="unknown compressor"):
        psgd.simulate("sgd", "nope", grads=p.grads, x0=np.zeros(5))
    with pytest.raises(ConfigError, match="unknown method"):
        psgd.simulate("nope", grads=p.grads, x0=np.zeros(5))
    with pytest.raises(PsgdError, match="returned 3 values for x of size 5"):
        psgd.simulate("sgd", grads=[lambda x: np.ones(3)] * 2, x0=np.zeros(5), rounds=2)
    with pytest.raises(ConfigError, match="needs the smoothness constant L"):
        psgd.simulate("ef21", "topk:k=1", grads=p.grads, x0=np.zeros(5), lr="theory")
    with pytest.raises(ConfigError, match="per-worker smoothness constants L_i"):
        psgd.simulate("ef21", "topk:k=1", grads=p.grads, x0=np.zeros(5), lr="theory", L=p.L, mu=p.mu)
    with pytest.raises(ConfigError, match="L_i has 1 values for 2 workers"):
        psgd.simulate("ef21", "topk:k=1", grads=p.grads, x0=np.zeros(5), lr="theory", L=p.L, L_i=[p.L])
    with pytest.raises(ValueError, match="within fp32's range"):
        psgd.simulate("sgd", grads=p.grads, x0=np.full(5, 1e39))


@pytest.mark.parametrize("method", ["sgd", "ef21", "diana"])
def test_an_x0_fp32_cannot_hold_gives_one_model(method):
    """From x0 = 1 + 2^-30 (not an fp32 value): the model each worker's gradient is taken at in round
    t + 1 is the server's model after round t, to the bit, and the loss keeps falling linearly (by
    max_i (1 - lr a_i)^2 = 0.64 a round) far below where an offset x0 - fp32(x0) would stall it (4e-18)."""
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.3, -1.7, 2.1, 0.9])
    seen: list[list[np.ndarray]] = [[], []]
    evaluated: list[np.ndarray] = []

    def grad(worker):
        return lambda x: (seen[worker].append(x.copy()), a * (x - b))[1]

    def loss(x):
        evaluated.append(x.copy())
        return 0.5 * float(a @ (x - b) ** 2)

    x0 = np.full(4, 1 + 2.0**-30)
    r = psgd.simulate(method, grads=[grad(0), grad(1)], x0=x0, lr=0.2, rounds=120, loss=loss)
    for models in seen:
        assert all(np.array_equal(models[t + 1], evaluated[t]) for t in range(119))
    assert all(later <= 0.65 * earlier for earlier, later in zip(r.losses[:100], r.losses[1:101], strict=True))
    assert 0 < r.losses[119] < 1e-22
