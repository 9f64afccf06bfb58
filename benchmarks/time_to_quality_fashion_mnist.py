"""Time to quality on Fashion-MNIST at 32x32 (28x28 padded): this project's recipe (`training/train.py --config
training/configs/fashion_mnist.yaml`) vs the official Diffusers unconditional recipe (`baseline_official_recipe.py`),
at equal wall-clock budgets on the CPU.

Both train a UNet of the same size (SimpleUNet vs UNet2DModel, 1.7M parameters, channels (32, 64, 64), attention at
the two lower levels), unconditionally, on the 60,000 training images. A budget of B minutes gives each recipe
B * 60 / (its measured seconds per bare training step at its batch size, both recipes timed interleaved, 2 threads,
before any training starts) optimizer steps. So the budgets are those of an idle 2-core machine, whatever else runs
while the training processes do; they run side by side, one thread each, and each run's own wall and CPU times are
reported too. Each recipe trains once, for the largest budget (its learning-rate schedule spans that budget); the
EMA weights are saved at every budget's step, and each is sampled with 20 model calls by each recipe's best sampler:
this project's default (UniPC) for ours; DPMSolverMultistep (2M) and our UniPC on the official weights for the
official recipe. Quality: Fréchet distance, precision / recall and class coverage in the features of a classifier
trained on the training split (`training/evaluate.py`'s `classifier` metric) between the samples and the 10,000 test
images; the floor is the distance of the training images to the test images.

    make fashion-mnist
    python benchmarks/time_to_quality_fashion_mnist.py --phase train     # ~1.5x the largest budget
    python benchmarks/time_to_quality_fashion_mnist.py --phase evaluate  # writes the table and figure
"""

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from diffusers_simple_training.atomic import write_text
from common import (
    build_unet,
    device_and_autocast,
    machine_description,
    make_train_step,
    model_flags,
    new_figure,
    parameter_count,
    parse_args,
    time_interleaved,
    write_results,
)

REPO = Path(__file__).resolve().parents[1]
DATASET = REPO / "data" / "fashion-mnist"
CONFIG = "training/configs/fashion_mnist.yaml"
RESOLUTION = 32
UNET = dict(block_out_channels=(32, 64, 64), attention_levels=(False, True, True), attention_head_dim=32, norm_num_groups=8)
BATCH_SIZES = {"ours": 32, "official": 16}  # the recipes' batch sizes (ours: the config's; official: its documented 16)
KINDS = {"ours": "SimpleUNet", "official": "UNet2DModel"}
NUM_CALLS = 20


def add_arguments(parser):
    parser.add_argument("--phase", choices=("train", "evaluate", "report", "all"), default="all",
                        help="report: the table and figure again from work_dir/results.json.")
    parser.add_argument("--budgets", type=float, nargs="+", default=[5, 10, 20, 40], help="Minutes; each a multiple of the first.")
    parser.add_argument("--num_samples", type=int, default=2000, help="Generated images per evaluation.")
    parser.add_argument("--work_dir", type=str, default=str(REPO / "outputs" / "time_to_quality_fashion_mnist"))


def plan(args) -> dict:
    """Seconds per bare training step of each recipe (interleaved, 2 threads) and its steps per budget."""
    torch.set_num_threads(args.num_threads)
    device, autocast = device_and_autocast()
    models = {recipe: build_unet(kind, RESOLUTION, 1, **UNET) for recipe, kind in KINDS.items()}
    steps = {r: make_train_step(m, BATCH_SIZES[r], RESOLUTION, device, autocast, seed=0) for r, m in models.items()}
    seconds = time_interleaved(steps, repeats=10, warmup=2)
    multiples = [round(b / args.budgets[0]) for b in args.budgets]
    first = {r: int(60 * args.budgets[0] / s) for r, s in seconds.items()}
    return dict(budgets=args.budgets, seconds_per_step=seconds, parameters={r: parameter_count(m) for r, m in models.items()},
                steps={r: [k * first[r] for k in multiples] for r in KINDS}, machine=machine_description(args.num_threads))


