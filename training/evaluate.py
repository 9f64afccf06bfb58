# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""Evaluates a saved pipeline: generates samples and reports sample-quality metrics and the likelihood bound.

    python -m diffusers_simple_training.evaluate --pretrained_model_name_or_path outputs/demo --reference digits --metrics digits nll
    diffusers-simple-evaluate --pretrained_model_name_or_path user/model --reference cifar10 --reference_split test \\
        --metrics fid kid --num_samples 10000 --scheduler simple-dpmsolver++ --num_inference_steps 20

Metrics (`--metrics`):
- fid, kid: FID (Heusel et al. 2017) and KID (Bińkowski et al. 2018) on the 2048 pool features of the TF-ported
  Inception of the FID paper, through torchmetrics (which needs torch-fidelity and torchvision) with the original
  TF-style resize to 299 x 299; the weights must be on disk (--inception_weights).
- fd_dinov2: Fréchet distance in DINOv2 CLS-token features (Stein et al. 2023), with any DINOv2 checkpoint
  transformers can load (--dinov2_model).
- digits: for the digits demo, offline: a Fréchet distance in the features of a small classifier trained on the
  embedded digits (training/digits_classifier.py), the fraction of the 10 classes among the samples, the entropy of
  their class histogram, and for a class-conditional model the fraction of samples classified as their label.
- classifier: for any labelled dataset given as --reference (e.g. Fashion-MNIST, `make fashion-mnist`), offline: a
  small classifier trained on its --classifier_train_split (training/reference_classifier.py) gives the Fréchet
  distance of the samples to the --reference_split images in its features, with the floor (the same distance from the
  --reference_split images to the training split), improved precision and recall (Kynkäänniemi et al. 2019), class
  coverage and entropy, and label accuracy for a class-conditional model.
- nll: the variational bound on the negative log-likelihood of reference images in bits/dim (training/nll.py).

