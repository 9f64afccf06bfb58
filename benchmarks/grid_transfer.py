"""Does one time grid serve every kind of data? The grids `calibrate_timesteps` finds for each exact mixture of
`sampler_accuracy.py` and for a trained model, each used on all of them next to the default grid (issue 7).

    python benchmarks/grid_transfer.py      # the digits model of benchmarks/editing.py (trained if missing)
    python benchmarks/grid_transfer.py --model_dir outputs/fashion_mnist_model --classifier_reference data/fashion-mnist --num_samples 250 --result_name grid_transfer_fashion_mnist

The README's Fashion-MNIST table was made so with the recipe ablations' model
(outputs/recipe_ablations_fashion_mnist/fashion_mnist.yaml/model, whose 250 DDPM reference samples are cached).

A grid moves from one data set to another by its half log-SNRs lambda = log(alpha / sigma): the same timesteps where
the noise schedules agree. On a mixture a cell is the sliced Wasserstein distance of the samples to a true sample set
over the floor (two true sets), the mean of `--draws` draws as in sampler_accuracy.py; on the model it is the Fréchet
distance to the model's 1000-step DDPM samples, as in sampler_quality_trained.py (guidance 1). Everything else is the
default SimpleScheduler.
"""

import time
import types

import numpy as np
from common import machine_description, new_figure, parse_args, write_results
from diffusers import DDPMScheduler
from editing import CACHE
from sampler_accuracy import (BENCHMARKS, ExactNoisePredictor, GaussianMixture, calibrate_mixture_grids, draw_distances,
                              unit_directions)
from sampler_quality_trained import (add_model_arguments, ddpm_reference, default_sampler_config, draw, load_model,
                                     model_features, shown_path)

from diffusers_simple import SimpleDiffusionPipeline, SimpleScheduler
from diffusers_simple_training.calibrate import calibrate_pipeline
from diffusers_simple_training.frechet import frechet_distance_from_features