def train_commands(args, p: dict) -> dict:
    ours, official = p["steps"]["ours"], p["steps"]["official"]
    return {
        "ours": [sys.executable, "training/train.py", "--config", CONFIG, "--output_dir", f"{args.work_dir}/ours",
                 "--dataset_name", str(DATASET), "--max_train_steps", str(ours[-1]), "--checkpointing_steps", str(ours[0]),
                 "--save_images_epochs", "1000", "--save_model_epochs", "1000"],
        "official": [sys.executable, "benchmarks/baseline_official_recipe.py", "--output_dir", f"{args.work_dir}/official",
                     "--dataset_dir", str(DATASET), "--max_train_steps", str(official[-1]), "--num_threads", "1",
                     "--save_steps", *map(str, official), *model_flags(RESOLUTION, UNET)],
    }


def train(args) -> None:
    os.makedirs(args.work_dir, exist_ok=True)
    plan_path = Path(args.work_dir, "plan.json")
    if plan_path.is_file():  # a run cut short goes on with the same step budgets
        p = json.loads(plan_path.read_text())
        if p["budgets"] != args.budgets:
            raise SystemExit(f"{plan_path} plans budgets {p['budgets']}, not {args.budgets}: pass those, or another --work_dir.")
    else:
        p = plan(args)
        write_text(plan_path, json.dumps(p, indent=1))  # the evaluation can start from it if the training is cut short
    print(json.dumps(p, indent=1), flush=True)
    commands = train_commands(args, p)
    if any(Path(args.work_dir, "ours").glob("checkpoint-*")):
        # ours resumes exactly; the baseline has no resume and trains again (seeded, one thread: the same weights)
        commands["ours"] += ["--resume_from_checkpoint", "latest"]
    processes, start = {}, time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for recipe, command in commands.items():
        log = open(f"{args.work_dir}/{recipe}.log", "a")
        processes[recipe] = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    earlier, p["train_wall_s"] = p.get("train_wall_s", {}), {}
    for recipe, process in processes.items():
        if process.wait() != 0:
            raise SystemExit(f"{recipe} training failed: see {args.work_dir}/{recipe}.log")
        resumed = "--resume_from_checkpoint" in commands[recipe]
        p["train_wall_s"][recipe] = time.perf_counter() - start + (earlier.get(recipe, 0) if resumed else 0)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    p["train_cpu_s_both"] = usage.ru_utime + usage.ru_stime
    p.pop("stopped_after_budget_minutes", None)
    write_text(plan_path, json.dumps(p, indent=1))


def checkpoint_dir(args, p: dict, recipe: str, budget_index: int) -> Path:
    """Where a recipe's weights after the budget's steps are: train.py's checkpoint EMA, the baseline's saved pipeline."""
    steps = p["steps"][recipe][budget_index]
    if recipe == "ours":
        return Path(args.work_dir, "ours", f"checkpoint-{steps}", "ema")
    return Path(args.work_dir, "official", f"step-{steps}")


def pipelines(args, p: dict, budget_index: int, last: bool):
    """(recipe, sampler label, pipeline) to evaluate after the budget's steps, where that checkpoint exists."""
    from diffusers import DDPMPipeline, DPMSolverMultistepScheduler

    from diffusers_simple import SimpleDiffusionPipeline, SimpleScheduler, SimpleUNet

    ours, official = (checkpoint_dir(args, p, recipe, budget_index) for recipe in ("ours", "official"))
    found = []
    if ours.is_dir():
        exported = Path(args.work_dir, "ours", "scheduler")
        # the config's scheduler (train.py exports it with the final pipeline)
        scheduler = SimpleScheduler.from_pretrained(exported) if exported.is_dir() else SimpleScheduler(prediction_type="v_prediction")
        found.append(("ours", "UniPC (SimpleScheduler default)", SimpleDiffusionPipeline(SimpleUNet.from_pretrained(ours), scheduler)))
    if official.is_dir():
        pipe = DDPMPipeline.from_pretrained(official)
        dpm = DDPMPipeline(pipe.unet, DPMSolverMultistepScheduler.from_config(pipe.scheduler.config))
        found.append(("official", "DPMSolverMultistep 2M", dpm))
        if last:
            unipc = SimpleDiffusionPipeline(pipe.unet, SimpleScheduler.from_config(pipe.scheduler.config))
            found.append(("official", "UniPC (SimpleScheduler) on the official weights", unipc))
    return found


