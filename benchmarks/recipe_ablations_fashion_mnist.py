"""Recipe ablations on Fashion-MNIST: each choice of training/configs/fashion_mnist.yaml against its alternative, one
change at a time, at an equal budget of idle 2-core CPU time (issue 10).

Every variant is the config with one setting changed back to what `train.py` or the official Diffusers recipe does
without it (epsilon prediction, no Min-SNR weighting, learning rate 1e-4, batch 16, no EMA, dropout 0.1), plus the
two changes that won at 10 minutes together, and the config with another training seed (the run-to-run spread). A budget
of B minutes gives each variant B * 60 / (its seconds per bare training step, batch 32 and 16 timed interleaved, 2
threads, before any training) optimizer steps, so a smaller batch gets more steps; the learning-rate schedule spans
the budget. The runs go two at a time, one thread each, so load changes their wall time, not their step counts. Each
exported pipeline (EMA weights where EMA is on) draws `--num_samples` images with 20 calls of the SimpleScheduler
default (UniPC); quality is the Fréchet distance, precision / recall and class coverage in the features of the
Fashion-MNIST classifier (`training/evaluate.py`'s `classifier` metric) against the 10,000 test images.

    make fashion-mnist
    python benchmarks/recipe_ablations_fashion_mnist.py          # ~2 h on 2 cores with the default 10-minute budget
    python benchmarks/recipe_ablations_fashion_mnist.py --budget 20 --variants fashion_mnist.yaml "no EMA" ...
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from diffusers_simple_training.atomic import write_text
from common import build_unet, device_and_autocast, machine_description, make_train_step, new_figure, parse_args, time_interleaved, write_results
from time_to_quality_fashion_mnist import CONFIG, DATASET, NUM_CALLS, REPO, RESOLUTION, UNET

# variant -> the settings changed from fashion_mnist.yaml (None: the setting removed, i.e. train.py's default)
VARIANTS = {
    "fashion_mnist.yaml": {},
    "epsilon prediction (not v)": {"prediction_type": "epsilon"},
    "no Min-SNR weighting": {"snr_gamma": None},
    "learning rate 1e-4 (not 1e-3)": {"learning_rate": 1.0e-4},
    "batch 16 (not 32)": {"train_batch_size": 16},
    "no EMA": {"use_ema": False},
    "dropout 0.1 (not 0)": {"dropout": 0.1},
    "batch 16 and no EMA": {"train_batch_size": 16, "use_ema": False},  # the two winners at 10 minutes, together
    "seed 1 (not 0)": {"seed": 1},  # the config again: the spread between training runs
}


SEED_NOTE = """; the "seed 1" row is the config trained again with another seed, and its distance from the
first row is the run-to-run spread that a difference must exceed to count."""


def add_arguments(parser):
    parser.add_argument("--budget", type=float, default=10.0, help="Minutes of idle 2-core CPU time per variant.")
    parser.add_argument("--num_samples", type=int, default=500, help="Generated images per evaluation.")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="The variants to run (the config always runs: it is the row the others are compared to).")
    parser.add_argument("--work_dir", type=Path, default=None,
                        help="Default: outputs/recipe_ablations_fashion_mnist, with _<budget>min for another budget than 10.")


def seconds_per_step(num_threads: int) -> dict[int, float]:
    """Seconds per bare training step of the config's UNet at each batch size of the variants, timed interleaved."""
    device, autocast = device_and_autocast()
    batch_sizes = sorted({batch_size(name) for name in VARIANTS})
    steps = {b: make_train_step(build_unet("SimpleUNet", RESOLUTION, 1, **UNET), b, RESOLUTION, device, autocast, seed=0) for b in batch_sizes}
    return time_interleaved(steps, repeats=10, warmup=2)


def batch_size(name: str) -> int:
    return VARIANTS[name].get("train_batch_size", 32)


def num_steps(budget: float, state: dict, batch: int) -> int:
    """Optimizer steps that fill `budget` minutes at the measured seconds per step of `batch`."""
    return int(budget * 60 / state["seconds_per_step"][str(batch)])


def variant_dir(args, name: str) -> Path:
    return args.work_dir / name.split(" (")[0].replace(" ", "_")


def trained(args, name: str, steps: int) -> bool:
    """Whether the variant's pipeline was exported after `steps` steps (by this run or an earlier one cut short)."""
    folder = variant_dir(args, name)
    return (folder / "model" / "model_index.json").is_file() and yaml.safe_load((folder / "config.yaml").read_text())["max_train_steps"] == steps


def train_variant(args, name: str, changes: dict, steps: int) -> subprocess.Popen:
    """Starts train.py on the config with `changes`, one thread, for `steps` steps; its pipeline goes to
    variant_dir/model."""
    folder = variant_dir(args, name)
    config = yaml.safe_load((REPO / CONFIG).read_text())
    config.update(changes, dataset_name=str(DATASET), max_train_steps=steps, calibrate_budgets=None,
                  save_images_epochs=1000, save_model_epochs=1000, checkpointing_steps=steps)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "training/train.py", "--config", str(folder / "config.yaml"), "--output_dir", str(folder / "model"),
               "--overwrite_output_dir"]
    log = open(folder / "train.log", "w")
    return subprocess.Popen(command, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=log, stderr=subprocess.STDOUT)


