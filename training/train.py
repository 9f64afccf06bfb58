# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""
Train a diffusers-simple pipeline (SimpleUNet + SimpleScheduler) with the DDPM objective.

    accelerate launch training/train.py --config training/configs/demo.yaml --output_dir outputs/demo

With no dataset argument it trains on the embedded UCI digits (package data). See `python training/train.py --help`.

Each step is Algorithm 1 of Ho et al. (2020): draw x_0 from the data, t ~ U{0..T-1} and eps ~ N(0, I), form
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps in float32, and regress the model output on eps (or on v or x_0, see
`--prediction_type`), optionally with Min-SNR weights and offset noise.

Distributed training is Accelerate's: `accelerate launch --multi_gpu --num_processes N` (DDP; on a machine without
GPUs it runs N processes with the gloo backend), `--num_machines M --machine_rank R --main_process_ip IP` for several
nodes, and FSDP2 through `accelerate launch --config_file training/configs/accelerate_fsdp2.yaml` (also on CPUs: see
`fsdp.py`).
Every process trains on its own share of each epoch; only the main process writes samples, checkpoints, the exported
pipeline and its card. A run resumed with `--resume_from_checkpoint latest` continues with the same data order,
noise and weights as if it had never stopped (bitwise on CPU).

This file sets the run up (`main` -> `set_up`); `loop.py` trains, `export.py` writes the pipeline. The output folder
belongs to one run at a time (`run_lock.py`), and its checkpoints form lines (`lineage.py`, `checkpointing.py`).
"""

import logging
import os
import random
from datetime import timedelta

import datasets
import diffusers
import torch
from accelerate import Accelerator, InitProcessGroupKwargs
from accelerate.logging import get_logger
from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration, broadcast_object_list, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from diffusers.utils import is_tensorboard_available, is_wandb_available

from diffusers_simple import SimpleUNet
from diffusers_simple_training import loop
from diffusers_simple_training.args import parse_args
from diffusers_simple_training.checkpointing import (
    is_newest_of_its_line,
    load_checkpoint,
    read_trainer_state,
    resolve_checkpoint,
)
from diffusers_simple_training.data import ExampleProcessor, ImageTransform, TrainBatches, load_training_data
from diffusers_simple_training.export import Publication, export_run
from diffusers_simple_training.fsdp import use_fsdp_on_cpus
from diffusers_simple_training.hub import create_repo_with_retries
from diffusers_simple_training.lineage import RunLine, line_for_resume, new_line_id, write_marker
from diffusers_simple_training.modeling import build_unet_and_scheduler
from diffusers_simple_training.output_folder import check_output_dir, delete_checkpoints
from diffusers_simple_training.run_lock import RunLock
from diffusers_simple_training.samples import inference_unet, log_grid, sample_grid


logger = get_logger(__name__, log_level="INFO")


def launched_on_cpus_only() -> bool:
    """Whether the launcher (`accelerate launch --multi_gpu`, `torchrun`) started several processes on a machine
    without accelerators. Accelerate only sets up their process group (gloo) when asked to train on the CPU."""
    has_accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator


def idle_cores_warning(device_type: str, threads: int, cores: int, local_processes: int) -> str | None:
    """A warning when CPU training leaves cores idle: `accelerate launch` sets OMP_NUM_THREADS=1 unless it is given
    `--num_cpu_threads_per_process` (or `--cpu` on a machine with several physical cores), which on 2 cores makes a
    step about 1.4x slower (Fashion-MNIST config: 1.45 vs 1.01 s)."""
    if device_type != "cpu" or threads * local_processes >= cores:
        return None
    return (
        f"Training on the CPU with {threads} thread(s) in each of {local_processes} process(es) on {cores} cores. "
        f"`accelerate launch` sets OMP_NUM_THREADS=1 unless told otherwise: pass `accelerate launch "
        f"--num_cpu_threads_per_process {max(cores // local_processes, 1)}` (or set OMP_NUM_THREADS) to use them all."
    )


def on_main_process(accelerator, function, *arguments):
    """Runs `function(*arguments)` on the main process only and returns its result on every process; an error there
    is raised on every process (the others would otherwise wait for the main one forever)."""
    result, error = None, None
    if accelerator.is_main_process:
        try:
            result = function(*arguments)
        except Exception as caught:
            error = caught
    if accelerator.num_processes > 1:
        message = f"{type(error).__name__}: {error}" if error is not None else None
        result, message = broadcast_object_list([result, message])
        if message is not None and error is None:
            raise RuntimeError(f"The main process stopped the run: {message}")
    if error is not None:
        raise error
    return result


def resolve_seed(seed: int | None, resume_path: str | None) -> int:
    """`seed`; else the seed of the checkpoint being resumed; else a random one, the same on every process."""
    if resume_path is not None:
        saved = read_trainer_state(resume_path)["seed"]
        if seed is not None and seed != saved:
            logger.warning(
                f"--seed {seed} differs from the seed {saved} of the resumed run: the run will not be reproducible."
            )
        return saved if seed is None else seed
    if seed is not None:
        return seed
    return broadcast_object_list([random.SystemRandom().randrange(2**31)])[0]


def find_resume_checkpoint(output_dir: str, resume_from_checkpoint: str | None, overwrite: bool) -> str | None:
    """Checks (reading only) that the run may write into `output_dir` and finds the checkpoint to resume from."""
    check_output_dir(output_dir, resume=resume_from_checkpoint is not None, overwrite=overwrite)
    return resolve_checkpoint(resume_from_checkpoint, output_dir)


def claim_output_dir(lock: RunLock, output_dir: str, resume_path: str | None, resume: bool, overwrite: bool):
    """The first write of the run: takes the output folder's lock, checks the folder again (another run may have
    written it meanwhile), clears it if asked to, and records the run line being written. Returns that line."""
    os.makedirs(output_dir, exist_ok=True)
    lock.acquire()
    check_output_dir(output_dir, resume=resume, overwrite=overwrite)
    if resume_path is None:
        if overwrite:
            delete_checkpoints(output_dir)
        line = RunLine(new_line_id())
    else:
        inside = os.path.dirname(os.path.abspath(resume_path)) == os.path.abspath(output_dir)
        newest = not inside or is_newest_of_its_line(resume_path, output_dir)
        saved = read_trainer_state(resume_path)
        line = line_for_resume(saved, resume_path, newest)
        if line.id != saved.get("line"):
            logger.info(f"Resuming from {resume_path}, not the newest checkpoint of its line: starting a new line.")
    write_marker(output_dir, line)
    return line


def make_accelerator(args) -> Accelerator:
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
    use_fsdp_on_cpus(accelerator)
    return accelerator


def set_up(args, accelerator, lock: RunLock):
    """Checks everything that can be checked, then claims the output folder and builds the components; returns the
    loop's components, schedule and state, and what the export needs."""
    output_dir, overwrite = args.output_dir, args.overwrite_output_dir
    resume_path = on_main_process(
        accelerator, find_resume_checkpoint, output_dir, args.resume_from_checkpoint, overwrite
    )
    seed = resolve_seed(args.seed, resume_path)
    with accelerator.main_process_first():
        data = load_training_data(
            seed,
            dataset_name=args.dataset_name,
            dataset_config_name=args.dataset_config_name,
            train_data_dir=args.train_data_dir,
            image_column=args.image_column,
            label_column=args.label_column,
            num_class_embeds=args.num_class_embeds,
            streaming=args.streaming,
            max_train_samples=args.max_train_samples,
            cache_dir=args.cache_dir,
        )
    set_seed(seed)  # the same initial weights on every process: FSDP shards them as they are
    unet, noise_scheduler, base_model = build_unet_and_scheduler(args, data)
    set_seed(seed, device_specific=True)  # every process draws its own noise
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    transform = ImageTransform(
        args.resolution, unet.config.in_channels, args.center_crop, args.random_flip, args.pad_to_resolution
    )
    processor = ExampleProcessor(
        transform, data.image_column, data.label_column, data.num_classes, args.decode_errors == "skip"
    )
    batches = TrainBatches(
        data,
        processor,
        args.train_batch_size,
        seed,
        accelerator.process_index,
        accelerator.num_processes,
        args.dataloader_num_workers,
        args.shuffle_buffer_size,
    )
    ga = args.gradient_accumulation_steps
    max_train_steps = args.max_train_steps or args.num_epochs * batches.batches_per_epoch // ga
    if max_train_steps < 1:
        raise ValueError(
            f"--num_epochs {args.num_epochs} gives {args.num_epochs * batches.batches_per_epoch} batches, fewer than "
            f"one optimizer step of --gradient_accumulation_steps {ga}; train longer or set --max_train_steps."
        )

    resume = args.resume_from_checkpoint is not None
    line = on_main_process(accelerator, claim_output_dir, lock, output_dir, resume_path, resume, overwrite)
    accelerator.wait_for_everyone()

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

    components = loop.Components(
        accelerator, unet, model, ema, optimizer, lr_scheduler, noise_scheduler, batches, data.num_classes
    )
    batch_layout = {"num_processes": accelerator.num_processes, "train_batch_size": args.train_batch_size}
    state = loop.RunState(seed, line, dict(batch_layout, gradient_accumulation_steps=ga))
    if resume_path is not None:
        resume_state(accelerator, resume_path, ema, state)
    elif args.resume_from_checkpoint == "latest":
        logger.info(f"No checkpoint in {output_dir} yet: starting a new run.")
    schedule = loop.Schedule(
        output_dir,
        max_train_steps,
        args.checkpointing_steps,
        args.checkpoints_total_limit,
        args.validation_steps,
        args.save_images_epochs,
        args.save_model_epochs,
        args.max_grad_norm,
        dict(snr_gamma=args.snr_gamma, noise_offset=args.noise_offset, class_dropout_prob=args.class_dropout_prob),
    )
    num_examples = "a stream of" if batches.batches_per_epoch is None else len(data.dataset)
    logger.info(
        f"***** Training on {num_examples} images of {data.description} *****\n"
        f"  {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {max_train_steps} steps of "
        f"{args.train_batch_size} x {accelerator.num_processes} x {ga} images, seed {seed}"
    )
    card_facts = {
        "data": data,
        "max_train_steps": max_train_steps,
        "base_model": base_model,
        "epochs_per_step": ga / batches.batches_per_epoch if batches.batches_per_epoch else None,
    }
    return components, schedule, state, card_facts


