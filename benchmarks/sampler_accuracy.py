"""Sampler accuracy per number of model calls, with an exact noise predictor.

The data is a Gaussian mixture p(x_0) = sum_k w_k N(mu_k, s_k^2 I). Its noised marginal is again a Gaussian mixture,
q_t(x_t) = sum_k w_k N(sqrt(abar_t) mu_k, (abar_t s_k^2 + 1 - abar_t) I), so the best possible noise predictor,
eps*(x_t, t) = E[eps | x_t] = -sqrt(1 - abar_t) grad log q_t(x_t) (Tweedie's formula), is known in closed form.
With it every sampler is run from the same initial noise, and the distance of its samples to fresh true samples is
compared with the finite-sample floor: the distance between two independent true sample sets of the same size. The
ratio distance / floor is then pure sampler error (1 = indistinguishable from exact sampling).

Distance: sliced Wasserstein-1, the mean over fixed random unit directions of the 1-D Wasserstein-1 distance between
the projected sample sets (sorted projections, mean absolute difference). Each ratio is averaged over `--repeats`
independent (initial noise, true samples) draws and the floor over `--floor_pairs` pairs per draw, since a single
distance between two sample sets varies by about 10%.
All schedulers use the DDPM noise schedule (1000 steps, linear betas 1e-4 to 0.02) and no x_0 clipping.
"""

import math
import time

import matplotlib
import torch
import numpy as np
from common import machine_description, markdown_table, new_figure, parse_args, time_interleaved, write_results
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)

from diffusers_simple import SimpleScheduler
from diffusers_simple_training.calibrate import calibrate_model_timesteps, calibrate_timesteps


class GaussianMixture:
    """An isotropic Gaussian mixture in `dim` dimensions and its exact noise predictor under the DDPM forward process."""

    def __init__(self, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor):
        self.means, self.stds, self.weights = means.double(), stds.double(), weights.double() / weights.sum()

    @classmethod
    def random(cls, dim: int, num_components: int, min_std: float, max_std: float, seed: int = 0):
        """Means uniform in [-0.6, 0.6]^dim, standard deviations log-uniform in [min_std, max_std], weights uniform in
        [0.5, 1.5] before normalisation."""
        generator = torch.Generator().manual_seed(seed)
        means = (2 * torch.rand(num_components, dim, generator=generator, dtype=torch.float64) - 1) * 0.6
        u = torch.rand(num_components, generator=generator, dtype=torch.float64)
        stds = min_std * (max_std / min_std) ** u
        weights = torch.rand(num_components, generator=generator, dtype=torch.float64) + 0.5
        return cls(means, stds, weights)

    def sample(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        components = torch.multinomial(self.weights, num_samples, replacement=True, generator=generator)
        noise = torch.randn(num_samples, self.means.shape[1], generator=generator, dtype=torch.float64)
        return self.means[components] + self.stds[components, None] * noise

    def noise_prediction(self, x_t: torch.Tensor, alpha_bar: float) -> torch.Tensor:
        """E[eps | x_t] = -sqrt(1 - abar) grad log q_t(x_t), with q_t the mixture of
        N(m_k, v_k I), m_k = sqrt(abar) mu_k, v_k = abar s_k^2 + 1 - abar. Computed in float64."""
        x = x_t.double()
        m = math.sqrt(alpha_bar) * self.means  # (K, D)
        v = alpha_bar * self.stds**2 + 1 - alpha_bar  # (K,)
        squared_distance = (x**2).sum(1, keepdim=True) - 2 * x @ m.T + (m**2).sum(1)  # |x - m_k|^2, (N, K)
        log_density = self.weights.log() - 0.5 * x.shape[1] * v.log() - 0.5 * squared_distance / v
        r = log_density.softmax(dim=1)  # posterior probability of each component given x_t
        score = (r / v) @ m - x * (r / v).sum(1, keepdim=True)  # sum_k r_k (m_k - x) / v_k
        return (-math.sqrt(1 - alpha_bar) * score).to(x_t.dtype)


class ExactNoisePredictor:
    """eps*(x_t, t) for a train timestep t; fractional t (Euler) interpolates log sigma_t = log sqrt((1 - abar) / abar)
    linearly between train timesteps, as Diffusers' `_sigma_to_t` does."""

    def __init__(self, mixture: GaussianMixture, alphas_cumprod: torch.Tensor):
        self.mixture = mixture
        self.log_sigmas = 0.5 * torch.log((1 - alphas_cumprod.double()) / alphas_cumprod.double())

    def alpha_bar(self, t: float) -> float:
        i = min(int(math.floor(t)), len(self.log_sigmas) - 2)
        log_sigma = torch.lerp(self.log_sigmas[i], self.log_sigmas[i + 1], t - i)
        return float(torch.sigmoid(-2 * log_sigma))  # 1 / (1 + sigma^2)

    def __call__(self, x_t: torch.Tensor, t: float) -> torch.Tensor:
        return self.mixture.noise_prediction(x_t, self.alpha_bar(t))


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, directions: torch.Tensor) -> float:
    """Mean over `directions` (unit rows) of the 1-D Wasserstein-1 distance of the projections of x and y (same size)."""
    px = torch.sort(directions @ x.double().T, dim=1).values
    py = torch.sort(directions @ y.double().T, dim=1).values
    return (px - py).abs().mean().item()


