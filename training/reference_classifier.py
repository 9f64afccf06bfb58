# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""An offline judge for small labelled image datasets (the embedded digits, Fashion-MNIST): a small CNN trained on the
dataset at the resolution of the model being evaluated. Its penultimate features give a Fréchet distance (FID with
this network in place of Inception, so only comparable between models evaluated on the same data at the same
resolution) and improved precision / recall; its predictions give the class coverage and entropy of the samples.

Trained weights are cached as safetensors in `$DIFFUSERS_SIMPLE_CACHE` (default `~/.cache/diffusers_simple`), one file
per dataset and resolution; training is deterministic and takes seconds (digits) to a few minutes (Fashion-MNIST) on a
CPU.
"""

import os
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn


VERSION = 3  # part of the cache file name: bump when the network or its training changes


class SmallClassifier(nn.Module):
    """Resizes grayscale images in [-1, 1] of any size to `size` x `size`, then two 3x3 conv + ReLU + max-pool stages
    (16 and 32 channels), a 128-feature hidden layer and a linear layer to the classes."""

    num_features = 128

    def __init__(self, size: int = 16, num_classes: int = 10):
        super().__init__()
        self.size = size
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.hidden = nn.Linear(32 * (size // 4) ** 2, self.num_features)
        self.head = nn.Linear(self.num_features, num_classes)

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


def to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """`(batch, channels, height, width)` images in [-1, 1] with 1, 3 or 4 channels -> one channel (the mean of RGB)."""
    return images if images.shape[1] == 1 else images[:, :3].mean(dim=1, keepdim=True)


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    size: int,
    num_held_out: int,
    seed: int = 0,
    num_epochs: int = 12,
    batch_size: int = 256,
) -> tuple[SmallClassifier, float]:
    """Trains a [`SmallClassifier`] on all but `num_held_out` (seeded random) images in [-1, 1] and returns it with its
    accuracy on those held out. Deterministic for a given seed; leaves the global random state untouched."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    train, held_out = order[num_held_out:], order[:num_held_out]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SmallClassifier(size, int(labels.max()) + 1)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(num_epochs):
            for batch in train[torch.randperm(len(train))].split(batch_size):
                loss = F.cross_entropy(model(to_grayscale(images[batch])), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(to_grayscale(images[chunk])).argmax(1) for chunk in held_out.split(batch_size)])
    return model, (predictions == labels[held_out]).float().mean().item()


def load_classifier(
    name: str, resolution: int, images_and_labels: Callable[[], tuple[torch.Tensor, torch.Tensor]], size: int, **training
) -> tuple[SmallClassifier, float]:
    """The classifier of dataset `name` at `resolution` and its held-out accuracy: from the cache, or trained on
    `images_and_labels()` with [`train_classifier`] (`size` and `**training` passed on) and cached."""
    path = os.path.join(cache_dir(), f"{name}_classifier_v{VERSION}_{resolution}px.safetensors")
    if os.path.isfile(path):
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata()
        model = SmallClassifier(int(metadata["size"]), int(metadata["num_classes"]))
        model.load_state_dict(load_file(path))
        return model.eval(), float(metadata["held_out_accuracy"])
    images, labels = images_and_labels()
    model, accuracy = train_classifier(images, labels, size, **training)
    metadata = {"held_out_accuracy": repr(accuracy), "resolution": str(resolution), "size": str(size), "num_classes": str(model.head.out_features)}
    os.makedirs(cache_dir(), exist_ok=True)
    tmp_path = f"{path}.{os.getpid()}.tmp"
    save_file(model.state_dict(), tmp_path, metadata=metadata)
    os.replace(tmp_path, path)  # atomic: concurrent evaluations never read a half-written file
    return model, accuracy


@torch.no_grad()
def classify(model: SmallClassifier, images: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features `(batch, 128)` and predicted classes `(batch,)` of images in [-1, 1]."""
    features = torch.cat([model.features(to_grayscale(chunk).float()) for chunk in images.split(batch_size)])
    return features, model.head(features).argmax(1)


def class_coverage(predictions: torch.Tensor, num_classes: int = 10) -> tuple[float, float]:
    """The fraction of the `num_classes` classes that occur among `predictions`, and the entropy of their histogram in
    bits (log2(10) = 3.32 for 10 perfectly balanced classes, 0 when every sample is of one class)."""
    counts = torch.bincount(predictions.flatten().long(), minlength=num_classes).double()
    probabilities = counts[counts > 0] / counts.sum()
    entropy = -(probabilities * probabilities.log2()).sum().item()
    return (counts > 0).double().mean().item(), max(entropy, 0.0)