def add_arguments(parser):
    add_model_arguments(parser, "grid_transfer")
    parser.add_argument("--num_samples", type=int, default=500, help="Images per cell on the model.")
    parser.add_argument("--calls", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--draws", type=int, default=10, help="Draws per cell on a mixture.")
    parser.add_argument("--mixture_samples", type=int, default=20000)
    parser.add_argument("--num_directions", type=int, default=256)
    parser.add_argument("--floor_pairs", type=int, default=6)


def lambdas_of(timesteps, scheduler) -> np.ndarray:
    """Half log-SNRs lambda = -log sigma at (fractional) train timesteps of a SimpleScheduler, interpolated as it does."""
    log_sigmas = scheduler._log_sigmas()
    return -np.interp(timesteps, np.arange(len(log_sigmas)), log_sigmas)


def transfer(grids: dict, source, target) -> dict:
    """`grids` ({calls: timesteps} of `source`) as the timesteps of `target` with the same lambdas (fractional)."""
    return {calls: target._timesteps_of_lambdas(lambdas_of(timesteps, source)).tolist() for calls, timesteps in grids.items()}


def main():
    args = parse_args(__doc__.splitlines()[0], add_arguments)
    start = time.perf_counter()
    if args.tiny:  # a smoke test: an in-process 40-step model, few samples (200 in each mixture's calibration)
        args.num_samples, args.calls, args.draws, args.mixture_samples, args.floor_pairs = 20, [3], 1, 500, 1
    mixture_scheduler = SimpleScheduler()  # the mixtures' noise: DDPMScheduler's linear betas, as sampler_accuracy.py
    mixtures = {}
    for name, (dim, num_components, min_std, max_std) in BENCHMARKS.items():
        mixture = GaussianMixture.random(dim, num_components, min_std, max_std)
        predictor = ExactNoisePredictor(mixture, DDPMScheduler().alphas_cumprod)
        mixtures[name] = mixture, predictor, calibrate_mixture_grids(predictor, args.calls, dim, 200 if args.tiny else 2000)
    pipe = load_model(args)
    features, classifier_name, _ = model_features(args, pipe)
    config = default_sampler_config(pipe)
    calibrated = SimpleDiffusionPipeline(pipe.unet, SimpleScheduler.from_config(config))
    calibrate_pipeline(calibrated, args.calls, batch_size=16, num_batches=2)
    model_name = "the model" if args.tiny else f"`{shown_path(args.model_dir)}`"
    grids = {"default (no calibrated grid)": None, f"calibrated on {model_name}": transfer(
        calibrated.scheduler.config.calibrated_timesteps, calibrated.scheduler, mixture_scheduler)}
    grids.update({f"calibrated on {name}": found for name, (*_, found) in mixtures.items()})

    distance = {}  # (grid, target, calls) -> ratio to the floor (mixtures) or Fréchet distance (the model)
    configs = {name: (lambda g=found: SimpleScheduler(calibrated_timesteps=g)) for name, found in grids.items()}
    steps = {(name, c): c for name in grids for c in args.calls}
    draw_args = types.SimpleNamespace(num_samples=args.mixture_samples, floor_pairs=args.floor_pairs)
    for target, (mixture, predictor, _) in mixtures.items():
        directions = unit_directions(args.num_directions, mixture.means.shape[1])
        values, _, floors = draw_distances(mixture, predictor, directions, configs, steps, range(args.draws), draw_args)
        distance.update({(name, target, c): float(np.mean(v)) / float(np.mean(floors)) for (name, c), v in values.items()})
    reference = features(ddpm_reference(pipe, args, 1.0))
    for name, found in grids.items():  # the default grid also at 50 calls, the goal's yardstick
        moved = None if found is None else transfer(found, mixture_scheduler, pipe.scheduler)
        p = SimpleDiffusionPipeline(pipe.unet, SimpleScheduler.from_config(config, calibrated_timesteps=moved))
        p.set_progress_bar_config(disable=True)
        for c in args.calls + ([50] if found is None else []):
            distance[name, model_name, c] = frechet_distance_from_features(
                reference, features(draw(p, args.num_samples, 10**6, 1.0, num_inference_steps=c)))
    fifty_calls = distance["default (no calibrated grid)", model_name, 50]

    targets = [*mixtures, model_name]
    headers = ["grid"] + [f"{target}, {c} calls" for target in targets for c in args.calls]
    rows = [[name, *(distance[name, target, c] for target in targets for c in args.calls)] for name in grids]
    figure, axes = new_figure(ncols=len(args.calls), width=6, height=4)
    for ax, c in zip(axes[0], args.calls):
        default = [distance["default (no calibrated grid)", target, c] for target in targets]
        for name in grids:
            ax.plot(range(len(targets)), [distance[name, t, c] / d for t, d in zip(targets, default)], "-o", label=name)
        ax.set(yscale="log", xticks=range(len(targets)), ylabel="distance / the default grid's", title=f"{c} calls")
        ax.set_xticklabels([*(f"{dim}-D, {k} modes" for dim, k, *_ in BENCHMARKS.values()), "model"], fontsize=7)
        ax.legend(fontsize=6)
    lambdas = "\n".join(f"- {name}: " + "; ".join(
        f"{c} calls {lambdas_of(g[str(c)], mixture_scheduler).round(2).tolist()}"
        for c in args.calls) for name, g in grids.items() if g)
    notes = f"""
Rows: where the grid was calibrated (`calibrate_pipeline` on the model, 2 batches of 16; `calibrate_timesteps` on each
mixture with sampler_accuracy.py's settings). Columns: where it is used. Mixture cells: ratio to the floor, mean of
{args.draws} draw(s) of {args.mixture_samples} samples; model cells: Fréchet distance in the features of
{classifier_name} ({args.num_samples} samples, guidance 1) to {args.num_samples} samples by 1000-step DDPM; the same
model's default grid at 50 calls: {fifty_calls:.3g} (issue 7's goal at 5 calls: at most 1.5x that, {1.5 * fifty_calls:.3g}).
{machine_description(args.num_threads)}; wall time {time.perf_counter() - start:.0f} s (`benchmarks/grid_transfer.py`).

The calibrated grids' half log-SNRs lambda = log(alpha / sigma), one per model call from high noise to low (the default's
come from `SimpleScheduler.set_timesteps`):

{lambdas}
"""
    name = args.result_name or "grid_transfer" + ("" if args.tiny or args.model_dir == CACHE / "model" else f"_{args.model_dir.name}")
    title = f"One time grid for every data set? Calibrated grids moved between the exact mixtures and {model_name}"
    write_results(args.output_dir, name, title, headers, rows, notes, figure)


if __name__ == "__main__":
    main()
