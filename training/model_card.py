# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""The model card (README.md) of an exported pipeline, rendered from `model_cards/model_card_template.md` with
huggingface_hub's `ModelCard` / `ModelCardData`."""

import json
import os
from importlib.resources import files

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from diffusers_simple_training.atomic import write_text


# `model_cards/` of the checkout, installed as the package data `diffusers_simple_training.model_cards`.
TEMPLATE_PATH = files("diffusers_simple_training.model_cards") / "model_card_template.md"
EVAL_RESULTS_NAME = "eval_results.json"
CARD_NAME = "README.md"
EVALUATION_SECTION = ("<!-- evaluation:start -->", "<!-- evaluation:end -->")  # around the template's metrics
TAGS = ["diffusers-simple", "diffusers", "unconditional-image-generation", "ddpm", "diffusion-models"]


def read_eval_results(output_dir: str) -> tuple[dict, dict]:
    """`(metrics, settings)` from `output_dir/eval_results.json` (written by `training/evaluate.py`) if it exists:
    its top-level numbers, and its `"settings"` entry."""
    path = os.path.join(output_dir, EVAL_RESULTS_NAME)
    if not os.path.isfile(path):
        return {}, {}
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    metrics = {
        name: f"{value:.4g}" if isinstance(value, float) else value
        for name, value in results.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    return metrics, results.get("settings", {})


def model_index_results(metrics: dict, settings: dict, training_data: str) -> list[EvalResult]:
    """The card's `model-index` entries: one per measured metric of `eval_results.json` (not the floors, which measure
    the data), on its reference data (`training_data` if the evaluation had none)."""
    reference = settings.get("reference") or training_data
    split = settings.get("reference_split")
    config = ", ".join(f"{k} {settings[k]}" for k in ("scheduler", "num_inference_steps", "num_samples") if k in settings)
    return [
        EvalResult(
            task_type="unconditional-image-generation",
            dataset_type=str(reference),
            dataset_name=str(reference),
            dataset_split=None if split is None else str(split),
            metric_type=name,
            metric_name=name,
            metric_value=float(value),
            metric_config=config or None,
        )
        for name, value in metrics.items()
        if not name.endswith("_floor")
    ]


def hyperparameters(args, num_processes: int, max_train_steps: int, seed: int) -> dict:
    """The training settings shown in the card, as name -> value."""
    table = {
        "resolution": args.resolution,
        "batch size (per process x processes x accumulation)": f"{args.train_batch_size} x {num_processes} x "
        f"{args.gradient_accumulation_steps} = "
        f"{args.train_batch_size * num_processes * args.gradient_accumulation_steps}",
        "optimizer": f"AdamW (betas {args.adam_beta1}, {args.adam_beta2}; weight decay {args.adam_weight_decay}; "
        f"epsilon {args.adam_epsilon})",
        "learning rate": f"{args.learning_rate} ({args.lr_scheduler}, {args.lr_warmup_steps} warmup steps)",
        "max gradient norm": args.max_grad_norm or "no clipping",
        "training steps": max_train_steps,
        "mixed precision": args.mixed_precision,
        "EMA": f"max decay {args.ema_max_decay}, inv_gamma {args.ema_inv_gamma}, power {args.ema_power}"
        if args.use_ema
        else "no",
        "min-SNR gamma": args.snr_gamma or "no",
        "noise offset": args.noise_offset or "no",
        "augmentation": ", ".join(
            filter(
                None,
                [
                    "padded to the resolution" if args.pad_to_resolution else "",
                    "center crop" if args.center_crop else "random crop",
                    "horizontal flip" if args.random_flip else "",
                ],
            )
        ),
        "seed": seed,
    }
    if args.label_column is not None:
        table["class dropout"] = args.class_dropout_prob
    return table


def render_model_card(
    args,
    *,
    repo_id: str,
    unet,
    scheduler,
    data,
    grid_file: str,
    grid_caption: str,
    global_step: int,
    epochs: float,
    final_loss: float | None,
    loss_window: int,
    num_processes: int,
    max_train_steps: int,
    seed: int,
    base_model: str | None = None,
) -> ModelCard:
    """Renders the card of the pipeline made of `unet` and `scheduler`; metrics come from `eval_results.json` in
    `args.output_dir` when it exists."""
    class_names = None
    if data.num_classes is not None:
        feature = data.dataset.features[data.label_column] if data.dataset.features else None
        class_names = getattr(feature, "names", None) or [str(i) for i in range(data.num_classes)]
    tags = TAGS + (["class-conditional"] if class_names else [])
    metrics, eval_settings = read_eval_results(args.output_dir)
    model_name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        model_name=model_name,
        eval_results=model_index_results(metrics, eval_settings, data.hub_id or data.description) or None,
        library_name="diffusers",
        pipeline_tag="unconditional-image-generation",
        tags=tags,
        datasets=[data.hub_id] if data.hub_id else None,
        license=args.license,
        base_model=base_model,
    )
    config = unet.config
    levels = len(config.block_out_channels)
    color = {1: "grayscale", 3: "RGB", 4: "RGBA"}[config.in_channels]
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=model_name,
        repo_id=repo_id,
        resolution=args.resolution,
        color=color,
        dataset=data.description,
        grid_file=grid_file,
        grid_caption=grid_caption,
        class_names=class_names,
        # class names worth listing: not just "0", "1", ...
        named_classes=class_names
        if class_names and class_names != [str(i) for i in range(len(class_names))]
        else None,
        class_dropout_prob=args.class_dropout_prob,
        usage_labels=list(range(min(4, data.num_classes))) if class_names else None,
        sampler=scheduler.config.sampler,
        num_parameters=f"{sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M",
        unet_summary=f"{levels} levels with {list(config.block_out_channels)} channels, layers per level "
        f"{config.layers_per_block}, attention at levels {[i for i, a in enumerate(config.attention_levels) if a]} "
        f"and in the middle block, dropout {config.dropout}",
        schedule_summary=f"{scheduler.config.beta_schedule} betas from {scheduler.config.beta_start} to "
        f"{scheduler.config.beta_end} over T = {scheduler.config.num_train_timesteps} steps, "
        f"prediction type {scheduler.config.prediction_type}",
        global_step=global_step,
        epochs=f"{epochs:.1f}",
        final_loss="n/a" if final_loss is None else f"{final_loss:.4f}",
        loss_window=loss_window,
        num_processes=num_processes,
        hyperparameters=hyperparameters(args, num_processes, max_train_steps, seed),
        metrics=metrics,
        eval_settings=eval_settings,
    )


