"""A task from any torch model and data: what ``psgd.task(...)`` returns and what
``task.name = "package.module:factory"`` runs.

The user gives (``psgd.task``):
  model    a callable returning a fresh ``torch.nn.Module`` (its class, or a function); psgd
           builds one per rank, x0 being the one built under ``torch.manual_seed(seed)``
  train    a map-style ``torch.utils.data.Dataset`` of (input, target) pairs, or
  test     (inputs, targets) as tensors or numpy arrays (test may be None: no evaluation)
  loss     loss(output, target) -> a scalar; default cross-entropy for integer targets, else MSE
  metrics  {name: fn(output, target) -> the batch mean}, logged as test_<name>; default
           {"accuracy": ...} for integer targets

psgd does the rest:
  * the flat parameter buffer (FlatModule: each parameter a view of one vector of size d);
  * shards (task.split = iid, label_skew, or dirichlet with task.alpha: psgd/tasks/shards.py);
  * seeded sampling: worker i's batch in round t is task.batch_size draws with replacement from
    its shard by generator(seed, i, t, 'batch/<sample>'), and torch's own generator (dropout,
    random transforms in a Dataset) is seeded from (seed, i, t) for the step, so a run under
    mpirun and its --simulate twin compute the same floats;
  * devices: the model and a tensor shard live on the worker's device, a Dataset's batches are
    collated and moved there;
  * evaluation of the server's model, in fp32, in eval mode, in batches of task.eval_batch.

BatchNorm: running statistics are buffers, not parameters, so they are neither in the flat
vector nor sent (0 bytes). Workers normalise with batch statistics (train mode); the server,
before each evaluation, re-estimates the running statistics of the model it holds from
task.bn_batches fixed training batches (the same ones every time), then evaluates in eval
mode (as psgd/tasks/models.py does for the CIFAR models). Other buffers keep the values the
model factory gives them.

task.precision = "bf16": each worker's forward pass and loss run under
torch.autocast(device, bfloat16) (CUDA; on the CPU torch's CPU autocast, slower but the same
rule), the parameters, gradients and everything the method and the server hold staying fp32
(the master weights). task.clip_norm = c > 0 scales each worker's minibatch gradient g to
min(1, c / (||g|| + 1e-6)) g, torch's clip_grad_norm_ rule, before the method sees it: the
worker's gradient is what clipping bounds, so error feedback and compression act on the clipped
vector and methods stay unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import default_collate

from psgd.errors import ConfigError
from psgd.seeding import derive_seed, generator
from psgd.tasks.base import Task, TaskOptions, WorkerOracle
from psgd.tasks.flat import FlatModule, weight_mask
from psgd.tasks.models import reset_batchnorm
from psgd.tasks.shards import shards

PRECISIONS = ("fp32", "bf16")


def to_device(batch, device: torch.device):
    """Tensors (alone, or in tuples, lists and dicts) moved to device."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def is_label(y: torch.Tensor) -> bool:
    return y.dim() == 1 and not y.is_floating_point() and not y.is_complex() and y.dtype != torch.bool


