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


def new_figure(ncols: int = 1, width: float = 6.0, height: float = 4.0):
    """A matplotlib figure drawn with the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