def _evaluation_section(text: str) -> tuple[int, int] | None:
    """Where the evaluation section of a card or template text starts and ends (the markers included), if it has one."""
    start, end = text.find(EVALUATION_SECTION[0]), text.find(EVALUATION_SECTION[1])
    return (start, end + len(EVALUATION_SECTION[1])) if 0 <= start < end else None


def add_eval_results_to_card(folder: str) -> bool:
    """Writes the metrics of `folder/eval_results.json` into the model card `folder/README.md` of an exported
    pipeline: its `model-index` metadata and its Evaluation section, rendered from the template's (replacing the one
    there, or appended to a card that has none). Does nothing and returns False if either file is missing; the card
    is replaced atomically."""
    card_path = os.path.join(folder, CARD_NAME)
    metrics, settings = read_eval_results(folder)
    if not metrics or not os.path.isfile(card_path):
        return False
    card = ModelCard.load(card_path)
    template = TEMPLATE_PATH.read_text(encoding="utf-8")
    start, end = _evaluation_section(template)
    section = jinja2.Template(template[start:end]).render(metrics=metrics, eval_settings=settings)
    start, end = _evaluation_section(card.text) or (len(card.text), len(card.text))
    card.text = card.text[:start] + section + card.text[end:]
    training_data = (card.data.datasets or [None])[0] or os.path.basename(os.path.normpath(folder))
    card.data.eval_results = model_index_results(metrics, settings, training_data)
    card.data.model_name = card.data.model_name or os.path.basename(os.path.normpath(folder))
    write_text(card_path, str(card))  # what `card.save` writes, flushed to disk before it replaces the old card
    return True
