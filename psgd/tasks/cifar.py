"""Image classification on CIFAR-10 / CIFAR-100 (local folder, python format) or synthetic
CIFAR-shaped data, with ResNet-18/34, VGG-11/19, an MLP or a small CNN (task.model).

Training batches: drawn with replacement from the worker's shard by
generator(seed, worker, round, 'batch/<sample>'); with task.augment, the standard CIFAR
augmentation (random 32x32 crop of the 4-pixel zero-padded image, random horizontal flip)
from the same generator. Inputs are normalised with the CIFAR per-channel mean and std.
Normalisation layers and their running statistics: see psgd/tasks/models.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from psgd.seeding import generator
from psgd.tasks.base import Task, TaskOptions, WorkerOracle
from psgd.tasks.cifar_data import ImageData, load_cifar, synthetic_images
from psgd.tasks.data import shard_indices
from psgd.tasks.flat import FlatModule, weight_mask
from psgd.tasks.models import MODELS, NORMS, build_model, reset_batchnorm
from psgd.tasks.registry import register

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
DATASETS = ("cifar10", "cifar100", "synthetic")


@dataclass(frozen=True)
class CifarOptions(TaskOptions):
    name: str = "cifar"
    model: str = "resnet18"  # resnet18, resnet34, vgg11, vgg19, mlp, cnn
    dataset: str = "cifar10"  # cifar10, cifar100 (read from data_dir) or synthetic
    data_dir: str = ""  # folder in the python format, e.g. data/cifar-10-batches-py
    width: int = 64  # channels of the first stage (64 in the papers; 4-16 for CPU runs)
    norm: str = "batch"  # batch, group or none (see psgd/tasks/models.py)
    augment: bool = True
    synthetic_classes: int = 10
    synthetic_train: int = 5000
    synthetic_test: int = 1000
    synthetic_signal: float = 45.0  # class pattern amplitude against pixel noise of std 40 (lower: harder)
    eval_batch: int = 500
    bn_batches: int = 8  # training batches (of eval_batch images) that re-estimate BatchNorm statistics

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model not in MODELS:
            raise ValueError(f"task.model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"task.dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.norm not in NORMS:
            raise ValueError(f"task.norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        for key in ("width", "synthetic_classes", "synthetic_train", "synthetic_test", "eval_batch", "bn_batches"):
            if getattr(self, key) < 1:
                raise ValueError(f"task.{key} must be >= 1, got {getattr(self, key)}")
        if not self.synthetic_signal > 0:
            raise ValueError(f"task.synthetic_signal must be > 0, got {self.synthetic_signal}")


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, 32, 32) -> float32, per-channel standardised."""
    x = images.float().div_(255)
    return (x - MEAN.to(x.device)) / STD.to(x.device)


def augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random crop of the 4-padded image and random horizontal flip, vectorised over the batch."""
    b, dev = len(images), images.device
    padded = F.pad(images, (4, 4, 4, 4))
    dy, dx = (torch.randint(9, (b,), generator=g, device=g.device).to(dev) for _ in range(2))
    flip = torch.rand(b, generator=g, device=g.device).to(dev) < 0.5
    ar = torch.arange(32, device=dev)
    rows = (dy[:, None] + ar)[:, None, :, None]
    cols = (dx[:, None] + torch.where(flip[:, None], 31 - ar, ar))[:, None, None, :]
    return padded[torch.arange(b, device=dev)[:, None, None, None], torch.arange(3, device=dev)[None, :, None, None],
                  rows, cols]  # fmt: skip


class ImageOracle(WorkerOracle):
    """Minibatch cross-entropy gradient over one worker's shard (images kept uint8 on the device)."""

    def __init__(self, flat: FlatModule, x, y, options: CifarOptions, seed: int, worker: int):
        super().__init__()
        self.flat, self.x, self.y, self.options = flat, x, y, options
        self.seed, self.worker = seed, worker

    def __call__(self, params: torch.Tensor, sample: int = 0) -> torch.Tensor:
        g = generator(self.seed, self.worker, self.round, f"batch/{sample}")
        idx = torch.randint(len(self.y), (self.options.batch_size,), generator=g).to(self.x.device)
        images = self.x[idx]
        if self.options.augment:
            images = augment(images, g)
        self.flat.load(params)
        self.flat.zero_grad()
        loss = F.cross_entropy(self.flat.module(normalise(images)), self.y[idx])
        loss.backward()
        if sample == 0:
            self.last_loss = loss.item()
        return self.flat.grads.clone()


@register
class Cifar(Task):
    name = "cifar"
    Options = CifarOptions

    def __init__(self, options: CifarOptions, seed: int, n: int) -> None:
        super().__init__(options, seed, n)
        o = options
        if o.dataset == "synthetic":
            self.data: ImageData = synthetic_images(
                seed, o.synthetic_train, o.synthetic_test, o.synthetic_classes, o.synthetic_signal
            )
        else:
            self.data = load_cifar(o.data_dir, o.dataset)
        self.shards = shard_indices(self.data.y_train, n, o.split, seed)
        self._eval: FlatModule | None = None
        self._sizes = [p.numel() for p in self.build().parameters() if p.requires_grad]
        self._dim = sum(self._sizes)

    def layer_sizes(self) -> list[int]:
        return list(self._sizes)

    def decay_mask(self) -> torch.Tensor:
        return weight_mask(self.build())

    def build(self) -> nn.Module:
        return build_model(self.options.model, self.data.classes, self.options.width, self.options.norm)

    @property
    def dim(self) -> int:
        return self._dim

    def init_params(self) -> torch.Tensor:
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            return FlatModule(self.build()).params.clone()

    def oracle(self, worker, device):
        shard = self.shards[worker - 1]
        flat = FlatModule(self.build(), device)
        flat.module.train()
        x, y = self.data.x_train[shard].to(device), self.data.y_train[shard].to(device)
        return ImageOracle(flat, x, y, self.options, self.seed, worker)

    def _calibrate(self, module: nn.Module, device: torch.device) -> None:
        """Re-estimate BatchNorm running statistics from fixed training batches (cumulative average)."""
        if not reset_batchnorm(module):
            return
        g = generator(self.seed, 0, 0, "bn_calibration")
        count = min(self.options.eval_batch, len(self.data.y_train))
        for _ in range(self.options.bn_batches):
            idx = torch.randint(len(self.data.y_train), (count,), generator=g)
            module(normalise(self.data.x_train[idx].to(device)))

    @torch.no_grad()
    def evaluate(self, x):
        device = x.device
        if self._eval is None or self._eval.params.device != device:
            self._eval = FlatModule(self.build(), device)
        self._eval.load(x)
        module = self._eval.module
        self._calibrate(module, device)
        module.eval()
        loss, correct, total = 0.0, 0, len(self.data.y_test)
        for start in range(0, total, self.options.eval_batch):
            images = self.data.x_test[start : start + self.options.eval_batch].to(device)
            labels = self.data.y_test[start : start + self.options.eval_batch].to(device)
            logits = module(normalise(images))
            loss += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += int((logits.argmax(1) == labels).sum())
        return {"test_loss": loss / total, "test_accuracy": correct / total}
