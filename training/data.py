# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""Training data: loading a dataset, finding its image and label columns, preprocessing with PIL and numpy, and a
data order that is a function of the seed and the epoch only, so that a resumed run continues exactly where it
stopped.

Preprocessing follows Diffusers' `train_unconditional.py` without torchvision: resize the shorter side to the
resolution (bilinear), center or random crop, optional horizontal flip, scale to [-1, 1]. The random choices of an
example come from a generator seeded with (seed, epoch, index), never from a global random state.
"""

import math
import os
from dataclasses import dataclass

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node
from PIL import Image

from diffusers_simple_training.digits import DESCRIPTION as DIGITS_DESCRIPTION
from diffusers_simple_training.digits import load_digits_dataset


IMAGE_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
GRAYSCALE_BANDS = {"L", "1", "I", "F"}
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
# What decoding a broken or truncated image raises (PIL raises SyntaxError for some broken PNG chunks).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
_DECODER = datasets.Image()


@dataclass
class TrainingData:
    """A dataset with undecoded images and what was found out about it before training."""

    dataset: datasets.Dataset | datasets.IterableDataset
    image_column: str
    label_column: str | None
    num_classes: int | None
    num_channels: int  # of the images as found, before --num_channels
    description: str  # for logs and the model card
    hub_id: str | None  # the Hub dataset id, for the model card metadata


def shown_name(name_or_path: str) -> str:
    """How a dataset or model is named in logs, results and cards: a local folder by its name (its path means nothing
    on the Hub and may hold a user name), anything else (a Hub id) as it is."""
    return os.path.basename(os.path.normpath(name_or_path)) if os.path.isdir(name_or_path) else name_or_path


def open_dataset(
    name: str | None,
    split: str = "train",
    config_name: str | None = None,
    data_dir: str | None = None,
    streaming: bool = False,
    cache_dir: str | None = None,
) -> tuple[datasets.Dataset | datasets.IterableDataset, str, str | None]:
    """
    The `split` of a dataset, for training and evaluation alike, with a description of it (for logs and model cards)
    and its Hub id if it comes from the Hub.

    `data_dir` is a folder of images (the `imagefolder` builder); else `name` is None for the embedded digits, a
    `save_to_disk` folder, or what `datasets.load_dataset` takes (a Hub id or a local dataset folder).
    """
    if data_dir is not None:
        if not os.path.isdir(data_dir):
            raise ValueError(f"--train_data_dir {data_dir!r} is not a directory.")
        dataset = datasets.load_dataset(
            "imagefolder", data_dir=data_dir, cache_dir=cache_dir, split=split, streaming=streaming
        )
        return dataset, f"the image folder `{shown_name(data_dir)}`", None
    if name is None:
        return load_digits_dataset(), DIGITS_DESCRIPTION, None

    if os.path.isfile(os.path.join(name, "state.json")) or os.path.isfile(os.path.join(name, "dataset_dict.json")):
        dataset = datasets.load_from_disk(name)  # a `save_to_disk` folder
        if isinstance(dataset, datasets.DatasetDict):
            if split not in dataset:
                raise ValueError(f"The saved dataset {name!r} has no {split!r} split; its splits are {list(dataset)}.")
            dataset = dataset[split]
        return dataset, f"the saved dataset `{shown_name(name)}`", None
    try:
        dataset = datasets.load_dataset(name, config_name, cache_dir=cache_dir, split=split, streaming=streaming)
    except (FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as error:
        raise ValueError(
            f"Could not load the dataset {name!r}: {error}. --dataset_name takes a dataset id on the Hub, a local "
            "dataset folder, or a folder written by `Dataset.save_to_disk`; use --train_data_dir for a folder of "
            "images."
        ) from error
    is_local = os.path.exists(name)
    return (
        dataset,
        f"`{name}`" if is_local else f"[{name}](https://huggingface.co/datasets/{name})",
        None if is_local else name,
    )


def _columns(
    dataset, image_column: str | None, label_column: str | None, num_class_embeds: int | None
) -> tuple[str, str | None, int | None]:
    features = dataset.features
    if features is None:  # a streamed dataset whose format does not declare its features: read the first example
        features = dataset._resolve_features().features
    described = ", ".join(f"{name!r} ({type(feature).__name__})" for name, feature in features.items())

    if image_column is None:
        image_column = next((name for name, feature in features.items() if isinstance(feature, datasets.Image)), None)
        if image_column is None:
            raise ValueError(
                f"The dataset has no image column (a `datasets.Image` feature); its columns are {described}."
            )
    elif image_column not in features:
        raise ValueError(
            f"--image_column {image_column!r} is not a column of the dataset; its columns are {described}."
        )
    elif not isinstance(features[image_column], datasets.Image):
        raise ValueError(
            f"--image_column {image_column!r} is a {type(features[image_column]).__name__}, not a "
            f"`datasets.Image` feature; the dataset's columns are {described}."
        )

    num_classes = None
    if label_column is not None:
        if label_column not in features:
            raise ValueError(
                f"--label_column {label_column!r} is not a column of the dataset; its columns are {described}."
            )
        feature = features[label_column]
        if isinstance(feature, datasets.ClassLabel):
            num_classes = feature.num_classes
            if num_class_embeds is not None and num_class_embeds != num_classes:
                raise ValueError(
                    f"--num_class_embeds {num_class_embeds} contradicts the {num_classes} classes of the "
                    f"`ClassLabel` column {label_column!r}; leave it out."
                )
        elif (
            isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")) and num_class_embeds
        ):
            num_classes = num_class_embeds
        else:
            raise ValueError(
                f"--label_column {label_column!r} is a {feature}; class-conditional training needs a `ClassLabel` "
                "column (see `Dataset.class_encode_column`) or an integer column together with --num_class_embeds."
            )
    return image_column, label_column, num_classes


def decode_image(value) -> Image.Image:
    """Decodes an image cell (`{"bytes", "path"}`) of a dataset with undecoded images; raises one of
    `DECODE_ERRORS`."""
    if value is None:
        raise ValueError("the image is missing (None)")
    return _DECODER.decode_example(value)


def image_channels(image: Image.Image) -> int:
    """1 for grayscale images (with or without alpha), 3 for everything else; alpha is dropped unless asked for."""
    return 1 if set(image.getbands()) - {"A"} <= GRAYSCALE_BANDS else 3


def _first_image(dataset, image_column: str) -> Image.Image:
    rows = (
        dataset.take(16)
        if isinstance(dataset, datasets.IterableDataset)
        else dataset.select(range(min(16, len(dataset))))
    )
    errors = []
    for row in rows:
        try:
            return decode_image(row[image_column])
        except DECODE_ERRORS as error:
            errors.append(str(error))
    raise ValueError(
        f"None of the first images of column {image_column!r} could be decoded: {errors or 'the dataset is empty'}."
    )


def load_training_data(
    seed: int,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    num_class_embeds: int | None = None,
    streaming: bool = False,
    max_train_samples: int | None = None,
    cache_dir: str | None = None,
) -> TrainingData:
    """Loads the training dataset (the embedded digits by default), checks its columns, and returns it with its
    images left undecoded (decoding happens in the data loader, where failures can be skipped)."""
    dataset, description, hub_id = open_dataset(
        dataset_name, "train", dataset_config_name, train_data_dir, streaming, cache_dir
    )
    if streaming and isinstance(dataset, datasets.Dataset):  # the digits or a saved dataset, read as a stream
        dataset = dataset.to_iterable_dataset()
    image_column, label_column, num_classes = _columns(dataset, image_column, label_column, num_class_embeds)
    dataset = dataset.select_columns([image_column] + ([label_column] if label_column else []))
    dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    if max_train_samples is not None:
        if isinstance(dataset, datasets.IterableDataset):
            dataset = dataset.take(max_train_samples)
        else:
            dataset = dataset.shuffle(seed=seed).select(range(min(max_train_samples, len(dataset))))
    num_channels = image_channels(_first_image(dataset, image_column))
    return TrainingData(dataset, image_column, label_column, num_classes, num_channels, description, hub_id)


@dataclass
class ImageTransform:
    """Resize (shorter side), crop and flip like `train_unconditional.py`, then scale to [-1, 1]; returns a float32
    array of shape `(num_channels, resolution, resolution)`. With `pad_to_resolution`, an image smaller than the
    resolution is padded with black around its centre instead of resized (28x28 Fashion-MNIST in a 32x32 frame keeps
    every pixel as it is); larger images are still resized and cropped."""

    resolution: int
    num_channels: int
    center_crop: bool = False
    random_flip: bool = False
    pad_to_resolution: bool = False

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> np.ndarray:
        if image.mode in SIXTEEN_BIT_MODES:  # 16-bit grayscale: PIL's convert would clip it at 255 instead of scaling
            image = Image.fromarray(np.round(np.asarray(image, dtype=np.float64) / 257).clip(0, 255).astype(np.uint8))
        image = image.convert(IMAGE_MODES[self.num_channels])
        size = self.resolution
        if self.pad_to_resolution and max(image.size) <= size:
            framed = Image.new(image.mode, (size, size))  # black (zero) in every mode
            framed.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
            image = framed
        scale = size / min(image.size)
        width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
        image = image.resize((width, height), Image.BILINEAR)
        if self.center_crop:
            left, top = round((width - size) / 2), round((height - size) / 2)
        else:
            left, top = int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))
        pixels = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 127.5 - 1.0
        pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        if self.random_flip and rng.random() < 0.5:
            pixels = pixels[:, :, ::-1]
        return np.ascontiguousarray(pixels)


@dataclass
class ExampleProcessor:
    """Turns a dataset row into `{"pixel_values", "class_labels"?, "valid"}`. An image that fails to decode raises a
    `ValueError`, or with `skip_decode_errors` gives a black placeholder with `valid=False`, which the loss ignores
    (the batch keeps its size, so all processes keep running the same number of steps)."""

    transform: ImageTransform
    image_column: str
    label_column: str | None = None
    num_classes: int | None = None
    skip_decode_errors: bool = False

    def __call__(self, row: dict, rng: np.random.Generator, where: str) -> dict:
        try:
            pixels, valid = self.transform(decode_image(row[self.image_column]), rng), True
        except DECODE_ERRORS as error:
            if not self.skip_decode_errors:
                raise ValueError(
                    f"Could not decode the image of {where} (column {self.image_column!r}): {error}. "
                    "Pass --decode_errors skip to skip images that fail to decode."
                ) from error
            size = self.transform.resolution
            pixels, valid = np.zeros((self.transform.num_channels, size, size), dtype=np.float32), False
        example = {"pixel_values": pixels, "valid": valid}
        if self.label_column is not None:
            label = row[self.label_column]
            if label is None or not 0 <= label < self.num_classes:
                raise ValueError(
                    f"The label of {where} (column {self.label_column!r}) is {label!r}; labels must be in "
                    f"[0, {self.num_classes})."
                )
            example["class_labels"] = label
        return example


def collate(examples: list[dict]) -> dict:
    batch = {
        "pixel_values": torch.from_numpy(np.stack([e["pixel_values"] for e in examples])),
        "valid": torch.tensor([e["valid"] for e in examples]),
    }
    if "class_labels" in examples[0]:
        batch["class_labels"] = torch.tensor([e["class_labels"] for e in examples], dtype=torch.long)
    return batch


class EpochSampler(torch.utils.data.Sampler):
    """
    One process's share of a shuffled epoch, as `(epoch, index)` pairs.

    The permutation is a function of `seed + epoch` only, the same on every process; it is padded by wrapping around
    to a multiple of `num_replicas` and dealt out round-robin (like `DistributedSampler`), so every process gets the
    same number of examples. `set_epoch(epoch, start)` starts the epoch at this process's `start`-th example: how a
    resumed run continues at exactly the example where it stopped.
    """

    def __init__(self, num_examples: int, seed: int, num_replicas: int = 1, rank: int = 0):
        if num_examples < 1:
            raise ValueError("The training dataset is empty.")
        self.num_examples, self.seed, self.num_replicas, self.rank = num_examples, seed, num_replicas, rank
        self.num_per_replica = math.ceil(num_examples / num_replicas)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self):
        order = torch.randperm(
            self.num_examples, generator=torch.Generator().manual_seed(self.seed + self.epoch)
        ).tolist()
        total = self.num_per_replica * self.num_replicas
        order = (order * math.ceil(total / len(order)))[:total]
        return iter([(self.epoch, index) for index in order[self.rank :: self.num_replicas][self.start :]])

    def __len__(self) -> int:
        return self.num_per_replica - self.start


class MapImageDataset(torch.utils.data.Dataset):
    """A map-style dataset indexed by the `(epoch, index)` pairs of [`EpochSampler`]."""

    def __init__(self, dataset: datasets.Dataset, processor: ExampleProcessor, seed: int):
        self.dataset, self.processor, self.seed = dataset, processor, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        return self.processor(
            self.dataset[index], np.random.default_rng((self.seed, epoch, index)), f"example {index}"
        )


class StreamingImageDataset(torch.utils.data.IterableDataset):
    """A streamed dataset (already shuffled with a seeded buffer and split across processes), preprocessed on the
    fly."""

    def __init__(self, dataset: datasets.IterableDataset, processor: ExampleProcessor, seed: int, rank: int):
        self.dataset, self.processor, self.seed, self.rank = dataset, processor, seed, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        worker_id = worker.id if worker is not None else 0
        for position, row in enumerate(self.dataset):
            rng = np.random.default_rng((self.seed, self.epoch, self.rank, worker_id, position))
            yield self.processor(row, rng, f"streamed example {position} of worker {worker_id}")


class TrainBatches:
    """
    The batches of one process, epoch by epoch; `epoch(e, skip)` starts epoch `e` after its first `skip` batches.

    A map-style dataset skips by starting the sampler later (nothing is decoded twice); a streamed one has no index,
    so its skipped batches are read and dropped. Shuffling never touches the global random state: the data loader
    gets its own generator, so a resumed run draws the same noise as the uninterrupted one.
    """

    def __init__(
        self,
        data: TrainingData,
        processor: ExampleProcessor,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        shuffle_buffer_size: int = 1000,
    ):
        self.batch_size = batch_size
        loader_kwargs = dict(
            batch_size=batch_size,
            collate_fn=collate,
            num_workers=num_workers,
            generator=torch.Generator().manual_seed(seed),
        )
        if isinstance(data.dataset, datasets.IterableDataset):
            stream = data.dataset.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
            stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
            self.sampler = None
            self.loader = torch.utils.data.DataLoader(
                StreamingImageDataset(stream, processor, seed, rank), **loader_kwargs
            )
            self.batches_per_epoch = None
        else:
            self.sampler = EpochSampler(len(data.dataset), seed, num_replicas=world_size, rank=rank)
            dataset = MapImageDataset(data.dataset, processor, seed)
            self.loader = torch.utils.data.DataLoader(dataset, sampler=self.sampler, **loader_kwargs)
            self.batches_per_epoch = math.ceil(self.sampler.num_per_replica / batch_size)

    def epoch(self, epoch: int, skip: int = 0):
        if self.sampler is not None:
            self.sampler.set_epoch(epoch, start=skip * self.batch_size)
            return iter(self.loader)
        self.loader.dataset.set_epoch(epoch)
        batches = iter(self.loader)
        for _ in range(skip):
            next(batches)
        return batches
