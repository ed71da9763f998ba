"""CIFAR-10 / CIFAR-100 from a local folder in the standard "python version" format, and
synthetic CIFAR-shaped data (for throughput, and CPU runs without the data set).

Folders, as unpacked from the official archives:
  CIFAR-10  (cifar-10-batches-py): data_batch_1 .. data_batch_5, test_batch
  CIFAR-100 (cifar-100-python):    train, test
Each file is a pickled dict {b"data": uint8 array (N, 3072), b"labels" or b"fine_labels": [int]};
it is read with a numpy-only unpickler (safe_pickle), never with pickle.load.
Images stay uint8 (N, 3, 32, 32) in memory; the task normalises each batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from psgd.errors import ConfigError
from psgd.seeding import generator
from psgd.tasks.safe_pickle import load_numpy_pickle

FILES = {
    "cifar10": (["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"], ["test_batch"]),
    "cifar100": (["train"], ["test"]),
}
LABEL_KEY = {"cifar10": b"labels", "cifar100": b"fine_labels"}
CLASSES = {"cifar10": 10, "cifar100": 100}
ARCHIVE = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}


@dataclass(frozen=True)
class ImageData:
    x_train: torch.Tensor  # uint8 (N, 3, 32, 32)
    y_train: torch.Tensor  # int64 (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int


def _read_file(path: Path, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        content = load_numpy_pickle(path.read_bytes())
    except OSError as e:
        raise ConfigError(f"task.data_dir: cannot read {path}: {e.strerror}") from None
    except Exception as e:  # any unpickling failure means a malformed file: one line, no traceback
        raise ConfigError(f"task.data_dir: {path} is not a CIFAR python-format file: {e}") from None
    key = LABEL_KEY[dataset]
    if not isinstance(content, dict) or b"data" not in content or key not in content:
        raise ConfigError(f"task.data_dir: {path} has no {b'data'!r} and {key!r} entries (is it {dataset}?)")
    data, labels = content[b"data"], np.asarray(content[key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise ConfigError(f"task.data_dir: {path}: data must be uint8 of shape (N, 3072), got {shape}")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise ConfigError(f"task.data_dir: {path}: {len(data)} images but labels of shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= CLASSES[dataset]):
        raise ConfigError(f"task.data_dir: {path}: labels outside 0..{CLASSES[dataset] - 1}")
    return data, labels


def _read_split(folder: Path, names: list[str], dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [_read_file(folder / name, dataset) for name in names]
    x = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
    y = np.concatenate([p[1] for p in parts]).astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def load_cifar(data_dir: str, dataset: str) -> ImageData:
    """ConfigError, naming what is missing, when data_dir is not a CIFAR folder of that data set."""
    if not data_dir:
        raise ConfigError(f"task.data_dir is required for task.dataset = {dataset!r} (or use dataset = 'synthetic')")
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"task.data_dir {folder}: no such folder; unpack {ARCHIVE[dataset]} there "
            "(python version from https://www.cs.toronto.edu/~kriz/cifar.html)"
        )
    train, test = FILES[dataset]
    missing = [name for name in train + test if not (folder / name).is_file()]
    if missing:
        raise ConfigError(
            f"task.data_dir {folder}: missing {', '.join(missing)}; expected {dataset} in the python format "
            f"({', '.join(train + test)}), as unpacked from {ARCHIVE[dataset]}"
        )
    x_train, y_train = _read_split(folder, train, dataset)
    x_test, y_test = _read_split(folder, test, dataset)
    return ImageData(x_train, y_train, x_test, y_test, CLASSES[dataset])


def synthetic_images(seed: int, train: int, test: int, classes: int, signal: float = 45.0) -> ImageData:
    """CIFAR-shaped uint8 images a model can learn: a fixed smooth random pattern per class
    (4x4 upsampled, so crops and flips keep it recognisable) of amplitude ``signal`` plus
    pixel noise of standard deviation 40; a weaker signal makes a harder task."""
    g = generator(seed, 0, 0, "synthetic_images")
    coarse = torch.randn(classes, 3, 4, 4, generator=g)
    patterns = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)

    def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(classes, (count,), generator=g)
        x = 128 + signal * patterns[y] + 40 * torch.randn(count, 3, 32, 32, generator=g)
        return x.clamp(0, 255).to(torch.uint8), y

    x_train, y_train = draw(train)
    x_test, y_test = draw(test)
    return ImageData(x_train, y_train, x_test, y_test, classes)