def evaluate_all(args) -> None:
    from diffusers_simple_training import evaluate

    with open(f"{args.work_dir}/plan.json") as f:
        p = json.load(f)
    options = evaluate.parse_args(["--pretrained_model_name_or_path", "-", "--output_dir", args.work_dir, "--reference", str(DATASET), "--reference_split",
                                   "test", "--pad_to_resolution", "--num_samples", str(args.num_samples), "--batch_size",
                                   "250", "--num_inference_steps", str(NUM_CALLS)])
    reference, _ = evaluate.load_reference(options, RESOLUTION, 1, need_labels=False)
    train_images, _ = evaluate.load_reference(options, RESOLUTION, 1, need_labels=False, split="train")
    # The floor row: the training images of every row's classifier_fd_floor, with their precision, recall and coverage.
    subset = evaluate.floor_subset(train_images, args.num_samples, options.seed)
    floor, settings = evaluate.classifier_metrics(subset, None, reference, options, RESOLUTION, 1)
    saved = Path(args.work_dir, "results.json")
    # rows already measured with these settings are kept: a cut-short run only evaluates the budgets it adds
    results = json.loads(saved.read_text())["results"] if saved.is_file() else []
    results = [r for r in results if r.get("num_samples") == args.num_samples]
    done = {(r["recipe"], r["budget"], r["sampler"]) for r in results}
    reached = [i for i in range(len(p["budgets"])) if all(checkpoint_dir(args, p, r, i).is_dir() for r in KINDS)]
    for index in reached:
        budget = p["budgets"][index]
        for recipe, sampler, pipeline in pipelines(args, p, index, last=index == reached[-1]):
            if (recipe, budget, sampler) in done:
                continue
            pipeline.set_progress_bar_config(disable=True)
            start = time.perf_counter()
            samples, _ = evaluate.generate(pipeline, options, None)
            metrics = evaluate.classifier_metrics(samples, None, reference, options, RESOLUTION, 1)[0]
            steps = p["steps"][recipe][index]
            results.append(dict(recipe=recipe, budget=budget, steps=steps, images_seen=steps * BATCH_SIZES[recipe],
                                sampler=sampler, num_samples=args.num_samples, sampling_s=time.perf_counter() - start, **metrics))
            print(results[-1], flush=True)
            write_text(saved, json.dumps(dict(plan=p, floor=floor, classifier=settings, results=results), indent=1))
    report(args, p, floor, settings, results)


def time_to_reach(points: dict, target: float) -> float | None:
    """The budget (minutes) at which a curve {budget: distance} first reaches `target`, interpolating log distance
    linearly in log budget between measured budgets; None if it never does."""
    budgets = sorted(points)
    if points[budgets[0]] <= target:
        return budgets[0]
    for lo, hi in zip(budgets, budgets[1:]):
        if points[hi] <= target:
            frac = (math.log(points[lo]) - math.log(target)) / (math.log(points[lo]) - math.log(points[hi]))
            return math.exp(math.log(lo) + frac * (math.log(hi) - math.log(lo)))
    return None