def unit_directions(num_directions: int, dim: int) -> torch.Tensor:
    """The sliced distance's projection directions: random unit vectors (seed 1), float64."""
    directions = torch.randn(num_directions, dim, generator=torch.Generator().manual_seed(1))
    return (directions / directions.norm(dim=1, keepdim=True)).double()


def sample(scheduler, num_steps: int, noise: torch.Tensor, predictor: ExactNoisePredictor, seed: int):
    """The Diffusers denoising loop; returns the samples and the number of model calls."""
    scheduler.set_timesteps(num_steps)
    generator = torch.Generator().manual_seed(seed)
    stochastic = isinstance(scheduler, DDPMScheduler) or getattr(scheduler.config, "sampler", None) == "ddpm"
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = predictor(scheduler.scale_model_input(x, t), float(t))
        x = scheduler.step(eps, t, x, **({"generator": generator} if stochastic else {})).prev_sample
    return x, len(scheduler.timesteps)


def steps_for_calls(make_scheduler, calls: int) -> int:
    """The largest num_inference_steps whose loop makes at most `calls` model calls (Heun: 2 per step but the last)."""
    scheduler = make_scheduler()
    for steps in range(calls, 0, -1):
        scheduler.set_timesteps(steps)
        if len(scheduler.timesteps) <= calls:
            return steps
    return 1


def diffusers_configs():
    no_clip = {"clip_sample": False}
    dpm = DPMSolverMultistepScheduler
    configs = {
        "DDIMScheduler trailing": lambda: DDIMScheduler(timestep_spacing="trailing", **no_clip),
    }
    for order in (2, 3):
        for label, options in [("", {}), (" trailing", {"timestep_spacing": "trailing"}),
                               (" karras", {"use_karras_sigmas": True}), (" lu", {"use_lu_lambdas": True}),
                               (" exponential", {"use_exponential_sigmas": True}), (" beta", {"use_beta_sigmas": True})]:
            configs[f"DPMSolverMultistep {order}M{label}"] = lambda o=order, kw=options: dpm(solver_order=o, **kw)
    # bh1 with final_sigmas_type="zero" gives NaN in Diffusers 0.42.1: it ends at sigma_min (a call at t = 0) here
    for label, options in [("bh1", {"solver_type": "bh1", "final_sigmas_type": "sigma_min"}), ("bh2", {}), ("bh2 trailing", {"timestep_spacing": "trailing"}),
                           ("bh2 karras", {"use_karras_sigmas": True}), ("bh2 order 3", {"solver_order": 3}),
                           ("bh2 order 3 karras", {"solver_order": 3, "use_karras_sigmas": True})]:
        configs[f"UniPCMultistep {label}"] = lambda kw=options: UniPCMultistepScheduler(**kw)
    configs["DEISMultistep"] = lambda: DEISMultistepScheduler()
    configs["DEISMultistep trailing"] = lambda: DEISMultistepScheduler(timestep_spacing="trailing")
    configs["EulerDiscrete"] = lambda: EulerDiscreteScheduler()
    configs["EulerDiscrete karras"] = lambda: EulerDiscreteScheduler(use_karras_sigmas=True)
    configs["HeunDiscrete"] = lambda: HeunDiscreteScheduler()
    configs["HeunDiscrete karras"] = lambda: HeunDiscreteScheduler(use_karras_sigmas=True)
    return configs


