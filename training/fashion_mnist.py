# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017; MIT licence, Zalando SE) as a local `datasets` dataset.

    python -m diffusers_simple_training.fashion_mnist --output_dir data/fashion-mnist
    accelerate launch training/train.py --dataset_name data/fashion-mnist --label_column label --resolution 32 ...

Reads the four IDX files that Debian's `dataset-fashion-mnist` package installs under
/usr/share/datasets/fashion-mnist (`make fashion-mnist` fetches them with `apt-get download` + `dpkg-deb -x`, no root
needed) and writes a `DatasetDict` (`train`: 60,000, `test`: 10,000 images) with an `image` column (28x28, mode "L")
and a `label` `ClassLabel` column, with `save_to_disk`. Like any dataset it can be pushed with `push_to_hub`.
"""

import argparse
import gzip
import os

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image


DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SPLITS = {"train": "train", "test": "t10k"}  # split name -> IDX file prefix
IDX_TYPES = {0x08: np.uint8}  # the only element type the Fashion-MNIST files use


def read_idx(path: str) -> np.ndarray:
    """An IDX file (LeCun's MNIST format, optionally gzipped) as an array: a 4-byte magic (0, 0, element type,
    number of dimensions), one big-endian uint32 per dimension, then the elements in row-major order."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or dtype_code not in IDX_TYPES:
        raise ValueError(f"{path!r} is not an IDX file of unsigned bytes (magic {data[:4].hex()}).")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    values = np.frombuffer(data, dtype=IDX_TYPES[dtype_code], offset=4 + 4 * ndim)
    if values.size != int(np.prod(shape)):
        raise ValueError(f"{path!r} holds {values.size} values, but its header says {shape}: the file is truncated.")
    return values.reshape(shape)


def load_fashion_mnist(source_dir: str = DEBIAN_DIR) -> DatasetDict:
    """The `train` and `test` splits from the IDX files in `source_dir`."""
    features = Features({"image": Image(), "label": ClassLabel(names=CLASS_NAMES)})
    splits = {}
    for split, prefix in SPLITS.items():
        images = read_idx(os.path.join(source_dir, f"{prefix}-images-idx3-ubyte.gz"))
        labels = read_idx(os.path.join(source_dir, f"{prefix}-labels-idx1-ubyte.gz"))
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise ValueError(f"The {split} files in {source_dir!r} hold images {images.shape} and labels {labels.shape}.")
        # PNG-encoded like an image dataset from the Hub: {"bytes", "path"} rows, decoded lazily by `datasets`.
        encoded = [Image().encode_example(image) for image in images]
        splits[split] = Dataset.from_dict({"image": encoded, "label": labels.tolist()}, features=features)
    return DatasetDict(splits)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Convert Debian's Fashion-MNIST IDX files into a local dataset.")
    parser.add_argument("--source_dir", default=DEBIAN_DIR, help=f"Folder of the IDX files (default {DEBIAN_DIR}).")
    parser.add_argument("--output_dir", default="data/fashion-mnist", help="Where `save_to_disk` writes the dataset.")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.source_dir):
        raise SystemExit(
            f"error: --source_dir {args.source_dir!r} does not exist. Install Debian's dataset-fashion-mnist package "
            "(`apt-get install dataset-fashion-mnist`), or run `make fashion-mnist`, which extracts it without root."
        )
    dataset = load_fashion_mnist(args.source_dir)
    dataset.save_to_disk(args.output_dir)
    print(f"Wrote {args.output_dir}: {dict(dataset.num_rows)} images, labels {CLASS_NAMES}.")


if __name__ == "__main__":
    main()
