"""A small CNN with BatchNorm and dropout on 1x8x8 images of four classes, as a user would
write it: a map-style Dataset and a factory returning psgd.task(...)."""

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

import psgd

CLASSES = 4


def images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n noisy images whose class is a bright quadrant; pixel [0, 0, 0] also holds the label."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = rng.normal(0, 0.5, (n, 1, 8, 8)).astype(np.float32)
    for c in range(CLASSES):
        r, k = divmod(c, 2)
        x[y == c, 0, 4 * r : 4 * r + 4, 4 * k : 4 * k + 4] += 1.0
    x[:, 0, 0, 0] = y
    return x, y


class Quadrants(Dataset):
    """A map-style Dataset: (image tensor, int label) pairs."""

    def __init__(self, n: int, seed: int) -> None:
        self.x, self.y = images(n, seed)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return torch.from_numpy(self.x[i]), int(self.y[i])


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(8 * 16, CLASSES))

    def forward(self, x):
        return self.head(self.features(x))


class FailsOnLastClasses(SmallCNN):
    """Raises on a batch holding label 3: under label_skew with 2 workers, worker 2's."""

    def forward(self, x):
        if bool((x[:, 0, 0, 0] >= 3).any()):
            raise RuntimeError("this batch breaks the model")
        return super().forward(x)


def make_task():
    return psgd.task(SmallCNN, Quadrants(256, 0), Quadrants(128, 1))


def make_array_task():
    """The same data as numpy arrays, with a loss and a metric of the user's own."""
    x, y = images(256, 0)
    xt, yt = images(128, 1)
    top2 = {"top2": lambda out, t: (out.topk(2, 1).indices == t[:, None]).any(1).float().mean()}
    return psgd.task(SmallCNN, (x, y), (xt, yt), loss=nn.functional.cross_entropy, metrics=top2)


def make_failing_task():
    return psgd.task(FailsOnLastClasses, Quadrants(256, 0), Quadrants(128, 1))


not_a_task = 3
