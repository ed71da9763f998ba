"""The task interface: a model's flat parameters, each worker's stochastic-gradient oracle,
and the server's evaluation. Tasks know nothing of methods or MPI."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch


@dataclass(frozen=True)
class TaskOptions:
    name: str = "digits_mlp"
    batch_size: int = 32
    split: str = "iid"  # "iid" or "label_skew" (heterogeneous: each worker sees few classes)
    SPLITS: ClassVar[tuple[str, ...]] = ("iid", "label_skew")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"task.batch_size must be >= 1, got {self.batch_size}")
        if self.split not in self.SPLITS:
            raise ValueError(f"task.split must be one of {', '.join(self.SPLITS)}, got {self.split!r}")


class WorkerOracle(ABC):
    """oracle(x, sample) -> stochastic gradient at x; remembers the loss of sample 0."""

    def __init__(self) -> None:
        self.round = 0
        self.last_loss = float("nan")

    def at_round(self, round: int) -> WorkerOracle:
        self.round = round
        return self

    @abstractmethod
    def __call__(self, x: torch.Tensor, sample: int = 0) -> torch.Tensor: ...


class Task(ABC):
    name: str
    Options: type[TaskOptions] = TaskOptions

    def __init__(self, options: TaskOptions, seed: int, n: int) -> None:
        self.options = options
        self.seed = seed
        self.n = n  # number of workers the data is sharded across

    @property
    @abstractmethod
    def dim(self) -> int:
        """d, the number of parameters."""

    @abstractmethod
    def init_params(self) -> torch.Tensor:
        """x0 as a flat CPU tensor of ``dtype`` (deterministic in the seed)."""

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of x, of every message of the job (a receiver refuses others): float32."""
        return torch.float32

    @abstractmethod
    def oracle(self, worker: int, device: torch.device) -> WorkerOracle:
        """Gradient oracle of worker ``worker`` (1..n) over its shard."""

    @abstractmethod
    def evaluate(self, x: torch.Tensor) -> dict[str, float]:
        """Test metrics of the model x (server side)."""

    def layer_sizes(self) -> list[int] | None:
        """The sizes of the model's tensors in flat order (layer-wise and bucketed compressors
        split there, as the papers' code does); None: no layers, one flat block."""
        return None

    def decay_mask(self) -> torch.Tensor | None:
        """1.0 on the coordinates of tensors with two or more dimensions (weights), 0.0 on 1-D
        ones (biases, norm scales and shifts), in flat order; None: no layers."""
        return None

    def constants(self) -> dict | None:
        """What the theorems need, when the task knows it: {"L", "mu", "L_i"} (None: unknown)."""
        return None
