"""L2-regularised logistic regression on scikit-learn's bundled Wisconsin breast-cancer data
(569 samples, 30 features + bias; labels +-1), paper 2's logistic-regression experiment:
loss(z, b) = log(1 + exp(-b z)), loss'' <= 1/4."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from psgd.tasks.convex import ConvexOptions, ConvexTask
from psgd.tasks.registry import register


@register
class BreastCancer(ConvexTask):
    name = "breast_cancer"
    Options = ConvexOptions
    curvature = 0.25

    def dataset(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_breast_cancer

        a, y = load_breast_cancer(return_X_y=True)
        return a.astype(np.float64), np.where(y == 1, 1.0, -1.0)

    def loss(self, z, b):
        return F.softplus(-b * z)

    def dloss(self, z, b):
        return -b * torch.sigmoid(-b * z)

    def d2loss(self, z, b):
        s = torch.sigmoid(b * z)
        return s * (1 - s)

    def extra_metrics(self, w):
        correct = sum(int(((ai @ w) * bi > 0).sum()) for ai, bi in self.parts)
        return {"train_accuracy": correct / sum(len(bi) for _, bi in self.parts)}
