"""Real data available offline (scikit-learn's bundled sets) and sharding across workers."""

from __future__ import annotations

import numpy as np
import torch


def load_digits_split(seed: int, test_fraction: float = 0.2):
    """scikit-learn's 8x8 digits (1797 images, bundled, no download), scaled to [0, 1].

    Returns (x_train, y_train, x_test, y_test) as float32 / int64 tensors; the split is
    stratified and fixed by the seed.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return (torch.from_numpy(xtr), torch.from_numpy(ytr).long(), torch.from_numpy(xte), torch.from_numpy(yte).long())


def shard_indices(labels: torch.Tensor, n: int, split: str, seed: int) -> list[torch.Tensor]:
    """Indices of each worker's shard. iid: a random equal split. label_skew: sorted by
    label then cut into n contiguous pieces, so each worker sees about 10/n classes."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=g)
    if split == "label_skew":
        perm = perm[torch.argsort(labels[perm], stable=True)]
    return [chunk for chunk in torch.tensor_split(perm, n)]