Samples are quantized to 8 bits, as if saved as PNG, before any metric sees them; the reference images are resized
and center-cropped to the model's resolution like the training images. Results go to a flat JSON file
(`{"fid": ..., "settings": {...}}`) that the model card reads, next to a grid of the first samples.
"""

import argparse
import importlib.metadata
import json
import math
import os

import datasets
import diffusers
import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from tqdm.auto import tqdm

from diffusers_simple import SimpleDiffusionPipeline, SimpleScheduler
from diffusers_simple_training import frechet
from diffusers_simple_training.atomic import write_text
from diffusers_simple_training.data import ImageTransform, open_dataset, shown_name
from diffusers_simple_training.digits_classifier import digits_images, load_digits_classifier
from diffusers_simple_training.model_card import CARD_NAME, EVAL_RESULTS_NAME, add_eval_results_to_card
from diffusers_simple_training.nll import variational_bound
from diffusers_simple_training.precision_recall import precision_recall
from diffusers_simple_training.reference_classifier import SmallClassifier, class_coverage, classify, load_classifier
from diffusers_simple_training.samples import make_grid


METRICS = ("fid", "kid", "fd_dinov2", "digits", "classifier", "nll")
SCHEDULERS = {
    "simple-ddpm": (SimpleScheduler, {"sampler": "ddpm"}),
    "simple-ddim": (SimpleScheduler, {"sampler": "ddim"}),
    "simple-dpmsolver++": (SimpleScheduler, {"sampler": "dpmsolver++"}),
    "ddpm": (DDPMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "dpmsolver": (DPMSolverMultistepScheduler, {}),
}
INCEPTION_WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
GRID_NAME = "eval_samples.png"
MAX_GRID_IMAGES = 64


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate a diffusers-simple (or Diffusers DDPM) pipeline: FID, KID, FD-DINOv2, digits metrics, NLL.")
    parser.add_argument("--pretrained_model_name_or_path", type=str, required=True, help="A saved pipeline folder or a Hub model id.")
    parser.add_argument("--revision", type=str, default=None, help="The revision (branch, tag or commit) of a Hub model.")
    parser.add_argument(
        "--trust_remote_code", action="store_true",
        help="Load the pipeline with the code saved in the checkpoint (`DiffusionPipeline.from_pretrained(..., "
        "trust_remote_code=True)`) instead of the installed diffusers_simple classes.",
    )
    parser.add_argument("--output_dir", type=str, default=None, help="Where results and the sample grid go (default: the model folder).")
    parser.add_argument("--output_json", type=str, default=None, help=f"The results file (default: <output_dir>/{EVAL_RESULTS_NAME}).")
    parser.add_argument("--metrics", nargs="+", choices=METRICS, default=["fid", "kid"], help="What to compute.")

    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--scheduler", choices=tuple(SCHEDULERS), default=None, help="Sample with this scheduler instead of the saved one (same noise schedule).")
    sampling.add_argument("--num_inference_steps", type=int, default=None, help="Denoising steps (default: the pipeline's).")
    sampling.add_argument("--guidance_scale", type=float, default=1.0, help="Classifier-free guidance scale for a class-conditional model.")
    sampling.add_argument("--num_samples", type=int, default=1000, help="Number of images to generate.")
    sampling.add_argument("--batch_size", type=int, default=64, help="Images per batch, for sampling and for the feature networks.")
    sampling.add_argument("--seed", type=int, default=0, help="Image i is generated from a seed derived from (seed, i), whatever the batch size.")
    sampling.add_argument("--device", type=str, default="cuda" if torch.cuda.is_available() else "cpu")

    reference = parser.add_argument_group("reference data (fid, kid, fd_dinov2, nll)")
    reference.add_argument(
        "--reference", type=str, default="digits",
        help='"digits" (the embedded dataset), a Hub dataset id, a local dataset or image folder, or a `save_to_disk` folder.',
    )
    reference.add_argument("--reference_split", type=str, default="train", help="Split of the reference dataset; use a held-out split for the NLL.")
    reference.add_argument("--reference_image_column", type=str, default=None, help="Image column (default: the first `Image` feature).")
    reference.add_argument("--reference_label_column", type=str, default=None, help="Label column for a class-conditional NLL (default: the first `ClassLabel`).")
    reference.add_argument("--num_reference", type=int, default=None, help="Use a seeded random subset of this many reference images (default: all).")
    reference.add_argument(
        "--pad_to_resolution", action="store_true",
        help="Pad reference images smaller than the model's resolution with black, as train.py --pad_to_resolution did.",
    )

    networks = parser.add_argument_group("feature networks")
    networks.add_argument(
        "--inception_weights", type=str, default=None,
        help=f"The FID Inception weights file ({INCEPTION_WEIGHTS_URL}); default: torch hub's checkpoints folder.",
    )
    networks.add_argument(
        "--classifier_train_split", type=str, default="train",
        help="The split of --reference the `classifier` metric's network is trained on (the floor is measured against it).",
    )
    networks.add_argument("--dinov2_model", type=str, default="facebook/dinov2-large", help="A DINOv2 checkpoint (Hub id or folder) for fd_dinov2.")

    nll = parser.add_argument_group("nll")
    nll.add_argument("--nll_samples", type=int, default=256, help="Reference images (a seeded random subset) the bound is averaged over.")
    nll.add_argument(
        "--nll_timesteps", type=int, default=100,
        help="KL terms per image, stratified with unbiased rescaling (see training/nll.py); 0 evaluates all T - 1 of them.",
    )

    args = parser.parse_args(argv)
    for name in ("num_samples", "batch_size", "nll_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}.")
    if not (math.isfinite(args.guidance_scale) and args.guidance_scale >= 0):
        parser.error(f"--guidance_scale must be a finite number in [0, inf), got {args.guidance_scale}.")
    if args.nll_timesteps < 0:
        parser.error(f"--nll_timesteps must be >= 0 (0 = all timesteps), got {args.nll_timesteps}.")
    if args.num_inference_steps is not None and args.num_inference_steps < 1:
        parser.error(f"--num_inference_steps must be a positive integer, got {args.num_inference_steps}.")
    if args.num_reference is not None and args.num_reference < 2:
        parser.error(f"--num_reference must be at least 2, got {args.num_reference}.")
    if args.num_samples < 2 and set(args.metrics) - {"nll"}:
        parser.error(f"--num_samples must be at least 2 for {sorted(set(args.metrics) - {'nll'})}, got {args.num_samples}.")
    if args.output_dir is None:
        if not os.path.isdir(args.pretrained_model_name_or_path):
            parser.error("--output_dir is required when --pretrained_model_name_or_path is not a local folder.")
        args.output_dir = args.pretrained_model_name_or_path
    args.output_json = args.output_json or os.path.join(args.output_dir, EVAL_RESULTS_NAME)
    return args


# ---------------------------------------------------------------------------------------------------------- inputs


def inception_weights_path(args) -> str:
    """Checks, before anything runs, that torchmetrics' FID Inception can be built offline; returns its weights file.
    Exits with what to install or download otherwise."""
    path = args.inception_weights or os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(INCEPTION_WEIGHTS_URL))
    problems = []
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3  # noqa: F401
        import torch_fidelity  # noqa: F401  (imports torchvision)

        if tuple(int(x) for x in importlib.metadata.version("torchmetrics").split(".")[:2]) < (1, 8):
            raise ImportError(f"torchmetrics {importlib.metadata.version('torchmetrics')} is older than 1.8 (no `antialias`)")
    except ImportError as error:
        problems.append(
            f"torchmetrics' Inception does not import ({error}). Install it with\n"
            '      pip install "torchmetrics>=1.8" torch-fidelity torchvision\n'
            "    with a torchvision build that matches your torch (https://pytorch.org/get-started/locally/; from plain "
            "PyPI it may replace a CPU torch with a multi-GB CUDA build)."
        )
    if not os.path.isfile(path):
        problems.append(
            f"The Inception weights are not at {path}. Download {INCEPTION_WEIGHTS_URL}\n"
            f"    and pass --inception_weights /path/to/{os.path.basename(INCEPTION_WEIGHTS_URL)}"
            + ("" if args.inception_weights else f" (or put it in {os.path.dirname(path)})")
            + "."
        )
    if problems:
        raise SystemExit(
            "error: --metrics fid/kid need torchmetrics' FID Inception network, which is not available:\n  - "
            + "\n  - ".join(problems)
            + "\nOr evaluate without fid/kid, e.g. `--metrics digits nll` (offline) or `--metrics fd_dinov2`."
        )
    return path


def load_pipeline(args):
    """The pipeline with the saved or the `--scheduler` scheduler, and the saved (training) scheduler for the NLL."""
    pipeline = SimpleDiffusionPipeline.from_pretrained(
        args.pretrained_model_name_or_path, revision=args.revision, **({"trust_remote_code": True} if args.trust_remote_code else {})
    )
    pipeline.to(args.device)
    pipeline.set_progress_bar_config(disable=True)
    training_scheduler = pipeline.scheduler
    if args.scheduler is not None:
        scheduler_class, overrides = SCHEDULERS[args.scheduler]
        pipeline.scheduler = scheduler_class.from_config(training_scheduler.config, **overrides)
    return pipeline, training_scheduler


def scheduler_name(scheduler) -> str:
    name = type(scheduler).__name__
    return f"{name} ({scheduler.config.sampler})" if name == "SimpleScheduler" else name


def model_geometry(unet) -> tuple[int, int, int | None]:
    """Resolution, channels and number of classes (None if unconditional) of a square-image UNet."""
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if height != width:
        raise ValueError(f"Only square images are supported; the UNet's sample_size is {size}.")
    if unet.config.in_channels not in (1, 3, 4):
        raise ValueError(f"Images need 1, 3 or 4 channels; the UNet has in_channels={unet.config.in_channels}.")
    return height, unet.config.in_channels, unet.config.get("num_class_embeds")


_REFERENCE_CACHE: dict[tuple, tuple[datasets.Dataset, torch.Tensor]] = {}


def load_reference(
    args, resolution: int, num_channels: int, need_labels: bool, split: str | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The reference images (of `split`, default --reference_split) as uint8 `(N, C, H, W)` at the model's resolution
    and channels, and their labels when `need_labels` (for the NLL of a class-conditional model, or the classifier).
    The decoded images are kept for the life of the process: evaluating several models against one reference, with or
    without its labels, decodes it once."""
    key = (args.reference, split or args.reference_split, args.reference_image_column, args.num_reference, args.seed,
           args.pad_to_resolution, resolution, num_channels)
    dataset, images = _REFERENCE_CACHE.get(key, (None, None))
    if dataset is None:
        dataset, image_column = _open_reference(args, split)
    labels = torch.tensor(dataset[_reference_label_column(args, dataset.features)]) if need_labels else None  # before decoding
    if images is None:
        transform = ImageTransform(resolution, num_channels, center_crop=True, pad_to_resolution=args.pad_to_resolution)
        rng = np.random.default_rng(0)  # unused: center crop, no flip
        rows = tqdm(dataset.select_columns([image_column]), desc="Reference images")  # decoded one at a time
        images = np.stack([transform(row[image_column], rng) for row in rows])
        images = torch.from_numpy(np.round((images + 1) * 127.5)).to(torch.uint8)
        _REFERENCE_CACHE[key] = dataset, images
    return images, labels


