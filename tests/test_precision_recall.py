"""Improved precision and recall (Kynkäänniemi et al. 2019) against a direct transcription of its equations."""

import numpy as np
import pytest

from diffusers_simple_training.precision_recall import precision_recall


def reference(real, fake, k):
    """Eq. 1-2 of the paper, one point at a time."""
    def radii(points):
        return np.array([np.sort(np.linalg.norm(points - p, axis=1))[k] for p in points])

    def inside(points, centres, r):
        return np.mean([np.any(np.linalg.norm(centres - p, axis=1) <= r) for p in points])

    return inside(fake, real, radii(real)), inside(real, fake, radii(fake))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_matches_the_equations(k):
    rng = np.random.default_rng(k)
    real = rng.normal(size=(200, 8))
    fake = rng.normal(loc=0.3, scale=0.7, size=(150, 8))
    assert precision_recall(real, fake, k) == pytest.approx(reference(real, fake, k), abs=1e-12)


def test_mode_collapse_keeps_precision_and_loses_recall():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 4))
    corner = real[real[:, 0] > 1.0]  # one side of the data only (about 16%)
    collapsed = corner + rng.normal(scale=1e-3, size=corner.shape)
    precision, recall = precision_recall(real, collapsed)
    assert precision > 0.95 and recall < 0.5
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="same d"):
        precision_recall(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(ValueError, match="`k` must be"):
        precision_recall(np.zeros((10, 3)), np.zeros((5, 3)), k=5)
