"""Training throughput and peak memory of SimpleUNet vs Diffusers' UNet2DModel at matched parameter count.

One training step: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (DDPMScheduler.add_noise), the eps-MSE loss, backward
and an AdamW step, at the same batch size, resolution and optimizer settings for both models; float32 on CPU, bf16
autocast on CUDA. Throughput: both models live in one process and their steps alternate (interleaved timing, median
over repeats after warm-up steps). Peak memory: each model trains a few steps in a fresh subprocess; reported is the
growth over the memory held before the first step (weights and inputs), i.e. gradients, optimizer state and
activations: on CPU (Linux) the peak resident set size during training (VmHWM, reset before the first step) minus
the resident size before it, on CUDA torch.cuda.max_memory_allocated minus the memory allocated before training.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import (
    UNET_CLASSES,
    build_unet,
    device_and_autocast,
    machine_description,
    make_train_step,
    new_figure,
    parameter_count,
    parse_args,
    time_interleaved,
    write_results,
)

FULL = dict(sample_size=32, batch_size=16, repeats=10, unet=dict(
    block_out_channels=(64, 64, 128, 128), attention_levels=(False, False, True, False), attention_head_dim=64, norm_num_groups=32))
TINY = dict(sample_size=16, batch_size=4, repeats=2, unet=dict(
    block_out_channels=(32, 32), attention_levels=(False, True), attention_head_dim=32, norm_num_groups=8))


def add_arguments(parser):
    parser.add_argument("--compile", action="store_true", help="Also time torch.compile'd models.")
    parser.add_argument("--memory_probe", choices=UNET_CLASSES, help=argparse.SUPPRESS)  # internal: see memory_probe


def build(kind: str, setting) -> torch.nn.Module:
    return build_unet(kind, setting["sample_size"], 3, **setting["unet"])


def forward_gflops(model: torch.nn.Module, sample_size: int) -> float:
    """Floating-point operations of one forward pass on one image, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    sample = torch.zeros(1, model.config.in_channels, sample_size, sample_size, device=model.device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(sample, torch.zeros(1, dtype=torch.long, device=model.device))
    return counter.get_total_flops() / 1e9


def process_status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (Linux), e.g. VmRSS (resident now) or VmHWM (peak resident)."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024  # kB


def memory_probe(name: str, setting) -> None:
    """Runs in a fresh subprocess: a few training steps of one model; prints the memory growth in bytes as JSON."""
    device, autocast = device_and_autocast()
    model = build(name, setting)
    step = make_train_step(model, setting["batch_size"], setting["sample_size"], device, autocast, seed=0)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak resident size VmHWM (Linux >= 4.0)
        before = process_status_bytes("VmRSS")
    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = process_status_bytes("VmHWM")
    print(json.dumps({"bytes": peak - before}))


def measure_memory(name: str, args) -> float:
    command = [sys.executable, __file__, "--memory_probe", name, "--num_threads", str(args.num_threads)]
    result = subprocess.run(command + (["--tiny"] if args.tiny else []), capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["bytes"] / 2**20


def main():
    args = parse_args(__doc__.splitlines()[0], add_arguments)
    setting = TINY if args.tiny else FULL
    if args.memory_probe:
        memory_probe(args.memory_probe, setting)
        return
    start = time.perf_counter()
    device, autocast = device_and_autocast()
    models = {kind: build(kind, setting) for kind in UNET_CLASSES}
    parameters = {name: parameter_count(model) for name, model in models.items()}
    gflops = {name: forward_gflops(model, setting["sample_size"]) for name, model in models.items()}
    mismatch = parameters["SimpleUNet"] / parameters["UNet2DModel"] - 1
    print(f"parameters: {parameters} (SimpleUNet {mismatch:+.1%} vs UNet2DModel)")

    steps = {name: make_train_step(model, setting["batch_size"], setting["sample_size"], device, autocast, seed=i) for i, (name, model) in enumerate(models.items())}
    if args.compile:
        steps.update({
            f"{name} compiled": make_train_step(torch.compile(model), setting["batch_size"], setting["sample_size"], device, autocast, seed=i)
            for i, (name, model) in enumerate(models.items())
        })
    seconds = time_interleaved(steps, repeats=setting["repeats"], warmup=2)
    throughput = {name: setting["batch_size"] / s for name, s in seconds.items()}
    memory = {name: measure_memory(name, args) for name in UNET_CLASSES}

    headers = ["model", "parameters (M)", "forward GFLOPs / image", "images/s", "ratio to UNet2DModel",
               "peak training memory (MiB)", "memory ratio"]
    rows = []
    for name in steps:
        base = name.split()[0]
        row = [name, parameters[base] / 1e6, gflops[base], throughput[name], throughput[name] / throughput["UNet2DModel"]]
        row += [memory[name], memory[name] / memory["UNet2DModel"]] if name in memory else ["-", "-"]
        rows.append(row)

    figure, axes = new_figure(ncols=2, width=4.5)
    names = list(steps)
    axes[0, 0].bar(names, [throughput[n] for n in names], color=["C0" if "Simple" in n else "C7" for n in names])
    axes[0, 0].set(ylabel="training images / s", title="Training throughput (higher is better)")
    axes[0, 1].bar(list(memory), list(memory.values()), color=["C0", "C7"])
    axes[0, 1].set(ylabel="MiB", title="Peak training memory (lower is better)")
    for ax in axes[0]:
        ax.tick_params(axis="x", labelrotation=20)

    precision = "bf16 autocast" if device == "cuda" else "float32"
    wall = time.perf_counter() - start
    notes = f"""
Forward + backward + AdamW step at {setting['sample_size']}x{setting['sample_size']}x3, batch {setting['batch_size']},
{precision}; median of {setting['repeats']} interleaved repeats after 2 warm-up steps. Both UNets have channels
{setting['unet']['block_out_channels']}, attention at levels {setting['unet']['attention_levels']} (head size
{setting['unet']['attention_head_dim']}), {setting['unet']['norm_num_groups']} GroupNorm groups, no dropout; UNet2DModel with the
official example's block types and 2 layers per block, SimpleUNet with its default layers per block. Parameters:
SimpleUNet {parameters['SimpleUNet'] / 1e6:.2f} M, UNet2DModel {parameters['UNet2DModel'] / 1e6:.2f} M ({mismatch:+.1%}).
At the same parameter count SimpleUNet does fewer operations: it has fewer layers at the full resolution (1 down, 2
up vs 2 and 3), where the parameters are few but the activations large (GFLOPs: convolutions and matrix products).
Memory: growth over the weights during training, measured in a fresh process per model. {machine_description(args.num_threads)};
wall time {wall:.0f} s (`benchmarks/train_throughput.py`).
"""
    write_results(args.output_dir, "train_throughput", "Training throughput and memory", headers, rows, notes, figure)


if __name__ == "__main__":
    main()
