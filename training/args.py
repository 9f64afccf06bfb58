# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""Command-line arguments of `training/train.py`.

The names follow Diffusers' `examples/unconditional_image_generation/train_unconditional.py` wherever the meaning is
the same. `--config file.yaml|json` holds any of the same arguments (without the leading dashes); arguments given on
the command line override the file.
"""

import argparse
import json
import math
import os
import sys

import yaml
from diffusers.optimization import SchedulerType

from diffusers_simple.scheduling_simple import BETA_SCHEDULES, PREDICTION_TYPES, SAMPLERS


# The accepted interval of every float argument. Values must also be finite: NaN fails no comparison silently
# (`nan < 0` is False), and a NaN clipping norm or guidance scale trains NaN weights or draws black samples.
FLOAT_RANGES = {
    "learning_rate": "[0, inf)",
    "adam_beta1": "[0, 1)",
    "adam_beta2": "[0, 1)",
    "adam_weight_decay": "[0, inf)",
    "adam_epsilon": "[0, inf)",
    "max_grad_norm": "[0, inf)",
    "snr_gamma": "(0, inf)",
    "noise_offset": "[0, inf)",
    "class_dropout_prob": "[0, 1)",
    "dropout": "[0, 1)",
    "ema_inv_gamma": "(0, inf)",
    "ema_power": "(0, inf)",
    "ema_max_decay": "[0, 1]",
    "guidance_scale": "[0, inf)",
}


def in_interval(value: float, interval: str) -> bool:
    """Whether the finite `value` lies in `interval`, written like "[0, 1)"."""
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    above = value >= low if interval[0] == "[" else value > low
    below = value <= high if interval[-1] == "]" else value < high
    return math.isfinite(value) and above and below


def check_floats(args: argparse.Namespace) -> None:
    """Refuses a non-finite or out-of-range value of any float argument, naming the flag, value and interval."""
    for name, interval in FLOAT_RANGES.items():
        value = getattr(args, name)
        if value is not None and not in_interval(value, interval):
            finite = "" if math.isfinite(value) else "a finite number "
            raise ValueError(f"--{name} must be {finite}in {interval}, but is {value}.")


def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train a diffusers-simple pipeline (SimpleUNet + SimpleScheduler). Launch with "
        "`accelerate launch training/train.py ...`; with no dataset argument it trains on the embedded digits."
    )
    parser.add_argument(
        "--config", type=str, default=None, help="A YAML or JSON file of arguments; the command line overrides it."
    )

    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset_name",
        type=str,
        default=None,
        help="A dataset on the Hub, a local dataset folder `load_dataset` understands, or a `save_to_disk` folder. "
        "Without it and without --train_data_dir, the embedded UCI digits (8x8, labels 0-9, package data) are used.",
    )
    data.add_argument(
        "--dataset_config_name", type=str, default=None, help="The config of the dataset, if it has several."
    )
    data.add_argument(
        "--train_data_dir",
        type=str,
        default=None,
        help="A folder of images, loaded with the `imagefolder` builder (sub-folders become a `label` column).",
    )
    data.add_argument(
        "--image_column", type=str, default=None, help="The image column (default: the first `Image` feature)."
    )
    data.add_argument(
        "--label_column",
        type=str,
        default=None,
        help="A `ClassLabel` column to train a class-conditional model on (default: unconditional).",
    )
    data.add_argument(
        "--streaming",
        action="store_true",
        help="Stream the dataset instead of downloading it (needs --max_train_steps).",
    )
    data.add_argument("--shuffle_buffer_size", type=int, default=1000, help="Shuffle buffer of a streamed dataset.")
    data.add_argument("--cache_dir", type=str, default=None, help="Where downloaded datasets and models are stored.")
    data.add_argument(
        "--max_train_samples",
        type=int,
        default=None,
        help="Train on the first N samples only (after a seeded shuffle).",
    )
    data.add_argument(
        "--resolution", type=int, default=64, help="Images are resized (shorter side) and cropped to this size."
    )
    data.add_argument("--center_crop", action="store_true", help="Crop at the center instead of at a random position.")
    data.add_argument("--random_flip", action="store_true", help="Flip images horizontally with probability 0.5.")
    data.add_argument(
        "--pad_to_resolution",
        action="store_true",
        help="Pad images smaller than --resolution with black to that size (e.g. 28x28 Fashion-MNIST to 32x32) "
        "instead of resizing them; larger images are still resized and cropped.",
    )
    data.add_argument(
        "--num_channels",
        type=int,
        default=None,
        choices=(1, 3, 4),
        help="Convert images to 1 (L), 3 (RGB) or 4 (RGBA) channels (default: from the data or the pretrained UNet).",
    )
    data.add_argument(
        "--decode_errors",
        type=str,
        default="raise",
        choices=("raise", "skip"),
        help="What to do with an image that fails to decode: stop with an error, or skip it and count it.",
    )
    data.add_argument(
        "--dataloader_num_workers", type=int, default=0, help="Data loading subprocesses (0: the main process)."
    )

    model = parser.add_argument_group("model")
    model.add_argument(
        "--model_config_name_or_path",
        type=str,
        default=None,
        help="A SimpleUNet config JSON to train from scratch, or a pipeline folder, Hub id or UNet folder to "
        "fine-tune (its weights, and a pipeline's scheduler config).",
    )
    model.add_argument(
        "--block_out_channels", type=int, nargs="+", default=None, help="UNet channels per resolution level."
    )
    model.add_argument(
        "--layers_per_block",
        type=int,
        nargs="+",
        default=None,
        help="UNet residual layers per level (one int, or one per level).",
    )
    model.add_argument(
        "--attention_levels",
        type=_bool,
        nargs="+",
        default=None,
        help="Self-attention on/off per level, e.g. `false true`.",
    )
    model.add_argument("--attention_head_dim", type=int, default=None, help="Channels per attention head.")
    model.add_argument(
        "--norm_num_groups", type=int, default=None, help="GroupNorm groups (must divide every level's channels)."
    )
    model.add_argument("--dropout", type=float, default=None, help="Dropout in the residual blocks.")
    model.add_argument(
        "--num_class_embeds",
        type=int,
        default=None,
        help="Number of classes of an integer --label_column (a `ClassLabel` column gives it by itself).",
    )

    scheduler = parser.add_argument_group("noise scheduler")
    scheduler.add_argument("--ddpm_num_steps", type=int, default=None, help="Diffusion steps T (default 1000).")
    scheduler.add_argument(
        "--ddpm_beta_schedule", type=str, default=None, choices=BETA_SCHEDULES, help="Beta schedule (default linear)."
    )
    scheduler.add_argument(
        "--prediction_type",
        type=str,
        default=None,
        choices=PREDICTION_TYPES,
        help="What the model predicts (default epsilon).",
    )
    scheduler.add_argument(
        "--sampler",
        type=str,
        default=None,
        choices=SAMPLERS,
        help="Sampler of the validation images, saved as the pipeline's default (default unipc).",
    )
    scheduler.add_argument(
        "--ddpm_num_inference_steps",
        type=int,
        default=None,
        help="Denoising steps of the validation images (default: 1000 for ddpm, 20 for the others).",
    )
    scheduler.add_argument(
        "--calibrate_budgets",
        type=int,
        nargs="+",
        default=None,
        help="At the final export, calibrate the time grids for these numbers of model calls (e.g. `5 10`) against a "
        "fine reference solve and store them in the scheduler config (`diffusers-simple-calibrate` does the same "
        "for a saved pipeline), so that `pipe(num_inference_steps=N)` uses them.",
    )

    train = parser.add_argument_group("training")
    train.add_argument(
        "--output_dir",
        type=str,
        default="ddpm-model-64",
        help="Where the pipeline, samples and checkpoints are written.",
    )
    train.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Train into an output dir that holds another run (its checkpoints are deleted).",
    )
    train.add_argument(
        "--seed",
        type=int,
        default=None,
        help="A seed for a reproducible run (default: a random one, logged and kept in checkpoints).",
    )
    train.add_argument("--train_batch_size", type=int, default=16, help="Batch size per process.")
    train.add_argument("--eval_batch_size", type=int, default=16, help="Images in each validation grid.")
    train.add_argument("--num_epochs", type=int, default=100)
    train.add_argument(
        "--max_train_steps", type=int, default=None, help="Optimizer steps to train for; overrides --num_epochs."
    )
    train.add_argument("--gradient_accumulation_steps", type=int, default=1, help="Batches per optimizer step.")
    train.add_argument("--learning_rate", type=float, default=1e-4)
    train.add_argument("--lr_scheduler", type=str, default="cosine", choices=[s.value for s in SchedulerType])
    train.add_argument("--lr_warmup_steps", type=int, default=500)
    train.add_argument("--adam_beta1", type=float, default=0.95)
    train.add_argument("--adam_beta2", type=float, default=0.999)
    train.add_argument("--adam_weight_decay", type=float, default=1e-6)
    train.add_argument("--adam_epsilon", type=float, default=1e-08)
    train.add_argument(
        "--max_grad_norm", type=float, default=1.0, help="Gradient clipping norm (0 disables clipping)."
    )
    train.add_argument(
        "--mixed_precision",
        type=str,
        default=None,
        choices=("no", "fp16", "bf16"),
        help="Autocast the UNet to fp16/bf16 (weights and forward noising stay float32). Default: accelerate config.",
    )
    train.add_argument(
        "--gradient_checkpointing",
        action="store_true",
        help="Recompute activations in the backward pass to save memory.",
    )
    train.add_argument(
        "--snr_gamma",
        type=float,
        default=None,
        help="Min-SNR loss weighting gamma (Hang et al. 2023); 5.0 is recommended.",
    )
    train.add_argument(
        "--noise_offset",
        type=float,
        default=0.0,
        help="Offset noise scale (a per-channel constant added to the noise).",
    )
    train.add_argument(
        "--class_dropout_prob",
        type=float,
        default=0.0,
        help="Probability of replacing a label by the null class (for classifier-free guidance).",
    )
    train.add_argument(
        "--use_ema",
        action="store_true",
        help="Keep an exponential moving average of the weights for samples and export.",
    )
    train.add_argument("--ema_inv_gamma", type=float, default=1.0, help="EMA warmup inverse gamma.")
    train.add_argument("--ema_power", type=float, default=3 / 4, help="EMA warmup power.")
    train.add_argument("--ema_max_decay", type=float, default=0.9999, help="Maximum EMA decay.")

    save = parser.add_argument_group("checkpoints, samples and logging")
    save.add_argument(
        "--checkpointing_steps", type=int, default=500, help="Save a resumable checkpoint every N optimizer steps."
    )
    save.add_argument(
        "--checkpoints_total_limit", type=int, default=None, help="Keep at most N checkpoints (the newest)."
    )
    save.add_argument(
        "--resume_from_checkpoint", type=str, default=None, help='A checkpoint folder, or "latest" in --output_dir.'
    )
    save.add_argument("--save_images_epochs", type=int, default=10, help="Write a sample grid every N epochs.")
    save.add_argument(
        "--validation_steps", type=int, default=None, help="Also write a sample grid every N optimizer steps."
    )
    save.add_argument(
        "--save_model_epochs", type=int, default=10, help="Export the pipeline to --output_dir every N epochs."
    )
    save.add_argument(
        "--guidance_scale", type=float, default=1.0, help="Classifier-free guidance scale of the validation samples."
    )
    save.add_argument("--logger", type=str, default="tensorboard", choices=("tensorboard", "wandb"))
    save.add_argument("--logging_dir", type=str, default="logs", help="Tracker logs, relative to --output_dir.")

    hub = parser.add_argument_group("Hugging Face Hub")
    hub.add_argument("--push_to_hub", action="store_true", help="Push the exported pipeline to the Hub at the end.")
    hub.add_argument("--push_every_save", action="store_true", help="Also push at every export during training.")
    hub.add_argument(
        "--hub_model_id", type=str, default=None, help="The repo to push to (default: the name of --output_dir)."
    )
    hub.add_argument(
        "--hub_token", type=str, default=None, help="A Hub token with write access (default: the cached login)."
    )
    hub.add_argument("--hub_private_repo", action="store_true", help="Create the repo as private.")
    hub.add_argument("--license", type=str, default="apache-2.0", help="The license written into the model card.")
    return parser


def _config_tokens(parser: argparse.ArgumentParser, path: str) -> list[str]:
    """The arguments of a YAML/JSON config file as command-line tokens, so argparse checks their types and choices."""
    if not os.path.isfile(path):
        raise ValueError(f"--config {path!r} is not a file.")
    with open(path, encoding="utf-8") as f:
        config = json.load(f) if path.endswith(".json") else yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ValueError(
            f"--config {path!r} must hold a mapping of argument names to values, not {type(config).__name__}."
        )
    actions = {action.dest: action for action in parser._actions}
    accepted = set(actions) - {"help", "config"}
    unknown = sorted(set(config) - accepted)
    if unknown:
        raise ValueError(f"--config {path!r} has unknown arguments {unknown}; accepted are {sorted(accepted)}.")
    tokens = []
    for name, value in config.items():
        flag = f"--{name}"
        if isinstance(actions[name], argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise ValueError(f"--config {path!r}: {name} must be true or false, not {value!r}.")
            tokens += [flag] if value else []
        elif value is not None:
            tokens += [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
    return tokens


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses `argv` (default: `sys.argv[1:]`), reading `--config` first, and checks the combinations of arguments
    that can be checked without data or model."""
    parser = build_parser()
    config_path = parser.parse_known_args(argv)[0].config
    tokens = _config_tokens(parser, config_path) if config_path else []
    args = parser.parse_args(tokens + list(argv if argv is not None else sys.argv[1:]))

    check_floats(args)  # first: a NaN would pass the checks below
    if args.dataset_name is not None and args.train_data_dir is not None:
        raise ValueError("Give either --dataset_name or --train_data_dir, not both.")
    for budget in args.calibrate_budgets or []:
        if budget < 1:
            raise ValueError(f"--calibrate_budgets must be positive numbers of model calls, but holds {budget}.")
    if args.calibrate_budgets and args.sampler not in (None, "unipc", "dpmsolver++"):
        raise ValueError(f"--calibrate_budgets needs an ODE sampler (--sampler unipc or dpmsolver++), not {args.sampler!r}.")
    if args.streaming and args.max_train_steps is None:
        raise ValueError("--streaming needs --max_train_steps: the length of a streamed dataset is unknown.")
    if args.class_dropout_prob and args.label_column is None:
        raise ValueError(
            "--class_dropout_prob needs --label_column: it drops class labels for classifier-free guidance."
        )
    if args.guidance_scale != 1.0 and args.label_column is None:
        raise ValueError("--guidance_scale needs --label_column (a class-conditional model); leave it at 1.0.")
    if args.push_every_save and not args.push_to_hub:
        raise ValueError("--push_every_save needs --push_to_hub.")
    positive = (
        "resolution",
        "train_batch_size",
        "eval_batch_size",
        "num_epochs",
        "max_train_steps",
        "gradient_accumulation_steps",
        "checkpointing_steps",
        "checkpoints_total_limit",
        "save_images_epochs",
        "validation_steps",
        "save_model_epochs",
        "max_train_samples",
        "ddpm_num_steps",
        "ddpm_num_inference_steps",
        "shuffle_buffer_size",
        "num_class_embeds",
    )
    for name in positive:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be a positive integer, but is {value}.")
    for name in ("lr_warmup_steps", "dataloader_num_workers"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name} must be >= 0, but is {getattr(args, name)}.")
    return args
