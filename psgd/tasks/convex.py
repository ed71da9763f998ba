"""L2-regularised generalised linear models on a bundled data set (paper 2's experiments),
with the constants the theorems need and the exact optimum.

Worker i holds the rows S_i of (A, b) (features standardised, plus a constant column):
    f_i(w) = (1/|S_i|) sum_{j in S_i} loss(a_j^T w, b_j) + (lam/2) ||w||^2,   f = (1/n) sum_i f_i.
With loss'' <= c:  L_i = c lambda_max(A_i^T A_i / |S_i|) + lam,  L = c lambda_max(H) + lam,
mu = lam (+ lambda_min(H) when the loss is a square), H = (1/n) sum_i A_i^T A_i / |S_i|.
w* is found once by Newton's method in float64; evaluation reports f(w) - f(w*) and
paper 2's error ||w - w*||^2 / ||w0 - w*||^2 (w0 = 0).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from psgd.seeding import generator
from psgd.tasks.base import Task, TaskOptions, WorkerOracle
from psgd.tasks.data import shard_indices


@dataclass(frozen=True)
class ConvexOptions(TaskOptions):
    l2: float = 1e-3  # lam, the L2 regularisation (and the strong convexity it guarantees)
    stochastic: bool = False  # False: each worker's full local gradient (paper 2's CGD); True: minibatches

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.l2 > 0:
            raise ValueError(f"task.l2 must be > 0 (it makes f strongly convex), got {self.l2}")


def gram(a: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """A^T diag(weights) A / rows in float64 (numpy: torch's float64 matmul of a transposed view is slow)."""
    an = a.double().numpy()
    wa = an if weights is None else weights.double().numpy()[:, None] * an
    return torch.from_numpy(an.T @ wa / len(an))


class GLMOracle(WorkerOracle):
    def __init__(self, task: ConvexTask, a: torch.Tensor, b: torch.Tensor, worker: int) -> None:
        super().__init__()
        self.task, self.a, self.b, self.worker = task, a, b, worker

    def __call__(self, w: torch.Tensor, sample: int = 0) -> torch.Tensor:
        a, b, o = self.a, self.b, self.task.options
        if o.stochastic:
            g = generator(self.task.seed, self.worker, self.round, f"batch/{sample}")
            idx = torch.randint(len(b), (o.batch_size,), generator=g).to(a.device)
            a, b = a[idx], b[idx]
        z = a @ w
        if sample == 0:
            self.last_loss = float(self.task.loss(z, b).mean()) + 0.5 * o.l2 * float(w @ w)
        return a.T @ self.task.dloss(z, b) / len(b) + o.l2 * w


class ConvexTask(Task):
    """Subclasses give the data (``dataset``) and the loss with its first two derivatives."""

    curvature: float  # c >= loss''
    square_loss: bool = False  # the data term is then strongly convex too

    @abstractmethod
    def dataset(self) -> tuple[np.ndarray, np.ndarray]:
        """(A, b): the rows and targets (labels), float64."""

    @abstractmethod
    def loss(self, z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-sample loss at margins z = A w."""

    @abstractmethod
    def dloss(self, z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """d loss / dz."""

    @abstractmethod
    def d2loss(self, z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """d^2 loss / dz^2 (Newton's method for w*)."""

    def __init__(self, options: ConvexOptions, seed: int, n: int) -> None:
        super().__init__(options, seed, n)
        a, b = self.dataset()
        a = (a - a.mean(0)) / a.std(0)
        a = np.hstack([a, np.ones((len(a), 1))])
        shards = shard_indices(torch.from_numpy(b), n, options.split, seed)
        self.parts = [(torch.from_numpy(a[s.numpy()]), torch.from_numpy(b[s.numpy()])) for s in shards]
        if any(len(bi) == 0 for _, bi in self.parts):
            raise ValueError(f"{len(b)} samples cannot be shared by {n} workers")
        grams = [gram(ai) for ai, _ in self.parts]
        h = sum(grams) / n
        lam, c = options.l2, self.curvature
        self._constants = {
            "L": c * float(torch.linalg.eigvalsh(h)[-1]) + lam,
            "mu": lam + (float(torch.linalg.eigvalsh(h)[0]) if self.square_loss else 0.0),
            "L_i": [c * float(torch.linalg.eigvalsh(gi)[-1]) + lam for gi in grams],
        }
        self.w_star = self._newton()
        self.f_star = self.objective(self.w_star)

    @property
    def dim(self) -> int:
        return self.parts[0][0].shape[1]

    def constants(self) -> dict:
        return self._constants

    def objective(self, w: torch.Tensor) -> float:
        w = w.double()
        data = sum(float(self.loss(ai @ w, bi).mean()) for ai, bi in self.parts) / self.n
        return data + 0.5 * self.options.l2 * float(w @ w)

    def _gradient_hessian(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lam = self.options.l2
        grad = sum(ai.T @ self.dloss(ai @ w, bi) / len(bi) for ai, bi in self.parts) / self.n + lam * w
        hess = sum(gram(ai, self.d2loss(ai @ w, bi)) for ai, bi in self.parts) / self.n
        return grad, hess + lam * torch.eye(len(w), dtype=w.dtype)

    def _newton(self, steps: int = 100) -> torch.Tensor:
        """Damped Newton (step halving until f decreases) from 0, in float64."""
        w = torch.zeros(self.dim, dtype=torch.float64)
        f = self.objective(w)
        for _ in range(steps):
            grad, hess = self._gradient_hessian(w)
            step, t = torch.linalg.solve(hess, grad), 1.0
            if float(grad @ step) < 1e-28:  # squared Newton decrement: f is at f* to float64 precision
                break
            while self.objective(w - t * step) > f and t > 1e-8:
                t /= 2
            w = w - t * step
            f = self.objective(w)
        return w

    def init_params(self) -> torch.Tensor:
        return torch.zeros(self.dim)

    def oracle(self, worker, device):
        a, b = self.parts[worker - 1]
        return GLMOracle(self, a.float().to(device), b.float().to(device), worker)

    def evaluate(self, x):
        w = x.detach().cpu().double()
        metrics = {
            "relative_error": float((w - self.w_star).square().sum() / self.w_star.square().sum()),
            "suboptimality": self.objective(w) - self.f_star,
            "objective": self.objective(w),
        }
        return metrics | self.extra_metrics(w)

    def extra_metrics(self, w: torch.Tensor) -> dict[str, float]:
        return {}
