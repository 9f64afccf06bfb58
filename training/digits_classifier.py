# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""An offline judge for the digits demo: a small CNN trained on the embedded digits (training/digits.py) at the
resolution of the model being evaluated. Its penultimate features give a "digits Fréchet distance" (FID with this
network in place of Inception, so only comparable between models evaluated at the same resolution) and its
predictions give the class coverage and class entropy of generated samples.

The trained weights are cached as safetensors in `$DIFFUSERS_SIMPLE_CACHE` (default `~/.cache/diffusers_simple`),
one file per resolution; training takes a few seconds on a CPU and is deterministic.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from diffusers_simple_training.data import ImageTransform
from diffusers_simple_training.digits import load_digits_dataset


NUM_CLASSES = 10
VERSION = 2  # part of the cache file name: bump when the network or its training changes
HELD_OUT = 297  # digits kept out of training to measure the accuracy (1797 = 1500 + 297)


class DigitsClassifier(nn.Module):
    """Resizes grayscale images in [-1, 1] of any size to 16x16 (the digits hold 8x8 pixels of information), then
    two 3x3 conv + ReLU + max-pool stages (16 and 32 channels), a 128-feature hidden layer and a linear layer to
    the 10 classes."""

    size = 16
    num_features = 128

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.hidden = nn.Linear(32 * (self.size // 4) ** 2, self.num_features)
        self.head = nn.Linear(self.num_features, NUM_CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate features `(batch, 128)` of `(batch, 1, height, width)` images in [-1, 1]."""
        if images.shape[-2:] != (self.size, self.size):
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        hidden = F.max_pool2d(F.relu(self.conv1(images)), 2)
        hidden = F.max_pool2d(F.relu(self.conv2(hidden)), 2)
        return F.relu(self.hidden(hidden.flatten(1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def cache_dir() -> str:
    return os.environ.get("DIFFUSERS_SIMPLE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "diffusers_simple")


def digits_images(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as the training script sees them at `resolution` (bilinear resize, [-1, 1]), shape
    `(1797, 1, resolution, resolution)`, and their labels."""
    dataset = load_digits_dataset()
    transform = ImageTransform(resolution, num_channels=1, center_crop=True)
    rng = np.random.default_rng(0)  # unused: center crop, no flip
    images = np.stack([transform(image, rng) for image in dataset["image"]])
    return torch.from_numpy(images), torch.tensor(dataset["label"])


def to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """`(batch, channels, height, width)` images in [-1, 1] with 1, 3 or 4 channels -> one channel (the mean of RGB)."""
    return images if images.shape[1] == 1 else images[:, :3].mean(dim=1, keepdim=True)


def train_digits_classifier(resolution: int, seed: int = 0, num_epochs: int = 12, batch_size: int = 256) -> tuple[DigitsClassifier, float]:
    """Trains the classifier on 1500 digits at `resolution` and returns it with its accuracy on the other 297.
    Deterministic for a given seed; leaves the global random state untouched."""
    images, labels = digits_images(resolution)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    train, held_out = order[HELD_OUT:], order[:HELD_OUT]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DigitsClassifier()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(num_epochs):
            for batch in train[torch.randperm(len(train))].split(batch_size):
                loss = F.cross_entropy(model(images[batch]), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[held_out]).argmax(1) == labels[held_out]).float().mean().item()
    return model, accuracy


def load_digits_classifier(resolution: int) -> tuple[DigitsClassifier, float]:
    """The classifier for `resolution` and its held-out accuracy: from the cache, or trained and cached."""
    path = os.path.join(cache_dir(), f"digits_classifier_v{VERSION}_{resolution}px.safetensors")
    if os.path.isfile(path):
        model = DigitsClassifier()
        model.load_state_dict(load_file(path))
        with safe_open(path, framework="pt") as f:
            accuracy = float(f.metadata()["held_out_accuracy"])
        return model.eval(), accuracy
    model, accuracy = train_digits_classifier(resolution)
    os.makedirs(cache_dir(), exist_ok=True)
    tmp_path = f"{path}.{os.getpid()}.tmp"
    save_file(model.state_dict(), tmp_path, metadata={"held_out_accuracy": repr(accuracy), "resolution": str(resolution)})
    os.replace(tmp_path, path)  # atomic: concurrent evaluations never read a half-written file
    return model, accuracy


@torch.no_grad()
def classify(model: DigitsClassifier, images: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features `(batch, 128)` and predicted classes `(batch,)` of images in [-1, 1]."""
    features = torch.cat([model.features(to_grayscale(chunk).float()) for chunk in images.split(batch_size)])
    return features, model.head(features).argmax(1)


def class_coverage(predictions: torch.Tensor) -> tuple[float, float]:
    """The fraction of the 10 classes that occur among `predictions`, and the entropy of their histogram in bits
    (log2(10) = 3.32 for perfectly balanced classes, 0 when every sample is the same digit)."""
    counts = torch.bincount(predictions.flatten().long(), minlength=NUM_CLASSES).double()
    probabilities = counts[counts > 0] / counts.sum()
    entropy = -(probabilities * probabilities.log2()).sum().item()
    return (counts > 0).double().mean().item(), max(entropy, 0.0)
