"""Helpers shared by the benchmark scripts: command line, timing, and writing a result table + plot.

Every benchmark measures this project against Diffusers' own classes side by side in one process run, prints a
markdown table, and writes ``<output_dir>/<name>.md`` and ``<output_dir>/<name>.png`` (the README includes them).
"""

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(description: str, add_arguments: Callable[[argparse.ArgumentParser], None] | None = None):
    """Parses the options every benchmark has (``--tiny``, ``--output_dir``, ``--num_threads``) plus its own ones,
    and sets torch's thread count."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tiny", action="store_true", help="Smallest settings: a smoke test that runs in seconds.")
    parser.add_argument("--output_dir", type=Path, default=RESULTS_DIR, help="Where <name>.md and <name>.png go.")
    parser.add_argument("--num_threads", type=int, default=2, help="torch.set_num_threads for this process.")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.num_threads)
    return args


def machine_description(num_threads: int) -> str:
    """One line naming the hardware a table was measured on."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    return f"CPU ({platform.processor() or platform.machine()}), {num_threads} threads, torch {torch.__version__}"


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_interleaved(functions: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median wall time in seconds of each function.

    The functions run in turns (A, B, A, B, ...) after ``warmup`` untimed rounds, so that slow drifts of the machine
    (other processes, thermal state) affect all of them alike.
    """
    times = {name: [] for name in functions}
    for round_index in range(warmup + repeats):
        for name, function in functions.items():
            synchronize()
            start = time.perf_counter()
            function()
            synchronize()
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub markdown table; floats are printed with 3 significant digits."""

    def cell(value: object) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(
    output_dir: Path, name: str, title: str, headers: list[str], rows: list[list[object]], notes: str, figure
) -> str:
    """Prints the table and writes ``name.md`` (title, notes, table) and ``name.png`` (the matplotlib figure)."""
    table = markdown_table(headers, rows)
    print(table)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / f"{name}.md").write_text(f"### {title}\n\n{notes.strip()}\n\n{table}\n")
    figure.savefig(output_dir / f"{name}.png", dpi=120, bbox_inches="tight")
    print(f"wrote {output_dir / name}.md and .png")
    return table


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


UNET_CLASSES = ("SimpleUNet", "UNet2DModel")


def simple_layers_per_block(num_levels: int) -> tuple[int, ...]:
    """SimpleUNet's default layer pattern for any number of levels: 1 at the full resolution, 2 below."""
    return (1,) + (2,) * (num_levels - 1)


def build_unet(
    kind: str,
    sample_size: int,
    in_channels: int,
    block_out_channels: tuple[int, ...],
    attention_levels: tuple[bool, ...],
    attention_head_dim: int,
    norm_num_groups: int,
    dropout: float = 0.0,
) -> torch.nn.Module:
    """A `SimpleUNet` (its default layer pattern: 1 layer at the full resolution, 2 below) or a Diffusers `UNet2DModel`
    with the block types of the official unconditional example (`DownBlock2D`, or `AttnDownBlock2D` where attention
    is on; 2 layers per block), with the given levels, channels, attention placement, head size and GroupNorm groups.
    At equal settings the two have about the same number of parameters."""
    shared = dict(sample_size=sample_size, in_channels=in_channels, out_channels=in_channels, dropout=dropout,
                  block_out_channels=tuple(block_out_channels), norm_num_groups=norm_num_groups,
                  attention_head_dim=attention_head_dim)
    if kind == "SimpleUNet":
        from diffusers_simple import SimpleUNet

        layers_per_block = simple_layers_per_block(len(block_out_channels))
        return SimpleUNet(layers_per_block=layers_per_block, attention_levels=tuple(attention_levels), **shared)
    if kind == "UNet2DModel":
        from diffusers import UNet2DModel

        return UNet2DModel(
            layers_per_block=2,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels)),
            **shared,
        )
    raise ValueError(f"Unknown UNet kind {kind!r}; accepted are {UNET_CLASSES}.")


def model_flags(resolution: int, unet: dict) -> list[str]:
    """The UNet flags shared by train.py and `baseline_official_recipe.py`, from `build_unet`'s keyword arguments."""
    return [
        "--resolution", str(resolution),
        "--block_out_channels", *map(str, unet["block_out_channels"]),
        "--attention_levels", *(str(a).lower() for a in unet["attention_levels"]),
        "--attention_head_dim", str(unet["attention_head_dim"]),
        "--norm_num_groups", str(unet["norm_num_groups"]),
    ]


def device_and_autocast():
    """The device to benchmark on and its autocast context: bf16 on CUDA, none (float32) on CPU."""
    if torch.cuda.is_available():
        return "cuda", torch.autocast("cuda", dtype=torch.bfloat16)
    return "cpu", torch.autocast("cpu", enabled=False)


def make_train_step(model: torch.nn.Module, batch_size: int, sample_size: int, device: str, autocast, seed: int):
    """A closure running one DDPM training step of `model` on a fixed random batch: x_t from DDPMScheduler.add_noise,
    eps-MSE loss, backward, AdamW step (the official recipe's settings)."""
    from diffusers import DDPMScheduler

    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    noise_scheduler = DDPMScheduler()
    generator = torch.Generator().manual_seed(seed)
    shape = (batch_size, model.config.in_channels, sample_size, sample_size)
    images = (torch.rand(shape, generator=generator) * 2 - 1).to(device)

    def step():
        noise = torch.randn(images.shape, device=device)
        timesteps = torch.randint(0, 1000, (images.shape[0],), device=device)
        noisy = noise_scheduler.add_noise(images, noise, timesteps)
        with autocast:
            prediction = model(noisy, timesteps).sample
        loss = F.mse_loss(prediction.float(), noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def new_figure(ncols: int = 1, width: float = 6.0, height: float = 4.0):
    """A matplotlib figure drawn with the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
