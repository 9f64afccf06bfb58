"""Copies the benchmark tables (benchmarks/results/*.md) and plots into README.md's Results section.

    python benchmarks/update_readme.py      # run_all.py calls it at the end
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ORDER = ("train_throughput", "sampling_speed", "sampler_accuracy", "sampler_quality_trained", "sampler_quality_trained_demo",
         "time_to_quality", "time_to_quality_fashion_mnist", "recipe_ablations_fashion_mnist", "recipe_ablations_fashion_mnist_20min", "sampler_quality_trained_fashion_mnist",
         "grid_transfer", "grid_transfer_fashion_mnist", "editing")
START, END = "<!-- results:start -->", "<!-- results:end -->"


def results_markdown() -> str:
    parts = []
    for name in ORDER:
        table = RESULTS / f"{name}.md"
        if not table.exists():
            parts.append(f"*`benchmarks/{name}.py` has not been run yet.*")
            continue
        text = table.read_text(encoding="utf-8").strip().replace("### ", "#### ", 1)
        plot = RESULTS / f"{name}.png"
        if plot.exists():
            text += f"\n\n![{name}](benchmarks/results/{name}.png)"
        parts.append(text)
    return "\n\n".join(parts)


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    block = f"{START}\n{results_markdown()}\n{END}"
    new, count = re.subn(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    if count != 1:
        raise SystemExit(f"README.md must hold exactly one {START} ... {END} block, found {count}.")
    readme.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    main()