PREVIOUS_DEFAULT = "Simple with polynomial final step (previous default)"
SIMPLE_CONFIGS = {
    "Simple default": {},
    "Simple without analytic first step": {"analytic_first_step": False},
    PREVIOUS_DEFAULT: {"final_step_type": "polynomial"},
    "Simple with Gaussian final step": {"final_step_type": "gaussian"},
    "Simple with first-order final step": {"final_step_type": "polynomial", "final_step_order": 1},
    "Simple unipc order 3": {"solver_order": 3},
    "Simple unipc last_lambda fixed at 2.5": {"last_lambda_growth": 0.0},
    "Simple unipc log-SNR-uniform": {"lambda_spacing_power": 1.0},
    # the README's setting for data of separated sharp modes (not the default: worse on 8-D and on the image models)
    "Simple for separated sharp modes": {"last_lambda": 2.3, "lambda_spacing_power": 0.5, "last_lambda_growth_start": 10},
    "Simple dpm++3M lu": {"sampler": "dpmsolver++", "solver_order": 3},
    "Simple dpm++2M trailing": {"sampler": "dpmsolver++", "use_lu_lambdas": False},
    "Simple calibrated": "calibrate",  # calibrate_timesteps on this mixture (other noise seeds), then the default
    "Simple calibrated + time shifts": "calibrate and shift",  # and calibrate_model_timesteps
}
TRACKED = ("Simple default", PREVIOUS_DEFAULT, "Simple calibrated", "Simple calibrated + time shifts")


def describe(scheduler) -> str:
    config = scheduler.config
    if config.sampler == "unipc":
        return (f"unipc order {config.solver_order}, corrector={config.use_corrector}, warped log-SNR grid "
                f"(last_lambda={config.last_lambda}, +{config.last_lambda_growth} per call above {config.last_lambda_growth_start}, "
                f"lambda_spacing_power={config.lambda_spacing_power}), analytic_first_step={config.analytic_first_step}, "
                f"final_step_type={config.final_step_type!r} (tolerance {config.final_step_tolerance}), "
                f"final_step_order={config.final_step_order}")
    return f"{config.sampler}, {config.timestep_spacing} spacing"


def add_arguments(parser):
    parser.add_argument("--num_samples", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=2, help="Independent draws each ratio is averaged over.")
    parser.add_argument("--calls", type=int, nargs="+", default=[3, 4, 5, 6, 8, 10, 15, 20])
    parser.add_argument("--num_directions", type=int, default=256)
    parser.add_argument("--precision_repeats", type=int, default=10,
                        help="Draws for the default, the calibrated grids and the best Diffusers configuration per budget "
                        "(the first --repeats shared).")
    parser.add_argument("--floor_pairs", type=int, default=6, help="Pairs of true sets per draw for the floor.")
    parser.add_argument("--skip_hard", action="store_true", help="Only the 8-D benchmark.")


BENCHMARKS = {
    # name: (dim, num_components, min_std, max_std)
    "8-D, 8 modes": (8, 8, 0.1, 0.4),
    "64-D, 16 sharp modes of unequal width": (64, 16, 0.03, 0.3),
    # the kind of the independent benchmark (10 sharp modes in 64-D), at the sharp end of the widths above
    "64-D, 10 very sharp modes (width 0.02)": (64, 10, 0.02, 0.02),
}


def mixture_model(predictor):
    """The exact predictor as a float32 model(x, t), as calibration calls a UNet."""
    return lambda x, t: predictor(x, float(t)).float()