def main():
    args = parse_args(__doc__.splitlines()[0], add_arguments)
    name = "recipe_ablations_fashion_mnist" + ("" if args.budget == 10 else f"_{args.budget:g}min")  # results and work dir
    args.work_dir = args.work_dir or REPO / "outputs" / name
    variants = {v: VARIANTS[v] for v in VARIANTS if v in args.variants or v == "fashion_mnist.yaml"}
    if not DATASET.is_dir():
        raise SystemExit(f"{DATASET} does not exist: run `make fashion-mnist` first.")
    from diffusers_simple import SimpleDiffusionPipeline
    from diffusers_simple_training import evaluate

    start = time.perf_counter()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    saved = args.work_dir / "results.json"
    state = json.loads(saved.read_text()) if saved.is_file() else {}
    if state.get("budget") != args.budget:
        state = dict(budget=args.budget, seconds_per_step={str(b): s for b, s in seconds_per_step(args.num_threads).items()},
                     machine=machine_description(args.num_threads), results={})
        write_text(saved, json.dumps(state, indent=1))
    steps = {v: num_steps(args.budget, state, batch_size(v)) for v in variants}
    todo = [v for v in variants if not trained(args, v, steps[v])]
    for pair in (todo[i:i + 2] for i in range(0, len(todo), 2)):  # two runs at a time, one thread each (an odd last one alone)
        processes = {v: train_variant(args, v, variants[v], steps[v]) for v in pair}
        for v, process in processes.items():
            if process.wait() != 0:
                raise SystemExit(f"{v}: training failed, see {variant_dir(args, v)}/train.log")
    options = evaluate.parse_args(["--pretrained_model_name_or_path", "-", "--output_dir", str(args.work_dir), "--reference", str(DATASET),
                                   "--reference_split", "test", "--pad_to_resolution", "--num_samples", str(args.num_samples),
                                   "--batch_size", "250", "--num_inference_steps", str(NUM_CALLS)])
    reference, _ = evaluate.load_reference(options, RESOLUTION, 1, need_labels=False)
    for v in variants:
        if v in state["results"]:
            continue
        pipe = SimpleDiffusionPipeline.from_pretrained(variant_dir(args, v) / "model")
        pipe.set_progress_bar_config(disable=True)
        samples, _ = evaluate.generate(pipe, options, None)
        metrics, settings = evaluate.classifier_metrics(samples, None, reference, options, RESOLUTION, 1)
        state["results"][v] = dict(steps=steps[v], **metrics)
        state["classifier"] = settings
        print(v, state["results"][v], flush=True)
        write_text(saved, json.dumps(state, indent=1))

    base = state["results"]["fashion_mnist.yaml"]["classifier_fd"]
    headers = ["variant", "steps", "images seen", "classifier FD", "FD / config's", "precision", "recall", "class coverage"]
    rows = [[v, r["steps"], r["steps"] * batch_size(v), r["classifier_fd"], r["classifier_fd"] / base,
             r["precision"], r["recall"], r["class_coverage"]] for v, r in state["results"].items() if v in variants]
    figure, axes = new_figure(width=7)
    ax = axes[0, 0]
    ax.barh([row[0] for row in rows][::-1], [row[3] for row in rows][::-1], color=["C0"] * (len(rows) - 1) + ["C2"])
    ax.set(xlabel=f"classifier Fréchet distance to the test set after {args.budget:g} min (lower is better)")
    s = state["seconds_per_step"]
    notes = f"""
Fashion-MNIST, 32x32 (28x28 padded), unconditional, the 1.70M-parameter SimpleUNet of `{CONFIG}`. Budget
{args.budget:g} minutes of idle 2-core CPU time per variant: {s['32']:.3f} s per bare training step at batch 32 and
{s['16']:.3f} s at batch 16 ({state['machine']}), so {num_steps(args.budget, state, 32)} and {num_steps(args.budget, state, 16)}
steps. Each variant changes one setting of the config (the combined row two); the learning-rate schedule (cosine, 200 warm-up steps) spans
the budget. {args.num_samples} samples per row, {NUM_CALLS} calls of the SimpleScheduler default (UniPC), from the
exported pipeline (EMA weights unless "no EMA"). Classifier: {state['classifier']['classifier']}, held-out accuracy
{state['classifier']['classifier_held_out_accuracy']:.3f}. One training run per row{SEED_NOTE if "seed 1 (not 0)" in variants else "."} Wall time of the last invocation {time.perf_counter() - start:.0f} s; it reuses the variants
that earlier ones trained and evaluated (`benchmarks/recipe_ablations_fashion_mnist.py`).
"""
    write_results(args.output_dir, name, f"Fashion-MNIST recipe ablations, {args.budget:g} minutes", headers, rows, notes, figure)


if __name__ == "__main__":
    main()