def resume_state(accelerator, resume_path: str, ema, state: "loop.RunState") -> None:
    saved = load_checkpoint(accelerator, resume_path, ema)
    state.global_step, state.epoch = saved["global_step"], saved["epoch"]
    state.batches_in_epoch, state.parent = saved["batches_in_epoch"], resume_path
    logger.info(
        f"Resumed from {resume_path} at step {state.global_step} (epoch {state.epoch}, batch {state.batches_in_epoch})."
    )
    layout = state.batch_layout
    changed = {name: (saved.get(name), value) for name, value in layout.items() if saved.get(name) != value}
    if changed:
        logger.warning(
            f"Resuming with other {changed} (checkpoint, now): the rest of the epoch is not the data the "
            "interrupted run would have seen."
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.logger == "wandb" and not is_wandb_available():
        raise ImportError("--logger wandb needs the wandb package: `pip install wandb`, or use --logger tensorboard.")
    if args.logger == "tensorboard" and not is_tensorboard_available():
        raise ImportError("--logger tensorboard needs the tensorboard package: `pip install tensorboard`.")
    accelerator = make_accelerator(args)
    args.mixed_precision = accelerator.mixed_precision  # as resolved from the flag or the accelerate config
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    warning = idle_cores_warning(accelerator.device.type, torch.get_num_threads(), cores, local_processes)
    if warning:
        logger.warning(warning)
    if not accelerator.is_local_main_process:
        datasets.utils.logging.set_verbosity_error()
        diffusers.utils.logging.set_verbosity_error()

    lock = RunLock(args.output_dir)
    try:
        c, schedule, state, card_facts = set_up(args, accelerator, lock)
        publication = Publication(
            args.hub_model_id or os.path.basename(os.path.normpath(args.output_dir)),
            args.push_to_hub,
            args.push_every_save,
            args.hub_token,
            args.hub_private_repo,
        )
        if args.push_to_hub and accelerator.is_main_process:  # fails now, not after training, if it cannot write
            publication.repo_id = create_repo_with_retries(publication.repo_id, args.hub_token, args.hub_private_repo)
        card_facts["sampling"] = describe_sampling(c, args.ddpm_num_inference_steps, args.guidance_scale)

        def write_grid(unet):
            grid = sample_grid(
                unet, c.noise_scheduler, args.eval_batch_size, state.seed, args.ddpm_num_inference_steps,
                args.guidance_scale,
            )
            os.makedirs(os.path.join(args.output_dir, "samples"), exist_ok=True)
            grid.save(os.path.join(args.output_dir, "samples", f"step_{state.global_step:07d}.png"))
            log_grid(accelerator.trackers, grid, state.global_step)
            return grid

        # Called on every process; the main process samples and exports, an error there stops every process.
        def validate():
            with inference_unet(c.model, c.ema, accelerator) as unet:
                return on_main_process(accelerator, write_grid, unet)

        def export(grid, final: bool) -> None:
            with inference_unet(c.model, c.ema, accelerator) as unet:
                on_main_process(accelerator, export_run, args, c, unet, state, grid, final, publication, card_facts)

        loop.train(c, schedule, state, validate, export)
        skipped = accelerator.reduce(torch.tensor(state.skipped_images, device=accelerator.device), reduction="sum")
        if int(skipped):
            logger.warning(f"{int(skipped)} images failed to decode and were skipped.")
        export(validate(), final=True)
        # A barrier last: a process that exits with gloo's broadcast work still queued can hang in its destructor.
        accelerator.wait_for_everyone()
        end_training(accelerator, c)
    finally:
        lock.release()


def end_training(accelerator, c: "loop.Components") -> None:
    """Closes the trackers and destroys the process group, after dropping the DDP wrapper.

    DDP's C++ reducer holds the process group. If the reducer is its last holder, the group's destructor runs with the
    GIL held and waits for gloo's worker threads, which may need the GIL to free the tensors of the last collectives:
    a deadlock at exit, seen on loaded 2-core machines. With the wrapper gone first, `destroy_process_group` frees the
    group from Python, without the GIL.
    """
    c.unet = None
    accelerator.free_memory()  # Accelerate's own references to the prepared model, optimizer and scheduler
    accelerator.end_training()


def describe_sampling(c, num_inference_steps: int | None, guidance_scale: float) -> str:
    """How the validation samples are drawn, for the caption of the card's grid."""
    sampling = [
        "EMA weights" if c.ema else None,
        f"{c.noise_scheduler.config.sampler} sampler",
        f"{num_inference_steps} steps" if num_inference_steps else None,
        f"guidance scale {guidance_scale}" if guidance_scale != 1 else None,
    ]
    return ", ".join(filter(None, sampling))


if __name__ == "__main__":
    main()