def mixture_calibration(dim: int, num_samples: int = 2000) -> dict:
    """The calibration's batch and fine grid on a mixture: 2000 noise draws (seed 12345, not the benchmark's), 120 points."""
    return dict(sample_shape=(num_samples, dim), num_batches=1, seed=12345, fine_steps=120)


def calibrate_mixture_grids(predictor, calls, dim, num_samples: int = 2000) -> dict:
    """`calibrate_timesteps` with the default scheduler on a mixture: {str(calls): timesteps}."""
    return calibrate_timesteps(mixture_model(predictor), SimpleScheduler(), calls, **mixture_calibration(dim, num_samples))


def calibrated_configs(predictor, calls, dim):
    """The configs of "Simple calibrated" and "Simple calibrated + time shifts" (the latter's budgets without shifts
    confirmed on the held-out batch keep the calibrated grid)."""
    grids = calibrate_mixture_grids(predictor, calls, dim)
    shifted = calibrate_model_timesteps(mixture_model(predictor), SimpleScheduler(calibrated_timesteps=grids),
                                        **mixture_calibration(dim))
    return {"calibrate": {"calibrated_timesteps": grids},
            "calibrate and shift": {"calibrated_timesteps": {**grids, **shifted["calibrated_timesteps"]},
                                    "calibrated_model_timesteps": shifted["calibrated_model_timesteps"] or None}}


def run_benchmark(args, dim, num_components, min_std, max_std):
    mixture = GaussianMixture.random(dim, num_components, min_std, max_std)
    predictor = ExactNoisePredictor(mixture, DDPMScheduler().alphas_cumprod)
    directions = unit_directions(args.num_directions, dim)
    start = time.perf_counter()
    calibrated = calibrated_configs(predictor, args.calls, dim)
    simple = {}
    for name, config in SIMPLE_CONFIGS.items():
        config = calibrated[config] if isinstance(config, str) else config
        simple[name] = lambda c=config: SimpleScheduler(**c)
    calibration_time = time.perf_counter() - start
    families = {"Diffusers": diffusers_configs(), "SimpleScheduler": simple}
    configs = {**families["Diffusers"], **families["SimpleScheduler"]}
    steps = {(name, c): steps_for_calls(make, c) for name, make in configs.items() for c in args.calls}
    draw = dict(mixture=mixture, predictor=predictor, directions=directions, configs=configs, args=args)
    distances, nfe, floors = draw_distances(steps=steps, draws=range(args.repeats), **draw)
    # The default, the calibrated grids and each budget's best Diffusers configuration again over more draws: 2 draws
    # leave the ratio uncertain by about 0.05 at 10 calls
    best = {c: min(families["Diffusers"], key=lambda n: sum(distances[n, c])) for c in args.calls}
    tracked = {key: steps[key] for c in args.calls for key in ((best[c], c), *((name, c) for name in TRACKED))}
    more, _, more_floors = draw_distances(steps=tracked, draws=range(args.repeats, args.precision_repeats), **draw)
    floor = float(np.mean(floors + more_floors))
    ratio = {key: float(np.mean(values)) / floor for key, values in distances.items()}
    precise = {key: np.array(distances[key] + more[key]) / floor for key in tracked}
    return families, ratio, nfe, floor, calibration_time, (best, precise)


def draw_distances(mixture, predictor, directions, configs, steps, draws, args):
    """For each draw: `floor_pairs` distances between independent true sets, and for each (name, calls) in `steps`
    the distance of that scheduler's samples (from the draw's noise) to the draw's true set."""
    distances, nfe, floors = {key: [] for key in steps}, {}, []
    for repeat in draws:
        seed = 1000 * (repeat + 1)
        reference = mixture.sample(args.num_samples, torch.Generator().manual_seed(seed))
        for pair in range(args.floor_pairs):
            other = mixture.sample(args.num_samples, torch.Generator().manual_seed(seed + 10 + pair))
            floors.append(sliced_wasserstein(reference, other, directions))
        noise = torch.randn(args.num_samples, reference.shape[1], generator=torch.Generator().manual_seed(seed + 1))
        for (name, c), num_steps in steps.items():
            samples, nfe[name, c] = sample(configs[name](), num_steps, noise, predictor, seed + 2)
            distances[name, c].append(sliced_wasserstein(samples, reference, directions))
    return distances, nfe, floors


