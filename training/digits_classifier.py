# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""The offline judge of the digits demo: the [`SmallClassifier`] of `reference_classifier.py` trained on the embedded
digits at 16x16 (the digits hold 8x8 pixels of information), 1500 for training and 297 held out."""

import numpy as np
import torch

from diffusers_simple_training.data import ImageTransform
from diffusers_simple_training.digits import load_digits_dataset
from diffusers_simple_training.reference_classifier import SmallClassifier, load_classifier


HELD_OUT = 297  # digits kept out of training to measure the accuracy (1797 = 1500 + 297)


def digits_images(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as the training script sees them at `resolution` (bilinear resize, [-1, 1]), shape
    `(1797, 1, resolution, resolution)`, and their labels."""
    dataset = load_digits_dataset()
    transform = ImageTransform(resolution, num_channels=1, center_crop=True)
    rng = np.random.default_rng(0)  # unused: center crop, no flip
    images = np.stack([transform(image, rng) for image in dataset["image"]])
    return torch.from_numpy(images), torch.tensor(dataset["label"])


def load_digits_classifier(resolution: int) -> tuple[SmallClassifier, float]:
    """The digits classifier for `resolution` and its held-out accuracy: from the cache, or trained (~3 s) and cached."""
    return load_classifier("digits", resolution, lambda: digits_images(resolution), size=16, num_held_out=HELD_OUT)
