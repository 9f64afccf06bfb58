# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""The UNet and noise scheduler to train: new ones from flags / a config JSON, or pretrained ones to fine-tune."""

import os

from diffusers_simple import SimpleScheduler, SimpleUNet


UNET_FLAGS = (
    "block_out_channels",
    "layers_per_block",
    "attention_levels",
    "attention_head_dim",
    "norm_num_groups",
    "dropout",
)
# --flag -> SimpleScheduler config key
SCHEDULER_FLAGS = {
    "ddpm_num_steps": "num_train_timesteps",
    "ddpm_beta_schedule": "beta_schedule",
    "prediction_type": "prediction_type",
    "sampler": "sampler",
}


def _pretrained_layout(source: str) -> str | None:
    """The subfolder of the UNet in a pretrained `source`: "unet" for a pipeline (folder or Hub id), None for a
    UNet folder."""
    if os.path.isdir(source):
        if os.path.isfile(os.path.join(source, "model_index.json")):
            return "unet"
        if os.path.isfile(os.path.join(source, "config.json")):
            return None
        raise ValueError(
            f"--model_config_name_or_path {source!r} is a folder with neither model_index.json (a pipeline) nor "
            "config.json (a UNet); pass a pipeline folder, a UNet folder, a Hub id, or a SimpleUNet config JSON."
        )
    return "unet"  # a Hub id: a pipeline repo


def build_unet_and_scheduler(args, data) -> tuple[SimpleUNet, SimpleScheduler, str | None]:
    """
    Returns `(unet, scheduler, base_model)`.

    - No `--model_config_name_or_path`, or a config JSON: a new SimpleUNet from that config, overridden by the UNet
      flags that are set (where --block_out_channels changes the levels, the config's per-level lists and
      attention_head_dim give way to the SimpleUNet defaults for the new levels, unless flags set them), and by the
      data: `sample_size` = --resolution, `in/out_channels` = --num_channels or the images' channels,
      `num_class_embeds` = the classes of --label_column.
    - A pipeline folder, Hub id or UNet folder: its pretrained UNet (and the pipeline's scheduler config); the data
      must fit it. `base_model` is then the source, for the model card.

    The scheduler is the pretrained one or a default SimpleScheduler, overridden by the scheduler flags that are set.
    """
    flags = {name: getattr(args, name) for name in UNET_FLAGS if getattr(args, name) is not None}
    if len(flags.get("layers_per_block", ())) == 1:  # `--layers_per_block 2`: the same for every level
        flags["layers_per_block"] = flags["layers_per_block"][0]
    source = args.model_config_name_or_path
    scheduler_config, base_model = {}, None

    if source is None or source.endswith(".json"):
        if source is not None and not os.path.isfile(source):
            raise ValueError(f"--model_config_name_or_path {source!r}: no such config file.")
        config = dict(SimpleUNet.load_config(source)) if source else {}
        old_levels, new_levels = config.get("block_out_channels"), flags.get("block_out_channels")
        if old_levels is not None and new_levels is not None and list(old_levels) != list(new_levels):
            # The config file's options that fit its own levels give way to the defaults for the new levels.
            stale = {"attention_head_dim"}
            if len(old_levels) != len(new_levels):
                stale.add("attention_levels")
                if isinstance(config.get("layers_per_block"), list):  # an int fits any number of levels
                    stale.add("layers_per_block")
            for key in stale - set(flags):
                config.pop(key, None)
        channels = args.num_channels or data.num_channels
        config.update(
            flags,
            sample_size=args.resolution,
            in_channels=channels,
            out_channels=channels,
            num_class_embeds=data.num_classes,
        )
        try:
            unet = SimpleUNet.from_config(config)
        except ValueError as error:
            raise ValueError(
                f"The UNet built from --resolution {args.resolution}, {channels} image channels"
                f"{', --model_config_name_or_path ' + source if source else ''} and the flags {flags} is invalid: "
                f"{error}"
            ) from error
    else:
        if flags:
            raise ValueError(
                f"The UNet flags {flags} cannot change the pretrained UNet of --model_config_name_or_path {source!r}."
            )
        subfolder = _pretrained_layout(source)
        unet = SimpleUNet.from_pretrained(source, subfolder=subfolder, cache_dir=args.cache_dir)
        if subfolder is not None:
            scheduler_config = dict(
                SimpleScheduler.load_config(source, subfolder="scheduler", cache_dir=args.cache_dir)
            )
        base_model = None if os.path.isdir(source) else source
        config = unet.config
        if args.num_channels is not None and args.num_channels != config.in_channels:
            raise ValueError(
                f"--num_channels {args.num_channels} contradicts the {config.in_channels} input channels of the "
                "pretrained UNet."
            )
        if data.num_classes != config.num_class_embeds:
            raise ValueError(
                f"The pretrained UNet has num_class_embeds={config.num_class_embeds} but the data has "
                f"{data.num_classes or 'no'} classes (--label_column {args.label_column!r}); they must match."
            )
        factor = 2 ** (len(config.block_out_channels) - 1)
        if args.resolution % factor:
            raise ValueError(
                f"--resolution {args.resolution} must be divisible by {factor}, the downsampling factor of the "
                f"pretrained UNet ({len(config.block_out_channels)} levels)."
            )
        unet.register_to_config(sample_size=args.resolution)

    overrides = {key: getattr(args, flag) for flag, key in SCHEDULER_FLAGS.items() if getattr(args, flag) is not None}
    if {"num_train_timesteps", "beta_schedule"} & set(overrides):
        scheduler_config.pop("trained_betas", None)  # computed from the old schedule
    scheduler = SimpleScheduler.from_config({**scheduler_config, **overrides})
    return unet, scheduler, base_model