def precision_rows(best, precise, calls):
    """Mean +- standard error over the draws, for the default, the calibrated grids and the best Diffusers configuration
    at each budget."""
    def cell(key):
        values = precise[key]
        return f"{values.mean():.3g} ± {values.std(ddof=1) / math.sqrt(len(values)):.2g}"

    return [*([name, *(cell((name, c)) for c in calls)] for name in TRACKED),
            ["best Diffusers (from the table above)", *(f"{cell((best[c], c))} ({best[c]})" for c in calls)]]


def table_rows(families, ratio, nfe, calls):
    rows = []
    for members in families.values():
        for name in members:
            rows.append([name, *(ratio[name, c] if nfe[name, c] == c else f"{ratio[name, c]:.3g} ({nfe[name, c]} calls)"
                                 for c in calls)])
    for family, members in families.items():
        best = [min(members, key=lambda n: ratio[n, c]) for c in calls]
        rows.append([f"best {family}", *(f"{ratio[n, c]:.3g} ({n})" for n, c in zip(best, calls))])
    return rows


def step_cost(num_steps: int = 20, shape=(16, 3, 64, 64), repeats: int = 5) -> dict[str, float]:
    """Median time of the scheduler part of a `num_steps` loop (zero model), per step, in microseconds."""
    x = torch.randn(shape)
    makers = {
        "DPMSolverMultistep 2M": lambda: DPMSolverMultistepScheduler(),
        "UniPCMultistep bh2": lambda: UniPCMultistepScheduler(),
        "Simple default (unipc + UniC)": lambda: SimpleScheduler(),
        "Simple calibrated": lambda: SimpleScheduler(calibrated_timesteps={str(num_steps): list(
            np.linspace(999, 5, num_steps))}),
        "Simple calibrated + time shifts": lambda: SimpleScheduler(
            calibrated_timesteps={str(num_steps): list(np.linspace(999, 5, num_steps))},
            calibrated_model_timesteps={str(num_steps): list(np.linspace(990, 6, num_steps))}),
    }

    def loop(make):
        scheduler = make()
        scheduler.set_timesteps(num_steps)
        sample = x
        for t in scheduler.timesteps:
            sample = scheduler.step(0.1 * x, t, sample).prev_sample

    times = time_interleaved({name: (lambda m=m: loop(m)) for name, m in makers.items()}, repeats=repeats)
    return {name: 1e6 * value / num_steps for name, value in times.items()}


