# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""The embedded default dataset: scikit-learn's copy of the UCI ML hand-written digits (1797 grayscale 8x8 images,
labels 0-9). It ships inside scikit-learn, so training without any dataset argument works offline."""

import numpy as np
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage


DESCRIPTION = "scikit-learn's copy of the UCI ML hand-written digits (`sklearn.datasets.load_digits`, 1797 8x8 images)"


def load_digits_dataset() -> Dataset:
    """The digits as a [`datasets.Dataset`] with an `image` column (`Image`, mode "L") and a `label` column
    (`ClassLabel` "0".."9"), the layout of an image dataset from the Hub, so the rest of the data path is shared."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # ink levels 0..16 -> 0..255
    features = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})
    return Dataset.from_dict(
        {"image": [PILImage.fromarray(p) for p in pixels], "label": digits.target.tolist()}, features=features
    )
