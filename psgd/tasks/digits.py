"""Classification on scikit-learn's digits (real data, offline): softmax regression and an MLP."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from psgd.seeding import generator
from psgd.tasks.base import Task, TaskOptions, WorkerOracle
from psgd.tasks.data import load_digits_split, shard_indices
from psgd.tasks.flat import FlatModule, weight_mask
from psgd.tasks.registry import register


class BatchOracle(WorkerOracle):
    """Minibatch cross-entropy gradient over one worker's shard; batches drawn with
    replacement from generator(seed, worker, round, 'batch/<sample>'), or the whole shard
    (batch = None). ``l2`` adds (l2/2)||params||^2 to the loss."""

    def __init__(
        self, flat: FlatModule, x: torch.Tensor, y: torch.Tensor, batch: int | None, seed: int, worker: int, l2=0.0
    ):
        super().__init__()
        self.flat, self.x, self.y = flat, x, y
        self.batch, self.seed, self.worker, self.l2 = batch, seed, worker, l2

    def __call__(self, params: torch.Tensor, sample: int = 0) -> torch.Tensor:
        if self.batch is None:
            x, y = self.x, self.y
        else:
            g = generator(self.seed, self.worker, self.round, f"batch/{sample}")
            idx = torch.randint(len(self.y), (self.batch,), generator=g).to(self.x.device)
            x, y = self.x[idx], self.y[idx]
        self.flat.load(params)
        self.flat.zero_grad()
        loss = F.cross_entropy(self.flat.module(x), y)
        if self.l2:
            loss = loss + 0.5 * self.l2 * self.flat.params.square().sum()
        loss.backward()
        if sample == 0:
            self.last_loss = loss.item()
        return self.flat.grads.clone()


@dataclass(frozen=True)
class DigitsMLPOptions(TaskOptions):
    hidden: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden < 1:
            raise ValueError(f"task.hidden must be >= 1, got {self.hidden}")


class DigitsTask(Task):
    """Shared by the digits tasks: data, sharding, oracle and evaluation; subclasses build the model."""

    def __init__(self, options, seed, n):
        super().__init__(options, seed, n)
        self.x_train, self.y_train, self.x_test, self.y_test = load_digits_split(seed)
        self.shards = shard_indices(self.y_train, n, options.split, seed)
        self._eval = FlatModule(self.build())
        self._dim = self._eval.dim

    def layer_sizes(self) -> list[int]:
        return list(self._eval.sizes)

    def decay_mask(self) -> torch.Tensor:
        return weight_mask(self._eval.module)

    def build(self) -> nn.Module:
        raise NotImplementedError

    def seeded_build(self) -> nn.Module:
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            return self.build()

    @property
    def dim(self) -> int:
        return self._dim

    def init_params(self) -> torch.Tensor:
        return FlatModule(self.seeded_build()).params.clone()

    def oracle(self, worker, device):
        shard = self.shards[worker - 1]
        flat = FlatModule(self.build(), device)
        x, y = self.x_train[shard].to(device), self.y_train[shard].to(device)
        return BatchOracle(flat, x, y, self.options.batch_size, self.seed, worker)

    @torch.no_grad()
    def evaluate(self, x):
        self._eval.load(x.to("cpu"))
        logits = self._eval.module(self.x_test)
        return {
            "test_loss": F.cross_entropy(logits, self.y_test).item(),
            "test_accuracy": (logits.argmax(1) == self.y_test).float().mean().item(),
        }


@register
class DigitsMLP(DigitsTask):
    """64 -> hidden -> 10 MLP with ReLU."""

    name = "digits_mlp"
    Options = DigitsMLPOptions

    def build(self):
        return nn.Sequential(nn.Linear(64, self.options.hidden), nn.ReLU(), nn.Linear(self.options.hidden, 10))


@dataclass(frozen=True)
class DigitsLogRegOptions(TaskOptions):
    l2: float = 0.0  # (l2/2)||x||^2 added to each worker's loss: f is then l2-strongly convex
    full_batch: bool = False  # the oracle returns the gradient over the worker's whole shard

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.l2 < 0:
            raise ValueError(f"task.l2 must be >= 0, got {self.l2}")


@register
class DigitsLogReg(DigitsTask):
    """Multinomial logistic regression (softmax, 650 parameters), optionally L2-regularised."""

    name = "digits_logreg"
    Options = DigitsLogRegOptions

    def build(self):
        return nn.Linear(64, 10)

    def oracle(self, worker, device):
        shard = self.shards[worker - 1]
        flat = FlatModule(self.build(), device)
        x, y = self.x_train[shard].to(device), self.y_train[shard].to(device)
        o = self.options
        return BatchOracle(flat, x, y, None if o.full_batch else o.batch_size, self.seed, worker, o.l2)

    def constants(self):
        """Softmax cross-entropy has Hessian (in the logits) <= I/2, so f_i is L_i-smooth with
        L_i = lam_max((1/m_i) sum_j z_j z_j^T)/2 + l2, z_j = (x_j, 1); f = (1/n) sum_i f_i likewise with
        the mean of the workers' second-moment matrices; mu = l2 (None without regularisation)."""
        l2 = self.options.l2
        moments = []
        for shard in self.shards:
            z = torch.cat([self.x_train[shard], torch.ones(len(shard), 1)], 1).double()
            moments.append(z.T @ z / len(shard))
        L_i = [float(torch.linalg.eigvalsh(m)[-1]) / 2 + l2 for m in moments]
        L = float(torch.linalg.eigvalsh(sum(moments) / len(moments))[-1]) / 2 + l2
        return {"L": L, "mu": l2 or None, "L_i": L_i}