def main():
    args = parse_args(__doc__.splitlines()[0], add_arguments)
    if args.tiny:
        args.num_samples, args.repeats, args.calls, args.num_directions, args.floor_pairs = 2000, 1, [5, 10], 32, 2
        args.precision_repeats = 3
        args.skip_hard = True
    start = time.perf_counter()
    results = {}
    for bench, spec in BENCHMARKS.items():
        if args.skip_hard and bench != next(iter(BENCHMARKS)):
            continue
        results[bench] = run_benchmark(args, *spec)
    costs = step_cost(repeats=2 if args.tiny else 7)

    headers = ["scheduler"] + [f"{c} calls" for c in args.calls]
    first = next(iter(results))
    families, ratio, nfe, floor, calibration_time, _ = results[first]
    rows = table_rows(families, ratio, nfe, args.calls)

    figure, axes = new_figure(ncols=len(results), width=6, height=4.5)
    for ax, (bench, (families_b, ratio_b, *_)) in zip(axes[0], results.items()):
        for family, members in families_b.items():
            best = [min(ratio_b[n, c] for n in members) for c in args.calls]
            ax.plot(args.calls, best, "-o", label=f"best {family} (per budget)", markersize=3)
        ax.plot(args.calls, [ratio_b["Simple default", c] for c in args.calls], "-s", linewidth=2.5, label="Simple default")
        ax.plot(args.calls, [ratio_b["Simple calibrated", c] for c in args.calls], "-^", label="Simple calibrated")
        ax.plot(args.calls, [ratio_b["Simple calibrated + time shifts", c] for c in args.calls], "-v",
                label="Simple calibrated + time shifts")
        for name in ("DPMSolverMultistep 3M lu", "UniPCMultistep bh2 karras", "DPMSolverMultistep 2M karras"):
            ax.plot(args.calls, [ratio_b[name, c] for c in args.calls], ":", label=name, linewidth=1)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.axhline(1.5, color="gray", linewidth=0.8, linestyle=":")
        ax.set(xscale="log", yscale="log", xlabel="model calls", title=bench)
        ax.set_xticks(args.calls, [str(c) for c in args.calls], minor=False)
        ax.set_xticks([], minor=True)
        ax.legend(fontsize=6)
    axes[0, 0].set_ylabel("distance / finite-sample floor")

    extra = ""
    for bench, (families_b, ratio_b, nfe_b, floor_b, calibration_b, _) in list(results.items())[1:]:
        extra += f"\n#### {bench} (floor {floor_b:.4g}; calibration {calibration_b:.0f} s)\n\n"
        extra += markdown_table(headers, table_rows(families_b, ratio_b, nfe_b, args.calls)) + "\n"
    extra += "\n#### Scheduler cost per step (zero model, batch 16x3x64x64, 20 steps, median)\n\n"
    base = costs["DPMSolverMultistep 2M"]
    extra += "\n".join(f"- {name}: {value:.0f} us per step, {value / base:.2f}x DPMSolverMultistep 2M"
                        for name, value in costs.items()) + "\n"
    for bench, (*_, (best, precise)) in results.items():
        draws = len(next(iter(precise.values())))
        extra += (f"\n#### {bench}: the default, the previous default, calibrated grids and the best Diffusers configuration "
                  f"over {draws} draws (mean ± standard error of the mean)\n\n")
        extra += markdown_table(headers, precision_rows(best, precise, args.calls)) + "\n"
    # the tables of the notes come before the main table in the .md: print them first, in the same order
    print("\n".join(line for line in extra.splitlines() if line.startswith("|")))
    wall = time.perf_counter() - start
    notes = f"""
Sliced Wasserstein-1 distance of {args.num_samples} samples to {args.num_samples} fresh true samples, divided by the
finite-sample floor (the same distance between two independent true sets, mean over all draws), mean over {args.repeats} draws; 1.0 = as
good as exact sampling. Columns are model calls (Heun: 2 per step but the last; "(k calls)" marks a scheduler that
cannot make exactly that many). Exact noise predictor E[eps | x_t] of Gaussian mixtures (fractional timesteps
interpolate log sigma between train timesteps). Linear betas, 1000 train steps, no clipping. "Simple default" is
`SimpleScheduler()`: {describe(SimpleScheduler())}; "Simple calibrated" adds grids from
`diffusers_simple_training.calibrate.calibrate_timesteps` (solving with the default's `"auto"` last step) on 2000 other noise draws (fine grid of 120 points; each grid refined by 100 solves);
"Simple calibrated + time shifts" refits each grid with per-call model timesteps (`calibrate_model_timesteps`, 400 solves),
kept where a held-out batch of 2000 confirms them.
Then the tables of the 64-D mixtures, the step costs, the default, the previous default, the calibrated grids and the best
Diffusers configuration per budget over {args.precision_repeats} draws for each mixture, and last the main table of {first} (floor {floor:.4g}; calibration {calibration_time:.0f} s). {machine_description(args.num_threads)};
wall time {wall:.0f} s (`benchmarks/sampler_accuracy.py`).
{extra}
"""
    write_results(args.output_dir, "sampler_accuracy", "Sampler accuracy per model call with an exact noise predictor",
                  headers, rows, notes, figure)


if __name__ == "__main__":
    main()