def report(args, p, floor, settings, results) -> None:
    names = {"ours": "this project (fashion_mnist.yaml)", "official": "official Diffusers recipe"}
    headers = ["recipe", "budget (min)", "steps", "images seen", "sampler (20 calls)", "classifier FD", "FD / floor",
               "precision", "recall", "class coverage"]
    rows = [[names[r["recipe"]], r["budget"], r["steps"], r["images_seen"], r["sampler"], r["classifier_fd"],
             r["classifier_fd"] / floor["classifier_fd"], r["precision"], r["recall"], r["class_coverage"]] for r in results]
    rows.append([f"{args.num_samples} training images (floor)", "-", "-", "-", "-", floor["classifier_fd"], 1.0,
                 floor["precision"], floor["recall"], floor["class_coverage"]])

    best = {}  # recipe -> [(budget, fd)] with its best sampler per budget
    for r in results:
        points = best.setdefault(r["recipe"], {})
        points[r["budget"]] = min(points.get(r["budget"], math.inf), r["classifier_fd"])
    figure, axes = new_figure(ncols=2, width=5)
    for recipe, points in best.items():
        budgets = sorted(points)
        seen = [p["steps"][recipe][p["budgets"].index(b)] * BATCH_SIZES[recipe] for b in budgets]
        axes[0, 0].plot(budgets, [points[b] for b in budgets], "-o", label=names[recipe])
        axes[0, 1].plot(seen, [points[b] for b in budgets], "-o", label=names[recipe])
    for ax, xlabel in zip(axes[0], ("training budget (minutes, idle 2-core CPU)", "training images seen")):
        ax.axhline(floor["classifier_fd"], color="C2", linestyle="--", label="floor (training images)")
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="classifier Fréchet distance to the test set")
        ax.legend(fontsize=7)
    target_budget = max(best["official"])
    target = best["official"][target_budget]
    reach = time_to_reach(best["ours"], target)
    first = min(best["ours"])
    if reach is None:
        when = "within none of the budgets."
    elif reach == first:
        when = f"already at its first budget: in at most {first:g} min ({first / target_budget:.2f}x the time or less)."
    else:
        when = f"after about {reach:.1f} min ({reach / target_budget:.2f}x the time; log-log interpolation between budgets)."
    reach = f"This project's recipe reaches the official recipe's best distance ({target:.3g}, after {target_budget:g} min) {when}"
    s = p["seconds_per_step"]
    stopped = p.get("stopped_after_budget_minutes")
    stopped = f", but both were stopped after the {stopped:g}-minute budget for lack of time" if stopped else ""
    notes = f"""
Fashion-MNIST, 32x32 (28x28 padded), 1 channel, unconditional. UNets of {p['parameters']['ours'] / 1e6:.2f}M (SimpleUNet)
and {p['parameters']['official'] / 1e6:.2f}M (UNet2DModel) parameters, channels {UNET['block_out_channels']}, attention at
levels {UNET['attention_levels']}. Seconds per bare training step, measured interleaved before training ({p['machine']}):
{s['ours']:.3f} (SimpleUNet, batch {BATCH_SIZES['ours']}) and {s['official']:.3f} (UNet2DModel, batch {BATCH_SIZES['official']});
a budget of B minutes is B * 60 / that many steps. Ours: `training/train.py --config {CONFIG}` (v-prediction, min-SNR 5,
lr 1e-3, batch 32, EMA with warm-up); official: `benchmarks/baseline_official_recipe.py` (epsilon, lr 1e-4, batch 16, EMA,
DDPMScheduler with clip_sample). Each recipe trained once, its learning-rate schedule spanning the largest budget
({p['budgets'][-1]:g} min){stopped}; the two ran side by side, one thread each, on a machine shared with other jobs, in
{p.get('train_wall_s', {}).get('ours', float('nan')):.0f} s (ours, all its runs: a run cut short resumes) and
{p.get('train_wall_s', {}).get('official', float('nan')):.0f} s (official, its last run: it has no resume and trains again
from the start, seeded, reproducing its earlier steps bit for bit) of wall time. Classifier: {settings['classifier']},
held-out accuracy {settings['classifier_held_out_accuracy']:.3f}. {args.num_samples} samples per row, {NUM_CALLS} model
calls each; the floor is {args.num_samples} training images against the 10,000 test images. {reach} (`benchmarks/time_to_quality_fashion_mnist.py`)
"""
    write_results(args.output_dir, "time_to_quality_fashion_mnist", "Fashion-MNIST quality per training budget",
                  headers, rows, notes, figure)


if __name__ == "__main__":
    arguments = parse_args(__doc__.splitlines()[0], add_arguments)
    if not DATASET.is_dir():
        raise SystemExit(f"{DATASET} does not exist: run `make fashion-mnist` first.")
    if arguments.phase in ("train", "all"):
        train(arguments)
    if arguments.phase in ("evaluate", "all"):
        evaluate_all(arguments)
    if arguments.phase == "report":
        with open(f"{arguments.work_dir}/results.json") as f:
            saved = json.load(f)
        report(arguments, saved["plan"], saved["floor"], saved["classifier"], saved["results"])
