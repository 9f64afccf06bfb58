"""Sampling throughput of SimpleDiffusionPipeline vs DDPMPipeline / DDIMPipeline, and scheduler step() overhead.

Pipelines: the same number of steps and batch; first with the same UNet2DModel weights in both pipelines (so only the
pipeline loop and the scheduler differ), then each pipeline with its own UNet at matched parameter count (SimpleUNet
vs UNet2DModel, as in `train_throughput.py`). Scheduler overhead: microseconds per `step()` call of SimpleScheduler vs
the Diffusers scheduler of the same algorithm on a fixed model output (`set_timesteps` included, amortised over the
steps). All timings interleave the two sides and report the median of repeats after a warm-up run.
"""

import time

import torch
from common import build_unet, machine_description, new_figure, parameter_count, parse_args, time_interleaved, write_results
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, DPMSolverMultistepScheduler

from diffusers_simple import SimpleDiffusionPipeline, SimpleScheduler
from train_throughput import FULL as TRAIN_FULL
from train_throughput import TINY as TRAIN_TINY

FULL = dict(sample_size=32, batch_size=16, num_inference_steps=50, repeats=3, step_repeats=20, unet=TRAIN_FULL["unet"])
TINY = dict(sample_size=16, batch_size=2, num_inference_steps=3, repeats=1, step_repeats=2, unet=TRAIN_TINY["unet"])
# algorithm -> (SimpleScheduler config, the Diffusers scheduler of the same algorithm, its pipeline)
ALGORITHMS = {
    "DDPM": ({"sampler": "ddpm"}, DDPMScheduler, DDPMPipeline),
    "DDIM": ({"sampler": "ddim"}, DDIMScheduler, DDIMPipeline),
    "DPM-Solver++ 2M": ({"sampler": "dpmsolver++"}, DPMSolverMultistepScheduler, None),
}


def pipeline_runner(pipeline, setting):
    pipeline.set_progress_bar_config(disable=True)

    def run():
        pipeline(batch_size=setting["batch_size"], generator=torch.Generator().manual_seed(0),
                 num_inference_steps=setting["num_inference_steps"], output_type="np")

    return run


def step_loop(scheduler, setting):
    """One denoising loop of `num_inference_steps` scheduler steps with a fixed model output (no model)."""
    shape = (setting["batch_size"], 3, setting["sample_size"], setting["sample_size"])
    model_output = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    sample = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    stochastic = isinstance(scheduler, DDPMScheduler) or scheduler.config.get("sampler") == "ddpm"
    kwargs = {"generator": generator} if stochastic else {}

    def run():
        scheduler.set_timesteps(setting["num_inference_steps"])
        x = sample
        for t in scheduler.timesteps:
            x = scheduler.step(model_output, t, x, **kwargs).prev_sample

    return run


def main():
    args = parse_args(__doc__.splitlines()[0])
    setting = TINY if args.tiny else FULL
    start = time.perf_counter()
    torch.manual_seed(0)
    simple_unet, unet2d = (build_unet(kind, setting["sample_size"], 3, **setting["unet"]).eval() for kind in ("SimpleUNet", "UNet2DModel"))
    mismatch = parameter_count(simple_unet) / parameter_count(unet2d) - 1

    rows, bars = [], {}
    with torch.inference_mode():
        for algorithm in ("DDPM", "DDIM"):
            config, scheduler_class, pipeline_class = ALGORITHMS[algorithm]
            runners = {
                "same UNet2DModel": (
                    pipeline_runner(SimpleDiffusionPipeline(unet2d, SimpleScheduler(**config)), setting),
                    pipeline_runner(pipeline_class(unet2d, scheduler_class()), setting),
                ),
                f"own UNets ({mismatch:+.0%} params)": (
                    pipeline_runner(SimpleDiffusionPipeline(simple_unet, SimpleScheduler(**config)), setting),
                    pipeline_runner(pipeline_class(unet2d, scheduler_class()), setting),
                ),
            }
            for label, (ours, theirs) in runners.items():
                seconds = time_interleaved({"ours": ours, "theirs": theirs}, repeats=setting["repeats"], warmup=1)
                images_per_second = {side: setting["batch_size"] / s for side, s in seconds.items()}
                name = f"{algorithm} pipeline, {label}: images/s"
                rows.append([name, images_per_second["ours"], images_per_second["theirs"], seconds["theirs"] / seconds["ours"]])
                bars[f"{algorithm} pipeline, {label}"] = seconds["theirs"] / seconds["ours"]

    for algorithm, (config, scheduler_class, _) in ALGORITHMS.items():
        loops = {"ours": step_loop(SimpleScheduler(**config), setting), "theirs": step_loop(scheduler_class(), setting)}
        seconds = time_interleaved(loops, repeats=setting["step_repeats"], warmup=1)
        microseconds = {side: s / setting["num_inference_steps"] * 1e6 for side, s in seconds.items()}
        rows.append([f"{algorithm} step(): us per step", microseconds["ours"], microseconds["theirs"], seconds["theirs"] / seconds["ours"]])
        bars[f"{algorithm} step()"] = seconds["theirs"] / seconds["ours"]

    headers = ["measurement", "diffusers-simple", "Diffusers", "speed-up (Diffusers time / ours)"]
    figure, axes = new_figure(width=7)
    ax = axes[0, 0]
    ax.barh(list(bars), list(bars.values()), color="C0")
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set(xlabel="speed-up over Diffusers (Diffusers time / ours)", title="Sampling speed (higher is better)")
    ax.tick_params(axis="y", labelsize=8)

    wall = time.perf_counter() - start
    notes = f"""
{setting['num_inference_steps']} steps, batch {setting['batch_size']} of {setting['sample_size']}x{setting['sample_size']}x3,
float32, `output_type="np"`; median of {setting['repeats']} interleaved pipeline calls ({setting['step_repeats']} step
loops) after a warm-up. Ours: SimpleDiffusionPipeline + SimpleScheduler(sampler="ddpm" / "ddim" / "dpmsolver++");
Diffusers: DDPMPipeline + DDPMScheduler, DDIMPipeline + DDIMScheduler, DPMSolverMultistepScheduler (each at its defaults).
UNets as in the training benchmark: channels {setting['unet']['block_out_channels']}, SimpleUNet {parameter_count(simple_unet) / 1e6:.2f} M,
UNet2DModel {parameter_count(unet2d) / 1e6:.2f} M parameters. {machine_description(args.num_threads)}; wall time
{wall:.0f} s (`benchmarks/sampling_speed.py`).
"""
    write_results(args.output_dir, "sampling_speed", "Sampling speed", headers, rows, notes, figure)


if __name__ == "__main__":
    main()
