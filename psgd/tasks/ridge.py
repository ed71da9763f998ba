"""Ridge regression on scikit-learn's bundled diabetes data (442 samples, 10 features + bias,
standardised target), standing in for paper 2's Body-Fat set, which is not bundled offline:
loss(z, b) = (z - b)^2 / 2, so loss'' = 1 and the data term adds lambda_min(H) to mu."""

from __future__ import annotations

import numpy as np
import torch

from psgd.tasks.convex import ConvexOptions, ConvexTask
from psgd.tasks.registry import register


@register
class Ridge(ConvexTask):
    name = "ridge"
    Options = ConvexOptions
    curvature = 1.0
    square_loss = True

    def dataset(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_diabetes

        a, y = load_diabetes(return_X_y=True)
        return a.astype(np.float64), (y - y.mean()) / y.std()

    def loss(self, z, b):
        return 0.5 * (z - b) ** 2

    def dloss(self, z, b):
        return z - b

    def d2loss(self, z, b):
        return torch.ones_like(z)
