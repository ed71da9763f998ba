"""Any dataset as one ``.npz`` file of arrays: x_train, y_train, x_test, y_test.

Convert once (``numpy.savez("data.npz", x_train=..., y_train=..., x_test=..., y_test=...)``),
then ``task.name = "npz"``, ``task.path = "data.npz"``. Inputs may have any shape (the first
dimension counts examples) and any real dtype (read as fp32); labels are integer classes
0..C-1, C = max(y_train) + 1. Nothing is unpickled (``allow_pickle=False``): an object array
is refused. Each bad file ends the job with one error that names the file and the array.

task.model: "linear" (flatten, one linear layer), "mlp" (flatten, task.hidden ReLU units, a
linear layer), or an import path ``package.module:factory`` of an nn.Module factory called
with no arguments. Everything else (splits, precision, clipping, BatchNorm) is the generic
task's: psgd/tasks/generic.py.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from psgd.errors import ConfigError
from psgd.tasks.generic import TaskSpec, TorchOptions, TorchTask, task
from psgd.tasks.registry import import_object, register

ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test), checked; ConfigError naming the file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"task.path: no such file {str(p)!r}")
    try:
        archive = np.load(p, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ConfigError(f"{p}: not a readable .npz file ({type(e).__name__}: {e})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ConfigError(f"{p}: holds one array, not a .npz archive of {', '.join(ARRAYS)}")
    with archive:
        missing = [k for k in ARRAYS if k not in archive.files]
        if missing:
            raise ConfigError(f"{p}: missing {', '.join(missing)} (has {', '.join(archive.files) or 'nothing'})")
        arrays = {}
        for k in ARRAYS:
            try:
                arrays[k] = archive[k]
            except ValueError as e:  # object arrays: numpy refuses to unpickle them
                raise ConfigError(f"{p}: {k} cannot be read without unpickling ({e}); save numeric arrays") from None
            except (OSError, zipfile.BadZipFile, EOFError) as e:
                raise ConfigError(f"{p}: {k} is damaged ({type(e).__name__}: {e})") from None
    check(p, arrays)
    return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]


def check(p: Path, a: dict[str, np.ndarray]) -> None:
    for part in ("train", "test"):
        x, y = a[f"x_{part}"], a[f"y_{part}"]
        if x.dtype.kind not in "biuf":
            raise ConfigError(f"{p}: x_{part} has dtype {x.dtype}; expected numbers (bool, int or float)")
        if y.dtype.kind not in "iu":
            raise ConfigError(f"{p}: y_{part} has dtype {y.dtype}; expected integer class labels")
        if x.ndim < 1 or y.ndim != 1 or len(x) != len(y):
            raise ConfigError(
                f"{p}: x_{part} {x.shape} and y_{part} {y.shape} must have one first dimension, y_{part} 1-D"
            )
        if not len(y):
            raise ConfigError(f"{p}: no {part} examples")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise ConfigError(f"{p}: x_{part} holds NaN or Inf")
        if int(y.min()) < 0:
            raise ConfigError(f"{p}: y_{part} has label {int(y.min())}; labels are classes 0..C-1")
    if a["x_train"].shape[1:] != a["x_test"].shape[1:]:
        raise ConfigError(f"{p}: x_train examples are {a['x_train'].shape[1:]}, x_test ones {a['x_test'].shape[1:]}")
    classes = int(a["y_train"].max()) + 1
    if int(a["y_test"].max()) >= classes:
        raise ConfigError(f"{p}: y_test has label {int(a['y_test'].max())}, but y_train's labels are 0..{classes - 1}")


@dataclass(frozen=True)
class NpzOptions(TorchOptions):
    name: str = "npz"
    path: str = ""  # the .npz file
    model: str = "mlp"  # linear, mlp, or package.module:factory (an nn.Module factory, no arguments)
    hidden: int = 128  # mlp's hidden units

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.path:
            raise ValueError("task.path: give the .npz file (x_train, y_train, x_test, y_test)")
        if self.model not in ("linear", "mlp") and ":" not in self.model:
            raise ValueError(f"task.model must be linear, mlp or package.module:factory, got {self.model!r}")
        if self.hidden < 1:
            raise ValueError(f"task.hidden must be >= 1, got {self.hidden}")


@register
class Npz(TorchTask):
    name = "npz"
    Options = NpzOptions

    def describe(self) -> TaskSpec:
        o = self.options
        x_train, y_train, x_test, y_test = load_npz(o.path)
        inputs, classes = math.prod(x_train.shape[1:]), int(y_train.max()) + 1
        if o.model == "linear":
            model = lambda: nn.Sequential(nn.Flatten(), nn.Linear(inputs, classes))  # noqa: E731
        elif o.model == "mlp":
            model = lambda: nn.Sequential(  # noqa: E731
                nn.Flatten(), nn.Linear(inputs, o.hidden), nn.ReLU(), nn.Linear(o.hidden, classes)
            )
        else:
            model = import_object(o.model)
        as_tensors = [torch.from_numpy(np.ascontiguousarray(v)) for v in (x_train, y_train, x_test, y_test)]
        x_tr, y_tr, x_te, y_te = as_tensors
        return task(model, (x_tr.float(), y_tr.long()), (x_te.float(), y_te.long()))
