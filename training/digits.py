# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""The embedded default dataset: the UCI ML hand-written digits (1797 grayscale 8x8 images, labels 0-9, CC BY 4.0),
shipped as package data (`embedded_data/digits.csv.gz`, see `embedded_data/DIGITS_LICENSE.md`), so training without
any dataset argument works offline."""

import gzip
from importlib.resources import files

import numpy as np
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage


DESCRIPTION = "the UCI ML hand-written digits (Alpaydin & Kaynak 1998, CC BY 4.0; 1797 8x8 images)"
DIGITS_FILE = files("diffusers_simple_training") / "embedded_data" / "digits.csv.gz"


def load_digits_dataset() -> Dataset:
    """The digits as a [`datasets.Dataset`] with an `image` column (`Image`, mode "L") and a `label` column
    (`ClassLabel` "0".."9"), the layout of an image dataset from the Hub, so the rest of the data path is shared."""
    with gzip.open(DIGITS_FILE.open("rb"), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    pixels = np.round(table[:, :64].reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)  # ink levels 0..16 -> 0..255
    features = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})
    return Dataset.from_dict(
        {"image": [PILImage.fromarray(p) for p in pixels], "label": table[:, 64].tolist()}, features=features
    )
