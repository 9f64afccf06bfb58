# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""Improved precision and recall of a generative model (Kynkäänniemi et al. 2019, "Improved Precision and Recall
Metric for Assessing Generative Models", Sec. 2), in any feature space (Inception, DINOv2, a dataset classifier).

Each set of feature vectors estimates its manifold as the union of balls around its points, the radius of each ball
being the distance to its k-th nearest neighbour within the set (eq. 1). Then (eq. 2)

    precision = fraction of generated samples inside the real manifold   (how many samples look real)
    recall    = fraction of real samples inside the generated manifold   (how much of the data is covered)

Distances are computed in float64, in blocks, so 10,000 x 10,000 feature sets fit in memory.
"""

import numpy as np
import torch


def _pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")  # exact, not |a|^2 + |b|^2 - 2ab


def kth_neighbour_radii(features: torch.Tensor, k: int, block_size: int = 1024) -> torch.Tensor:
    """The distance of each point of `features` to its k-th nearest neighbour among the others (eq. 1)."""
    radii = [
        _pairwise_distances(block, features).kthvalue(k + 1, dim=1).values  # k + 1: the point itself is at 0
        for block in features.split(block_size)
    ]
    return torch.cat(radii)


def fraction_inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, block_size: int = 1024) -> float:
    """The fraction of `points` within `radii[j]` of some `centres[j]`: inside the manifold estimate (eq. 2)."""
    inside = [
        (_pairwise_distances(block, centres) <= radii[None, :]).any(dim=1) for block in points.split(block_size)
    ]
    return torch.cat(inside).double().mean().item()


def precision_recall(real_features, fake_features, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall of `fake_features` against `real_features` (`(n, d)` arrays or tensors) with
    `k` nearest neighbours (the paper's default is 3). Returns `(precision, recall)`, each in [0, 1]."""
    real = torch.as_tensor(np.asarray(real_features), dtype=torch.float64)
    fake = torch.as_tensor(np.asarray(fake_features), dtype=torch.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"Features must be (n, d) matrices of the same d, but have shapes {tuple(real.shape)} and {tuple(fake.shape)}.")
    if not isinstance(k, int) or not 1 <= k < min(len(real), len(fake)):
        raise ValueError(f"`k` must be an integer in [1, {min(len(real), len(fake)) - 1}] for these sets, but is {k!r}.")
    precision = fraction_inside(fake, real, kth_neighbour_radii(real, k))
    recall = fraction_inside(real, fake, kth_neighbour_radii(fake, k))
    return precision, recall