def _open_reference(args, split: str | None) -> tuple[datasets.Dataset, str]:
    """The reference dataset (a seeded subset with --num_reference) and its image column."""
    name = None if args.reference == "digits" else args.reference
    dataset = open_dataset(name, split=split or args.reference_split)[0]
    features = dataset.features
    image_column = args.reference_image_column or next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
    if image_column not in features or not isinstance(features[image_column], datasets.Image):
        raise ValueError(f"No image column {image_column!r} in the reference dataset; its columns are {dict(features)}.")
    if args.num_reference is not None and args.num_reference < len(dataset):
        dataset = dataset.select(np.random.default_rng(args.seed).permutation(len(dataset))[: args.num_reference])
    return dataset, image_column


def _reference_label_column(args, features) -> str:
    label_column = args.reference_label_column or next((c for c, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
    if label_column not in features:
        raise ValueError(
            f"The NLL of a class-conditional model needs reference labels: pass --reference_label_column (got {label_column!r}); "
            f"the columns are {dict(features)}."
        )
    return label_column


@torch.no_grad()
def generate(pipeline, args, num_classes: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`--num_samples` images as uint8 `(N, C, H, W)`; a class-conditional model gets the labels 0, 1, 2, ... in turn."""
    labels = torch.arange(args.num_samples) % num_classes if num_classes else None
    images = []
    with tqdm(total=args.num_samples, desc="Sampling") as progress:
        for start in range(0, args.num_samples, args.batch_size):
            indices = range(start, min(start + args.batch_size, args.num_samples))
            # one generator per image, seeded from (seed, index): the samples do not depend on the batch size
            generators = [torch.Generator().manual_seed(int(np.random.SeedSequence((args.seed, i)).generate_state(1, np.uint64)[0])) for i in indices]
            kwargs = {} if args.num_inference_steps is None else {"num_inference_steps": args.num_inference_steps}
            if num_classes:
                kwargs.update(class_labels=labels[start : indices.stop].tolist(), guidance_scale=args.guidance_scale)
            batch = pipeline(batch_size=len(indices), generator=generators, output_type="np", **kwargs).images
            images.append(torch.from_numpy(np.round(batch * 255)).to(torch.uint8).permute(0, 3, 1, 2))
            progress.update(len(indices))
    return torch.cat(images), labels


# -------------------------------------------------------------------------------------------------------- features


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """uint8 images with 1, 3 or 4 channels -> 3 channels (gray repeated, alpha dropped)."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images[:, :3]


@torch.no_grad()
def inception_features(images: torch.Tensor, weights_path: str, args) -> np.ndarray:
    from torchmetrics.image.fid import NoTrainInceptionV3

    # antialias=False: torch-fidelity's TF-1.x-compatible bilinear resize, as in the original FID code
    model = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=weights_path, antialias=False)
    model = model.to(args.device)
    batches = tqdm(to_rgb(images).split(args.batch_size), desc="Inception features")
    return torch.cat([model(batch.to(args.device)).double().cpu() for batch in batches]).numpy()


class DinoV2Features:
    """CLS-token features of a DINOv2 model (Stein et al. 2023), with its own image processor (resize, crop, normalize)."""

    def __init__(self, model_name: str, device: str):
        try:
            from transformers import AutoImageProcessor, AutoModel
        except ImportError as error:
            raise SystemExit(f"error: fd_dinov2 needs transformers ({error}); pip install transformers") from error
        self.processor = AutoImageProcessor.from_pretrained(model_name)
        self.model = AutoModel.from_pretrained(model_name).to(device).eval()
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int) -> np.ndarray:
        features = []
        for batch in tqdm(to_rgb(images).split(batch_size), desc="DINOv2 features"):
            pixels = self.processor(images=list(batch.permute(0, 2, 3, 1).numpy()), return_tensors="pt")["pixel_values"]
            features.append(self.model(pixel_values=pixels.to(self.device)).last_hidden_state[:, 0].double().cpu())
        return torch.cat(features).numpy()


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1.0


# --------------------------------------------------------------------------------------------------------- metrics


def digits_metrics(samples: torch.Tensor, sample_labels: torch.Tensor | None, resolution: int) -> tuple[dict, float]:
    """The digits Fréchet distance against all 1797 digits, class coverage and entropy, and label accuracy for a
    class-conditional model; also returns the classifier's held-out accuracy."""
    classifier, accuracy = load_digits_classifier(resolution)
    real_features, _ = classify(classifier, digits_images(resolution)[0])
    fake_features, predictions = classify(classifier, to_model_range(samples))
    results = {"digits_fd": frechet.frechet_distance_from_features(real_features.numpy(), fake_features.numpy())}
    results["digits_class_coverage"], results["digits_class_entropy_bits"] = class_coverage(predictions)
    if sample_labels is not None:
        results["digits_label_accuracy"] = (predictions == sample_labels).double().mean().item()
    return results, accuracy


def floor_subset(train_images: torch.Tensor, num_samples: int, seed: int) -> torch.Tensor:
    """The training images whose distance to the reference is the classifier floor: a seeded random subset of as many
    as there are samples."""
    return train_images[torch.randperm(len(train_images), generator=torch.Generator().manual_seed(seed))[:num_samples]]


def classifier_metrics(
    samples: torch.Tensor, sample_labels: torch.Tensor | None, reference: torch.Tensor, args, resolution: int, num_channels: int
) -> tuple[dict, dict]:
    """Fréchet distance, its floor, precision / recall, class coverage and label accuracy in the features of a small
    classifier trained on `--classifier_train_split` of `--reference` (cached per dataset, split and resolution). The
    floor is the distance of as many training images as there are samples (a seeded random subset): what a model that
    reproduced the training distribution would get at this sample size (the distance grows as the sample shrinks)."""
    classifier, settings, train_images = reference_classifier(args, resolution, num_channels)
    num_classes = classifier.head.out_features
    train_features, _ = classify(classifier, to_model_range(floor_subset(train_images, len(samples), args.seed)))
    real_features, _ = classify(classifier, to_model_range(reference))
    fake_features, predictions = classify(classifier, to_model_range(samples))
    results = {
        "classifier_fd": frechet.frechet_distance_from_features(real_features.numpy(), fake_features.numpy()),
        "classifier_fd_floor": frechet.frechet_distance_from_features(real_features.numpy(), train_features.numpy()),
    }
    results["precision"], results["recall"] = precision_recall(real_features, fake_features)
    results["class_coverage"], results["class_entropy_bits"] = class_coverage(predictions, num_classes)
    if sample_labels is not None:
        results["label_accuracy"] = (predictions == sample_labels).double().mean().item()
    return results, settings


def reference_classifier(args, resolution: int, num_channels: int) -> tuple[SmallClassifier, dict, torch.Tensor]:
    """The `classifier` metric's network: a small classifier trained on `--classifier_train_split` of `--reference`
    (cached per dataset, split and resolution), its settings (with the held-out accuracy) and those training images."""
    train_images, train_labels = load_reference(args, resolution, num_channels, need_labels=True, split=args.classifier_train_split)
    key = "".join(c if c.isalnum() else "-" for c in f"{os.path.basename(os.path.normpath(args.reference))}-{args.classifier_train_split}")
    epochs = max(2, min(12, 300_000 // len(train_images)))  # ~300k images seen: 12 epochs of digits, 5 of Fashion-MNIST
    classifier, accuracy = load_classifier(
        key, resolution, lambda: (to_model_range(train_images), train_labels), size=max(16, resolution),
        num_held_out=max(1, len(train_images) // 10), num_epochs=epochs,
    )
    settings = {"classifier": f"SmallClassifier on {shown_name(args.reference)} [{args.classifier_train_split}], {epochs} epochs",
                "classifier_held_out_accuracy": accuracy, "precision_recall_k": 3}
    return classifier, settings, train_images


def nll_metrics(unet, scheduler, reference: torch.Tensor, labels: torch.Tensor | None, args) -> tuple[dict, int]:
    """The mean variational bound in bits/dim over a seeded random subset of the reference images, with its
    standard error; also returns the subset's size."""
    subset = torch.randperm(len(reference), generator=torch.Generator().manual_seed(args.seed))[: args.nll_samples]
    generator = torch.Generator().manual_seed(args.seed)
    bounds = []
    for batch in tqdm(subset.split(args.batch_size), desc="NLL"):
        class_labels = None if labels is None else labels[batch].to(args.device)
        images = to_model_range(reference[batch]).to(args.device)
        output = variational_bound(unet, scheduler, images, class_labels, num_timesteps=args.nll_timesteps or None, generator=generator)
        bounds.append(output.bits_per_dim.cpu())
    bounds = torch.cat(bounds)
    stderr = (bounds.std() / math.sqrt(len(bounds))).item() if len(bounds) > 1 else 0.0
    return {"nll_bits_per_dim": bounds.mean().item(), "nll_bits_per_dim_stderr": stderr}, len(bounds)


# ------------------------------------------------------------------------------------------------------------ main


def evaluate(args) -> dict:
    """Runs the evaluation described by parsed `args`; writes the JSON file and the sample grid; returns the results."""
    metrics = set(args.metrics)
    weights_path = inception_weights_path(args) if metrics & {"fid", "kid"} else None  # fail before any work

    pipeline, training_scheduler = load_pipeline(args)
    resolution, num_channels, num_classes = model_geometry(pipeline.unet)
    dinov2 = DinoV2Features(args.dinov2_model, args.device) if "fd_dinov2" in metrics else None
    reference = labels = None
    if metrics & {"fid", "kid", "fd_dinov2", "classifier", "nll"}:
        reference, labels = load_reference(args, resolution, num_channels, need_labels="nll" in metrics and bool(num_classes))
    samples, sample_labels = generate(pipeline, args, num_classes)

    results = {}
    settings = {
        "pretrained_model_name_or_path": shown_name(args.pretrained_model_name_or_path),
        "scheduler": scheduler_name(pipeline.scheduler),
        "num_inference_steps": args.num_inference_steps if args.num_inference_steps is not None else "pipeline default",
        "guidance_scale": args.guidance_scale if num_classes else "n/a (unconditional)",
        "num_samples": args.num_samples,
        "seed": args.seed,
        "resolution": resolution,
        "sample_grid": GRID_NAME,
        "diffusers_version": diffusers.__version__,
        "torch_version": torch.__version__,
    }
    if reference is not None:
        split = "all 1797 digits" if args.reference == "digits" else args.reference_split
        settings.update(reference=shown_name(args.reference), reference_split=split, num_reference=len(reference))
    if weights_path is not None:
        real, fake = inception_features(reference, weights_path, args), inception_features(samples, weights_path, args)
        settings["inception"] = "torchmetrics NoTrainInceptionV3 inception-v3-compat, 2048 pool features, TF-style resize"
        if "fid" in metrics:
            results["fid"] = frechet.frechet_distance_from_features(real, fake)
        if "kid" in metrics:
            results["kid_mean"], results["kid_std"] = frechet.kernel_distance(real, fake, seed=args.seed)
            settings["kid_subsets"] = f"100 subsets of {min(1000, len(real), len(fake))}"
    if dinov2 is not None:
        results["fd_dinov2"] = frechet.frechet_distance_from_features(dinov2(reference, args.batch_size), dinov2(samples, args.batch_size))
        settings["dinov2_model"] = args.dinov2_model
    if "digits" in metrics:
        digits_results, settings["digits_classifier_held_out_accuracy"] = digits_metrics(samples, sample_labels, resolution)
        results.update(digits_results)
    if "classifier" in metrics:
        classifier_results, classifier_settings = classifier_metrics(samples, sample_labels, reference, args, resolution, num_channels)
        results.update(classifier_results)
        settings.update(classifier_settings)
    if "nll" in metrics:
        nll_results, settings["nll_samples"] = nll_metrics(pipeline.unet, training_scheduler, reference, labels, args)
        results.update(nll_results)
        settings["nll_timesteps"] = args.nll_timesteps or "all"
        settings["nll_variance_type"] = training_scheduler.config.get("variance_type") or "fixed_small"
    results["settings"] = settings

    os.makedirs(args.output_dir, exist_ok=True)
    grid = samples[:MAX_GRID_IMAGES].permute(0, 2, 3, 1).numpy() / 255.0
    make_grid(grid, min(num_classes, len(grid)) if num_classes else math.ceil(math.sqrt(len(grid)))).save(os.path.join(args.output_dir, GRID_NAME))
    os.makedirs(os.path.dirname(os.path.abspath(args.output_json)), exist_ok=True)
    write_text(args.output_json, json.dumps(results, indent=2) + "\n")
    if os.path.abspath(args.output_json) == os.path.abspath(os.path.join(args.output_dir, EVAL_RESULTS_NAME)):
        if add_eval_results_to_card(args.output_dir):  # an exported pipeline's card shows what was just measured
            print(f"Added the metrics to the model card {os.path.join(args.output_dir, CARD_NAME)}.")
    return results


def main(argv=None) -> None:
    results = evaluate(parse_args(argv))
    print(json.dumps({name: value for name, value in results.items() if name != "settings"}, indent=2))


if __name__ == "__main__":
    main()
