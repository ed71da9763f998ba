"""Test problems with known constants and optimum, as gradient functions for psgd.simulate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Problem:
    grads: list  # grads[i](x) = grad f_i(x)
    f: object  # f(x) = (1/n) sum_i f_i(x)
    x_star: np.ndarray
    L: float
    mu: float
    L_i: list[float]

    @property
    def f_star(self) -> float:
        return self.f(self.x_star)


def quadratics(n: int, d: int, seed: int = 0, mu: float = 0.1, L: float = 1.0) -> Problem:
    """Heterogeneous quadratics f_i(x) = 1/2 (x - b_i)^T A_i (x - b_i), A_i = Q_i diag(s_i) Q_i^T
    with spectra in [mu, L] and random centres b_i, so grad f_i(x*) != 0."""
    rng = np.random.default_rng(seed)
    As, bs = [], []
    for _ in range(n):
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        s = rng.uniform(mu, L, d)
        s[0], s[-1] = mu, L
        As.append(q @ np.diag(s) @ q.T)
        bs.append(rng.normal(size=d))
    A = sum(As) / n
    x_star = np.linalg.solve(A, sum(a @ b for a, b in zip(As, bs, strict=True)) / n)
    eig = np.linalg.eigvalsh(A)
    grads = [lambda x, a=a, b=b: a @ (x - b) for a, b in zip(As, bs, strict=True)]

    def f(x):
        return float(sum(0.5 * (x - b) @ a @ (x - b) for a, b in zip(As, bs, strict=True)) / n)

    L_i = [float(np.linalg.eigvalsh(a)[-1]) for a in As]
    return Problem(grads, f, x_star, float(eig[-1]), float(eig[0]), L_i)


def separable(d: int, seed: int = 0, mu: float = 0.1, L: float = 1.0) -> Problem:
    """One worker, f(x) = 1/2 sum_j a_j x_j^2 with a in [mu, L] (a_0 = mu, a_1 = L), x* = 0."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(mu, L, d)
    a[0], a[1] = mu, L
    return Problem([lambda x: a * x], lambda x: float(0.5 * (a * x * x).sum()), np.zeros(d), L, mu, [L])