class Tensors:
    """(inputs, targets) as tensors, first dimension the examples."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: torch.Tensor, device: torch.device) -> tuple:
        idx = idx.to(self.x.device)
        return self.x[idx].to(device), self.y[idx].to(device)

    def subset(self, idx: torch.Tensor, device: torch.device) -> Tensors:
        return Tensors(self.x[idx].to(device), self.y[idx].to(device))

    def labels(self) -> torch.Tensor | None:
        return self.y.to("cpu", torch.int64) if is_label(self.y) else None

    @property
    def classification(self) -> bool:
        return is_label(self.y)


class Mapped:
    """A map-style Dataset of (input, target) pairs, read at ``index`` (all of it when None)."""

    def __init__(self, dataset, index: torch.Tensor | None = None) -> None:
        self.dataset = dataset
        self.index = torch.arange(len(dataset)) if index is None else index

    def __len__(self) -> int:
        return len(self.index)

    def take(self, idx: torch.Tensor, device: torch.device) -> tuple:
        x, y = default_collate([self.dataset[i] for i in self.index[idx].tolist()])
        return to_device(x, device), to_device(y, device)

    def subset(self, idx: torch.Tensor, device: torch.device) -> Mapped:
        return Mapped(self.dataset, self.index[idx])

    def labels(self) -> torch.Tensor | None:
        """The Dataset's ``targets`` (torchvision's name) when it has them, else read item by item."""
        targets = getattr(self.dataset, "targets", None)
        if targets is None:
            targets = [self.dataset[i][1] for i in range(len(self.dataset))]
        y = torch.as_tensor(targets)[self.index]
        return y.to(torch.int64) if is_label(y) else None

    @property
    def classification(self) -> bool:
        y = torch.as_tensor(self.dataset[int(self.index[0])][1])
        return y.dim() == 0 and is_label(y.view(1))


def as_data(data, what: str) -> Tensors | Mapped:
    """A Dataset, or an (inputs, targets) pair of tensors or numpy arrays (floats become fp32)."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (torch.as_tensor(v) for v in data)
        x = x.float() if x.is_floating_point() else x
        if x.dim() == 0 or y.dim() == 0 or len(x) != len(y):
            raise ValueError(f"{what}: inputs and targets must have one first dimension, got {tuple(x.shape)} and "
                             f"{tuple(y.shape)}")  # fmt: skip
        data = Tensors(x, y.long() if is_label(y) else y.float() if y.is_floating_point() else y)
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        data = Mapped(data)
    else:
        raise TypeError(f"{what}: expected a map-style Dataset or (inputs, targets), got {type(data).__name__}")
    if not len(data):
        raise ValueError(f"{what}: no examples")
    return data


def accuracy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The fraction of the batch whose largest output is the target class."""
    return (output.argmax(1) == target).float().mean()


@dataclass(frozen=True, eq=False)
class TaskSpec:
    """A user's model, data, loss and metrics, as ``psgd.task`` checked them."""

    model: Callable[[], nn.Module]
    train: Tensors | Mapped
    test: Tensors | Mapped | None
    loss: Callable
    metrics: dict[str, Callable] = field(default_factory=dict)


def task(model: Callable[[], nn.Module], train, test=None, *, loss=None, metrics=None) -> TaskSpec:
    """Describe a task from a model factory, train/test data, a loss and metrics (see the module)."""
    if isinstance(model, nn.Module) or not callable(model):
        raise TypeError(
            f"model: give the class or a function that builds the module (psgd builds one per rank), "
            f"got {type(model).__name__}"
        )
    train = as_data(train, "train")
    test = None if test is None else as_data(test, "test")
    classify = train.classification
    if metrics is None:
        metrics = {"accuracy": accuracy} if classify else {}
    return TaskSpec(model, train, test, loss or (F.cross_entropy if classify else F.mse_loss), dict(metrics))


@dataclass(frozen=True)
class TorchOptions(TaskOptions):
    """The [task] keys of a user's task."""

    name: str = ""
    split: str = "iid"  # iid, label_skew or dirichlet
    alpha: float = 0.5  # Dirichlet concentration (split = "dirichlet"); smaller: fewer classes per worker
    precision: str = "fp32"  # or "bf16": autocast of each worker's forward pass and loss, fp32 master weights
    clip_norm: float = 0.0  # > 0: each worker's minibatch gradient scaled to an l2 norm <= clip_norm
    eval_batch: int = 1000  # test examples per forward pass on the server
    bn_batches: int = 8  # training batches of eval_batch examples that re-estimate BatchNorm statistics
    SPLITS = ("iid", "label_skew", "dirichlet")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.alpha > 0:
            raise ValueError(f"task.alpha must be > 0, got {self.alpha}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"task.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not self.clip_norm >= 0:
            raise ValueError(f"task.clip_norm must be >= 0 (0: no clipping), got {self.clip_norm}")
        for key in ("eval_batch", "bn_batches"):
            if getattr(self, key) < 1:
                raise ValueError(f"task.{key} must be >= 1, got {getattr(self, key)}")


@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """torch's generators (CPU, and device's when CUDA) forked, then seeded from ``seed``."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


class TorchOracle(WorkerOracle):
    """Minibatch gradient of the loss over one worker's shard (see the module for the rules)."""

    def __init__(self, flat: FlatModule, data, loss: Callable, options: TorchOptions, seed: int, worker: int):
        super().__init__()
        self.flat, self.data, self.loss, self.options = flat, data, loss, options
        self.seed, self.worker = seed, worker
        self.device = flat.params.device

    def __call__(self, params: torch.Tensor, sample: int = 0) -> torch.Tensor:
        o = self.options
        g = generator(self.seed, self.worker, self.round, f"batch/{sample}")
        idx = torch.randint(len(self.data), (o.batch_size,), generator=g)
        with seeded(derive_seed(self.seed, self.worker, self.round, f"torch/{sample}"), self.device):
            x, y = self.data.take(idx, self.device)
            self.flat.load(params)
            self.flat.zero_grad()
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=o.precision == "bf16"):
                loss = self.loss(self.flat.module(x), y)
            loss.backward()
        if o.clip_norm:
            norm = float(torch.linalg.vector_norm(self.flat.grads))
            if norm > o.clip_norm:
                self.flat.grads.mul_(o.clip_norm / (norm + 1e-6))
        if sample == 0:
            self.last_loss = loss.item()
        return self.flat.grads.clone()


