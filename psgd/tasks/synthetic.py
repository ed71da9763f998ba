"""A separable quadratic of any size, for benchmarks and tests.

f_i(x) = 1/2 sum_j a_ij (x_j - b_ij)^2 with a_ij in [mu, L], b_ij ~ N(0, 1), generated
from (seed, worker); the stochastic gradient adds N(0, noise^2) per coordinate.
f = (1/n) sum_i f_i is minimised at x* = sum_i a_i b_i / sum_i a_i. The workers' quadratics differ
(heterogeneous data): grad f_i(x*) != 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from psgd.seeding import generator
from psgd.tasks.base import Task, TaskOptions, WorkerOracle
from psgd.tasks.registry import register


@dataclass(frozen=True)
class SyntheticOptions(TaskOptions):
    dim: int = 1000
    mu: float = 0.1
    L: float = 1.0
    noise: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim < 1:
            raise ValueError(f"task.dim must be >= 1, got {self.dim}")
        if not 0 < self.mu <= self.L:
            raise ValueError(f"task.mu and task.L must satisfy 0 < mu <= L, got {self.mu}, {self.L}")


class QuadraticOracle(WorkerOracle):
    def __init__(self, a: torch.Tensor, b: torch.Tensor, noise: float, seed: int, worker: int):
        super().__init__()
        self.a, self.b, self.noise, self.seed, self.worker = a, b, noise, seed, worker

    def __call__(self, x: torch.Tensor, sample: int = 0) -> torch.Tensor:
        diff = x - self.b
        grad = self.a * diff
        if sample == 0:
            self.last_loss = 0.5 * float((self.a * diff * diff).sum())
        if self.noise:
            g = generator(self.seed, self.worker, self.round, f"noise/{sample}", x.device)
            grad += self.noise * torch.randn(x.numel(), generator=g, device=x.device)
        return grad


@register
class Synthetic(Task):
    name = "synthetic"
    Options = SyntheticOptions

    @property
    def dim(self) -> int:
        return self.options.dim

    def coefficients(self, worker: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        o = self.options
        g = generator(self.seed, worker, 0, "synthetic", device)
        a = o.mu + (o.L - o.mu) * torch.rand(o.dim, generator=g, device=device)
        return a, torch.randn(o.dim, generator=g, device=device)

    def init_params(self) -> torch.Tensor:
        return torch.zeros(self.options.dim)

    def oracle(self, worker, device):
        a, b = self.coefficients(worker, device)
        return QuadraticOracle(a, b, self.options.noise, self.seed, worker)

    def evaluate(self, x):
        coeffs = [self.coefficients(w) for w in range(1, self.n + 1)]
        sum_a = sum(a for a, _ in coeffs)
        x_star = sum(a * b for a, b in coeffs) / sum_a

        def f(z):
            return sum(0.5 * float((a * (z - b) ** 2).sum()) for a, b in coeffs) / self.n

        x = x.cpu()
        return {"suboptimality": f(x) - f(x_star), "dist_to_opt": float((x - x_star).norm())}

    def constants(self):
        """Hessians are diagonal: L_i = max_j a_ij; f has a_j = mean_i a_ij, so L = max_j a_j, mu = min_j a_j."""
        a = torch.stack([self.coefficients(w)[0] for w in range(1, self.n + 1)]).double()
        mean_a = a.mean(0)
        return {"L": float(mean_a.max()), "mu": float(mean_a.min()), "L_i": [float(v) for v in a.max(1).values]}
