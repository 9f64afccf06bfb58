# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""Distances between two sets of image features, in float64: the Fréchet distance behind FID / FD-DINOv2 and the
kernel distance behind KID. The feature extractor (Inception, DINOv2, the digits classifier) is the caller's."""

import numpy as np


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of an `(num_samples, num_features)` feature matrix, in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"`features` must be a (num_samples >= 2, num_features) matrix, but has shape {features.shape}.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix through its eigendecomposition."""
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2) (Dowson & Landau 1982;
    Heusel et al. 2017, eq. 6):

        d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))

    `sigma1 sigma2` is not symmetric, so instead of `scipy.linalg.sqrtm` of it (which returns complex noise for
    rank-deficient covariances, e.g. fewer samples than features) this uses the equal trace of the symmetric PSD
    matrix `sigma1^(1/2) sigma2 sigma1^(1/2)`, whose eigenvalues `eigh` gets reliably.
    """
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    sigma1, sigma2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f"Mismatched statistics: means {mu1.shape} and {mu2.shape}, covariances {sigma1.shape} and {sigma2.shape}; "
            "expected means (d,) and covariances (d, d) of the same d."
        )
    sqrt_sigma1 = _psd_sqrt(sigma1)
    cross = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((cross + cross.T) / 2), 0.0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def frechet_distance_from_features(features1, features2) -> float:
    """`frechet_distance` between Gaussians fitted to two `(num_samples, num_features)` feature matrices."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def kernel_distance(
    features1, features2, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): the unbiased estimate of the squared MMD with the cubic
    polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over `num_subsets` random subsets of
    `min(subset_size, n1, n2)` samples drawn from each set. Returns `(mean, std)` over the subsets. Same estimator
    and defaults as torch-fidelity and torchmetrics.
    """
    features1 = np.asarray(features1, dtype=np.float64)
    features2 = np.asarray(features2, dtype=np.float64)
    if features1.ndim != 2 or features1.shape[1:] != features2.shape[1:]:
        raise ValueError(f"`features1` {features1.shape} and `features2` {features2.shape} must be (n, d) matrices of the same d.")
    m = min(subset_size, len(features1), len(features2))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples in each set, got {len(features1)} and {len(features2)}.")
    rng = np.random.default_rng(seed)
    d = features1.shape[1]
    estimates = []
    for _ in range(num_subsets):
        x = features1[rng.choice(len(features1), m, replace=False)]
        y = features2[rng.choice(len(features2), m, replace=False)]
        k_xx, k_yy, k_xy = ((a @ b.T / d + 1.0) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        # MMD^2_u: the within-set sums leave out the diagonal (k(x_i, x_i)), the cross term keeps every pair.
        mmd2 = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m)
        estimates.append(mmd2)
    return float(np.mean(estimates)), float(np.std(estimates))