class TorchTask(Task):
    """The generic task: a TaskSpec (``spec``, or ``describe()``) run by psgd's rules."""

    name = "torch"
    Options = TorchOptions
    spec: TaskSpec | None = None

    def __init__(self, options: TorchOptions, seed: int, n: int) -> None:
        super().__init__(options, seed, n)
        self.described = self.describe()
        train = self.described.train
        labels = train.labels() if options.split != "iid" else None
        self.shards = shards(labels, len(train), n, options.split, seed, options.alpha)
        self._eval = FlatModule(self.seeded_build())
        self._dim = self._eval.dim

    def describe(self) -> TaskSpec:
        """The model, data, loss and metrics (a subclass may build them from its options)."""
        if self.spec is None:
            raise ConfigError(f"task {self.name!r} has no spec: build it with psgd.task(...)")
        return self.spec

    def build(self) -> nn.Module:
        module = self.described.model()
        if not isinstance(module, nn.Module):
            raise ConfigError(
                f"task {self.name!r}: the model factory returned {type(module).__name__}, not an nn.Module"
            )
        return module

    def seeded_build(self) -> nn.Module:
        with seeded(self.seed, torch.device("cpu")):
            return self.build()

    @property
    def dim(self) -> int:
        return self._dim

    def layer_sizes(self) -> list[int]:
        return list(self._eval.sizes)

    def decay_mask(self) -> torch.Tensor:
        return weight_mask(self._eval.module)

    def init_params(self) -> torch.Tensor:
        return FlatModule(self.seeded_build()).params.clone()

    def oracle(self, worker: int, device: torch.device) -> TorchOracle:
        flat = FlatModule(self.build(), device)
        flat.module.train()
        data = self.described.train.subset(self.shards[worker - 1], device)
        return TorchOracle(flat, data, self.described.loss, self.options, self.seed, worker)

    def calibrate(self, module: nn.Module, device: torch.device) -> None:
        """Re-estimate BatchNorm running statistics from fixed training batches (cumulative average)."""
        if not reset_batchnorm(module):
            return
        train = self.described.train
        g = generator(self.seed, 0, 0, "bn_calibration")
        with seeded(derive_seed(self.seed, 0, 0, "bn_calibration/torch"), device):
            for _ in range(self.options.bn_batches):
                idx = torch.randint(len(train), (min(self.options.eval_batch, len(train)),), generator=g)
                module(train.take(idx, device)[0])

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor) -> dict[str, float]:
        test = self.described.test
        if test is None:
            return {}
        device = x.device
        if self._eval.params.device != device:
            self._eval = FlatModule(self.seeded_build(), device)
        self._eval.load(x)
        module = self._eval.module
        self.calibrate(module, device)
        module.eval()
        metrics = self.described.metrics
        sums = dict.fromkeys(["loss", *metrics], 0.0)
        for start in range(0, len(test), self.options.eval_batch):
            idx = torch.arange(start, min(start + self.options.eval_batch, len(test)))
            inputs, targets = test.take(idx, device)
            out = module(inputs)
            sums["loss"] += float(self.described.loss(out, targets)) * len(idx)
            for name, fn in metrics.items():
                sums[name] += float(fn(out, targets)) * len(idx)
        return {f"test_{k}": v / len(test) for k, v in sums.items()}
