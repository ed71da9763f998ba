"""Each worker's share of the training set: iid, label skew, or Dirichlet(alpha) over labels.

dirichlet: for each class c, proportions p_c ~ Dir(alpha 1_n) over the n workers, and class c's
examples (in a seeded random order) are cut at the cumulative proportions: the usual federated
split (Hsu, Qi and Brown 2019, "Measuring the effects of non-identical data distribution").
Small alpha: each worker sees few classes; large alpha: close to iid. A draw that leaves a
worker without examples is redrawn (as FedML does), at most 100 times.
"""

from __future__ import annotations

import numpy as np
import torch

from psgd.errors import ConfigError
from psgd.seeding import derive_seed
from psgd.tasks.data import shard_indices


def dirichlet_shards(labels: torch.Tensor, n: int, alpha: float, seed: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(derive_seed(seed, 0, 0, "shards/dirichlet"))
    y = labels.numpy()
    by_class = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    for _ in range(100):
        parts: list[list[np.ndarray]] = [[] for _ in range(n)]
        for idx in by_class:  # a loop over classes, not examples
            cuts = (np.cumsum(rng.dirichlet(np.full(n, alpha)))[:-1] * len(idx)).astype(np.int64)
            for w, piece in enumerate(np.split(idx, cuts)):
                parts[w].append(piece)
        shards = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(s) for s in shards) > 0:
            return [torch.from_numpy(s) for s in shards]
    raise ConfigError(
        f"task.split = dirichlet with alpha = {alpha}: some of the {n} workers get no examples of the "
        f"{len(y)} in 100 draws; raise task.alpha or use fewer workers"
    )


def shards(
    labels: torch.Tensor | None, count: int, n: int, split: str, seed: int, alpha: float = 0.5
) -> list[torch.Tensor]:
    """Indices of each worker's examples among count (workers 1..n at positions 0..n-1); labels
    is None when the targets are not class labels, which only an iid split accepts."""
    if count < n:
        raise ConfigError(f"{count} training examples cannot be shared by {n} workers")
    if labels is None:
        if split != "iid":
            raise ConfigError(f"task.split = {split} needs integer class labels; these targets are not")
        labels = torch.zeros(count, dtype=torch.int64)
    if split == "dirichlet":
        return dirichlet_shards(labels, n, alpha, seed)
    return shard_indices(labels, n, split, seed)
