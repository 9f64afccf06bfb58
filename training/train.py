# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""
Train a diffusers-simple pipeline (SimpleUNet + SimpleScheduler) with the DDPM objective.

    accelerate launch training/train.py --config training/configs/demo.yaml --output_dir outputs/demo

With no dataset argument it trains on the embedded scikit-learn digits. See `python training/train.py --help`.

Each step is Algorithm 1 of Ho et al. (2020): draw x_0 from the data, t ~ U{0..T-1} and eps ~ N(0, I), form
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps in float32, and regress the model output on eps (or on v or x_0, see
`--prediction_type`), optionally with Min-SNR weights and offset noise.

Distributed training is Accelerate's: `accelerate launch --multi_gpu --num_processes N` (DDP; on a machine without
GPUs it runs N processes with the gloo backend), `--num_machines M --machine_rank R --main_process_ip IP` for several
nodes, and FSDP or DeepSpeed through an `accelerate config` file (`accelerate launch --config_file fsdp.yaml ...`).
Every process trains on its own share of each epoch; only the main process writes samples, checkpoints, the exported
pipeline and its card. A run resumed with `--resume_from_checkpoint latest` continues with the same data order,
noise and weights as if it had never stopped (bitwise on CPU).
"""

import contextlib
import logging
import os
import random
import shutil
from collections import deque
from datetime import timedelta

import datasets
import diffusers
import numpy as np
import torch
from accelerate import Accelerator, InitProcessGroupKwargs
from accelerate.logging import get_logger
from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration, broadcast_object_list, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from diffusers.utils import is_tensorboard_available, is_wandb_available
from huggingface_hub import create_repo
from tqdm.auto import tqdm

from diffusers_simple import SimpleUNet
from diffusers_simple_training.args import parse_args
from diffusers_simple_training.checkpointing import (
    CHECKPOINT_PATTERN,
    list_checkpoints,
    load_checkpoint,
    read_trainer_state,
    resolve_checkpoint,
    save_checkpoint,
)
from diffusers_simple_training.data import ExampleProcessor, ImageTransform, TrainBatches, load_training_data
from diffusers_simple_training.export import GRID_NAME, export_pipeline
from diffusers_simple_training.hub import push_folder_to_hub
from diffusers_simple_training.model_card import render_model_card
from diffusers_simple_training.modeling import build_unet_and_scheduler
from diffusers_simple_training.objective import diffusion_loss
from diffusers_simple_training.publish import IGNORE_PATTERNS
from diffusers_simple_training.samples import sample_grid


logger = get_logger(__name__, log_level="INFO")
LOSS_WINDOW = 50  # steps averaged for the "final loss" of the model card


def launched_on_cpus_only() -> bool:
    """Whether the launcher (`accelerate launch --multi_gpu`, `torchrun`) started several processes on a machine
    without accelerators. Accelerate only sets up their process group (gloo) when asked to train on the CPU."""
    has_accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator


def check_output_dir(args, resume_path: str | None) -> None:
    """Refuses to train into a folder that holds another run, unless told to overwrite it or to resume."""
    if args.resume_from_checkpoint is not None or args.overwrite_output_dir:
        return
    if os.path.isdir(args.output_dir) and os.listdir(args.output_dir):
        entries = sorted(os.listdir(args.output_dir))
        raise ValueError(
            f"--output_dir {args.output_dir!r} is not empty (it holds {entries[:8]}"
            f"{' ...' if len(entries) > 8 else ''}). Pass --resume_from_checkpoint latest to continue the run there, "
            "--overwrite_output_dir to start over in it (its checkpoints are deleted), or another --output_dir."
        )


def resolve_seed(args, resume_path: str | None) -> int:
    """--seed; else the seed of the checkpoint being resumed; else a random one, the same on every process."""
    if resume_path is not None:
        saved = read_trainer_state(resume_path)["seed"]
        if args.seed is not None and args.seed != saved:
            logger.warning(
                f"--seed {args.seed} differs from the seed {saved} of the resumed run: the run will not be "
                "reproducible."
            )
        return saved if args.seed is None else args.seed
    if args.seed is not None:
        return args.seed
    return broadcast_object_list([random.SystemRandom().randrange(2**31)])[0]


@contextlib.contextmanager
def inference_weights(model, ema, device):
    """`model` in eval mode with the EMA weights (if any); afterwards the training weights, mode and random state are
    back, so sampling and exporting never change the course of training."""
    if ema is not None:
        ema.store(model.parameters())
        ema.copy_to(model.parameters())
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield model
    finally:
        model.train()
        if ema is not None:
            ema.restore(model.parameters())


def log_grid(accelerator, grid, step: int) -> None:
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("samples", np.asarray(grid.convert("RGB")), step, dataformats="HWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({"samples": wandb.Image(grid)}, step=step)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.logger == "wandb" and not is_wandb_available():
        raise ImportError("--logger wandb needs the wandb package: `pip install wandb`, or use --logger tensorboard.")
    if args.logger == "tensorboard" and not is_tensorboard_available():
        raise ImportError("--logger tensorboard needs the tensorboard package: `pip install tensorboard`.")

    accelerator = Accelerator(
        cpu=launched_on_cpus_only(),
        mixed_precision=args.mixed_precision,
        # Accumulation counts batches across epoch ends; the count is part of the saved state.
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=args.gradient_accumulation_steps, sync_with_dataloader=False
        ),
        log_with=args.logger,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
        ),
        # The main process samples and saves while the others wait.
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=2))],
    )
    args.mixed_precision = accelerator.mixed_precision  # as resolved from the flag or the accelerate config
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    if not accelerator.is_local_main_process:
        datasets.utils.logging.set_verbosity_error()
        diffusers.utils.logging.set_verbosity_error()

    # Everything that can be checked is checked before anything is written or trained.
    resume_path = resolve_checkpoint(args.resume_from_checkpoint, args.output_dir)
    check_output_dir(args, resume_path)
    seed = resolve_seed(args, resume_path)
    set_seed(seed, device_specific=True)  # every process draws its own noise
    with accelerator.main_process_first():
        data = load_training_data(args, seed)
    unet, noise_scheduler, base_model = build_unet_and_scheduler(args, data)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    processor = ExampleProcessor(
        ImageTransform(args.resolution, unet.config.in_channels, args.center_crop, args.random_flip),
        data.image_column,
        data.label_column,
        data.num_classes,
        skip_decode_errors=args.decode_errors == "skip",
    )
    batches = TrainBatches(data, processor, args, seed, accelerator.process_index, accelerator.num_processes)
    ga = args.gradient_accumulation_steps
    max_train_steps = args.max_train_steps or args.num_epochs * batches.batches_per_epoch // ga
    if max_train_steps < 1:
        raise ValueError(
            f"--num_epochs {args.num_epochs} gives {args.num_epochs * batches.batches_per_epoch} batches, fewer than "
            f"one optimizer step of --gradient_accumulation_steps {ga}; train longer or set --max_train_steps."
        )

    accelerator.wait_for_everyone()  # every process has checked the output dir before the main one changes it
    if accelerator.is_main_process:
        if args.overwrite_output_dir and resume_path is None:
            for name in os.listdir(args.output_dir) if os.path.isdir(args.output_dir) else []:
                if CHECKPOINT_PATTERN.match(name.removesuffix(".tmp")):
                    shutil.rmtree(os.path.join(args.output_dir, name))
        os.makedirs(args.output_dir, exist_ok=True)

    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )
    # Accelerate steps the lr scheduler once per process at every optimizer step.
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    model = accelerator.unwrap_model(unet)
    ema = None
    if args.use_ema:  # made after `prepare`, from the weights every process starts with
        ema = EMAModel(
            model.parameters(),
            decay=args.ema_max_decay,
            use_ema_warmup=True,
            inv_gamma=args.ema_inv_gamma,
            power=args.ema_power,
            model_cls=SimpleUNet,
            model_config=model.config,
        )

    tracker_config = {
        k: v if isinstance(v, (int, float, str, bool)) else str(v)
        for k, v in vars(args).items()
        if v is not None and k != "hub_token"
    }
    accelerator.init_trackers("train_simple", config=dict(tracker_config, seed=seed))

    # What the position in an epoch means; a resumed run should keep it.
    batch_layout = {
        "num_processes": accelerator.num_processes,
        "train_batch_size": args.train_batch_size,
        "gradient_accumulation_steps": ga,
    }
    global_step, epoch, skip = 0, 0, 0
    if resume_path is not None:
        state = load_checkpoint(accelerator, resume_path, ema)
        global_step, epoch, skip = state["global_step"], state["epoch"], state["batches_in_epoch"]
        logger.info(f"Resumed from {resume_path} at step {global_step} (epoch {epoch}, batch {skip}).")
        changed = {name: (state.get(name), value) for name, value in batch_layout.items() if state.get(name) != value}
        if changed:
            logger.warning(
                f"Resuming with other {changed} (checkpoint, now): the rest of the epoch is not the data the "
                "interrupted run would have seen."
            )
    elif args.resume_from_checkpoint == "latest":
        logger.info(f"No checkpoint in {args.output_dir} yet: starting a new run.")

    num_examples = "a stream of" if batches.batches_per_epoch is None else len(data.dataset)
    logger.info(
        f"***** Training on {num_examples} images of {data.description} *****\n"
        f"  {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {max_train_steps} steps of "
        f"{args.train_batch_size} x {accelerator.num_processes} x {ga} images, seed {seed}"
    )
    repo_id = args.hub_model_id or os.path.basename(os.path.normpath(args.output_dir))
    if args.push_to_hub and accelerator.is_main_process:  # fails now, not after training, if the token cannot write
        repo_id = create_repo(repo_id, token=args.hub_token, private=args.hub_private_repo, exist_ok=True).repo_id
    losses, skipped_images = deque(maxlen=LOSS_WINDOW), 0
    progress = tqdm(
        total=max_train_steps, initial=global_step, desc="Steps", unit="step", disable=not accelerator.is_main_process
    )

    def validate():
        with inference_weights(model, ema, accelerator.device):
            grid = sample_grid(
                model, noise_scheduler, args.eval_batch_size, seed, args.ddpm_num_inference_steps, args.guidance_scale
            )
        os.makedirs(os.path.join(args.output_dir, "samples"), exist_ok=True)
        grid.save(os.path.join(args.output_dir, "samples", f"step_{global_step:07d}.png"))
        log_grid(accelerator, grid, global_step)
        return grid

    sampling = [
        "EMA weights" if ema else None,
        f"{noise_scheduler.config.sampler} sampler",
        f"{args.ddpm_num_inference_steps} steps" if args.ddpm_num_inference_steps else None,
        f"guidance scale {args.guidance_scale}" if args.guidance_scale != 1 else None,
    ]
    sampling = ", ".join(filter(None, sampling))

    def export(grid, final: bool) -> None:
        card = render_model_card(
            args,
            repo_id=repo_id,
            unet=model,
            scheduler=noise_scheduler,
            data=data,
            grid_file=GRID_NAME,
            grid_caption=f"Samples at step {global_step} ({sampling}).",
            global_step=global_step,
            epochs=global_step * ga / batches.batches_per_epoch if batches.batches_per_epoch else epoch,
            final_loss=float(np.mean(losses)) if losses else None,
            loss_window=len(losses),
            num_processes=accelerator.num_processes,
            max_train_steps=max_train_steps,
            seed=seed,
            base_model=base_model,
        )
        with inference_weights(model, ema, accelerator.device):
            export_pipeline(model, noise_scheduler, args.output_dir, grid, card)
        logger.info(f"Exported the pipeline at step {global_step} to {args.output_dir}.")
        if args.push_to_hub and (final or args.push_every_save):
            try:
                url = push_folder_to_hub(
                    args.output_dir,
                    repo_id,
                    token=args.hub_token,
                    private=args.hub_private_repo,
                    commit_message=f"Step {global_step}",
                    ignore_patterns=IGNORE_PATTERNS,
                )
                logger.info(f"Pushed to {url}")
            except Exception as error:
                if final:
                    raise
                logger.warning(f"Push at step {global_step} failed, training goes on: {error}")

    while global_step < max_train_steps:
        batches_in_epoch = skip
        step_losses = []
        for batch in batches.epoch(epoch, skip):
            batches_in_epoch += 1
            valid = batch["valid"].to(accelerator.device)
            skipped_images += int((~valid).sum())
            class_labels = batch["class_labels"].to(accelerator.device) if "class_labels" in batch else None
            with accelerator.accumulate(unet):
                # Under --mixed_precision, Accelerate runs the UNet in autocast; noising and loss stay in float32.
                loss = diffusion_loss(
                    unet,
                    noise_scheduler,
                    batch["pixel_values"].to(accelerator.device),
                    class_labels,
                    valid,
                    snr_gamma=args.snr_gamma,
                    noise_offset=args.noise_offset,
                    class_dropout_prob=args.class_dropout_prob,
                    null_class=data.num_classes,
                )
                mean_loss = accelerator.reduce(loss.detach(), reduction="mean")
                if not torch.isfinite(mean_loss):
                    checkpoints = list_checkpoints(args.output_dir)
                    raise FloatingPointError(
                        f"The loss is {mean_loss.item()} at step {global_step + 1} (epoch {epoch}); training stopped "
                        "before updating the weights with it. The last checkpoint is "
                        f"{checkpoints[-1][1] if checkpoints else 'none (no checkpoint was saved yet)'}. Try a lower "
                        "--learning_rate, --max_grad_norm, or --mixed_precision bf16 instead of fp16."
                    )
                step_losses.append(mean_loss.item())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    if args.max_grad_norm:
                        accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)

            if not accelerator.sync_gradients:
                continue
            if ema is not None:
                ema.step(model.parameters())
            global_step += 1
            losses.append(float(np.mean(step_losses)))
            logs = {"loss": losses[-1], "lr": lr_scheduler.get_last_lr()[0]}
            progress.set_postfix(**logs)
            progress.update(1)
            if ema is not None:
                logs["ema_decay"] = ema.cur_decay_value
            if skipped_images:
                logs["skipped_images"] = skipped_images
            accelerator.log(logs, step=global_step)
            step_losses = []

            if global_step % args.checkpointing_steps == 0:
                state = {
                    "global_step": global_step,
                    "epoch": epoch,
                    "batches_in_epoch": batches_in_epoch,
                    "seed": seed,
                    **batch_layout,
                }
                path = save_checkpoint(
                    accelerator, args.output_dir, global_step, state, ema, args.checkpoints_total_limit
                )
                logger.info(f"Saved {path}")
            if args.validation_steps and global_step % args.validation_steps == 0:
                if accelerator.is_main_process:
                    validate()
                accelerator.wait_for_everyone()
            if global_step >= max_train_steps:
                break
        else:  # the epoch is over
            if batches_in_epoch == 0:
                raise ValueError(f"Process {accelerator.process_index} got no training data in epoch {epoch}.")
            epoch, skip = epoch + 1, 0
            # The epochs of a stream end at different steps on different processes: streams only save by steps.
            if batches.batches_per_epoch is not None:
                save_model = epoch % args.save_model_epochs == 0
                if accelerator.is_main_process and (save_model or epoch % args.save_images_epochs == 0):
                    grid = validate()
                    if save_model:
                        export(grid, final=False)
                accelerator.wait_for_everyone()
            continue
        break

    progress.close()
    skipped_images = int(accelerator.reduce(torch.tensor(skipped_images, device=accelerator.device), reduction="sum"))
    if skipped_images:
        logger.warning(f"{skipped_images} images failed to decode and were skipped.")
    if accelerator.is_main_process:
        export(validate(), final=True)
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main()
