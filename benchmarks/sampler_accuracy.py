"""Sampler accuracy per number of model evaluations (NFE), with an exact noise predictor.

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
from common import machine_description, new_figure, parse_args, write_results
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

from diffusers_simple import SimpleScheduler


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


def sample(scheduler, num_steps: int, noise: torch.Tensor, predictor: ExactNoisePredictor, seed: int):
    """The Diffusers denoising loop; returns the samples and the number of model evaluations."""
    scheduler.set_timesteps(num_steps)
    generator = torch.Generator().manual_seed(seed)
    stochastic = isinstance(scheduler, DDPMScheduler) or getattr(scheduler.config, "sampler", None) == "ddpm"
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = predictor(scheduler.scale_model_input(x, t), float(t))
        x = scheduler.step(eps, t, x, **({"generator": generator} if stochastic else {})).prev_sample
    return x, len(scheduler.timesteps)


def diffusers_configs():
    no_clip = {"clip_sample": False}
    return {
        "DDPMScheduler": lambda: DDPMScheduler(**no_clip),
        "DDIMScheduler": lambda: DDIMScheduler(**no_clip),
        "DDIMScheduler trailing": lambda: DDIMScheduler(timestep_spacing="trailing", **no_clip),
        "DPMSolverMultistep 2M": lambda: DPMSolverMultistepScheduler(),
        "DPMSolverMultistep 3M": lambda: DPMSolverMultistepScheduler(solver_order=3),
        "DPMSolverMultistep 2M Karras": lambda: DPMSolverMultistepScheduler(use_karras_sigmas=True),
        "DPMSolverMultistep 2M lu_lambdas": lambda: DPMSolverMultistepScheduler(use_lu_lambdas=True),
        "DPMSolverMultistep 3M lu_lambdas": lambda: DPMSolverMultistepScheduler(solver_order=3, use_lu_lambdas=True),
        "UniPCMultistep": lambda: UniPCMultistepScheduler(),
        "EulerDiscrete": lambda: EulerDiscreteScheduler(),
    }


SIMPLE_CONFIGS = {
    "Simple default": {},
    "Simple ddpm": {"sampler": "ddpm"},
    "Simple ddim": {"sampler": "ddim"},
    "Simple dpm++2 trailing": {"use_lu_lambdas": False},
    "Simple dpm++2 linspace": {"use_lu_lambdas": False, "timestep_spacing": "linspace"},
    "Simple dpm++2 leading": {"use_lu_lambdas": False, "timestep_spacing": "leading"},
    "Simple dpm++2 lu no-lof": {"lower_order_final": False},
    "Simple dpm++3 trailing": {"solver_order": 3, "use_lu_lambdas": False},
    "Simple dpm++3 lu": {"solver_order": 3},
    "Simple dpm++3 lu no-lof": {"solver_order": 3, "lower_order_final": False},
    "Simple dpm++3 lu to t=0": {"solver_order": 3, "set_alpha_to_one": False},
}


def describe(scheduler) -> str:
    config = scheduler.config
    if config.sampler != "dpmsolver++":
        return f"{config.sampler}, {config.timestep_spacing} spacing"
    spacing = "log-SNR-uniform steps" if config.use_lu_lambdas else f"{config.timestep_spacing} spacing"
    return f"dpmsolver++ order {config.solver_order}, {spacing}, lower_order_final={config.lower_order_final}"


def add_arguments(parser):
    parser.add_argument("--num_samples", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3, help="Independent draws each ratio is averaged over.")
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--num_components", type=int, default=8)
    parser.add_argument("--min_std", type=float, default=0.1)
    parser.add_argument("--max_std", type=float, default=0.4)
    parser.add_argument("--num_directions", type=int, default=256)
    parser.add_argument("--floor_pairs", type=int, default=8, help="Pairs of true sets per draw for the floor.")


def main():
    args = parse_args(__doc__.splitlines()[0], add_arguments)
    if args.tiny:
        args.num_samples, args.repeats, args.steps, args.num_directions, args.floor_pairs = 2000, 1, [5, 10], 32, 2
    start = time.perf_counter()
    mixture = GaussianMixture.random(args.dim, args.num_components, args.min_std, args.max_std)
    predictor = ExactNoisePredictor(mixture, DDPMScheduler().alphas_cumprod)
    directions = torch.randn(args.num_directions, args.dim, generator=torch.Generator().manual_seed(1))
    directions = (directions / directions.norm(dim=1, keepdim=True)).double()

    families = {
        "Diffusers": diffusers_configs(),
        "SimpleScheduler": {n: (lambda c=c: SimpleScheduler(**c)) for n, c in SIMPLE_CONFIGS.items()},
    }
    configs = {**families["Diffusers"], **families["SimpleScheduler"]}
    distances = {(name, steps): [] for name in configs for steps in args.steps}
    nfe = {}
    floors = []
    for repeat in range(args.repeats):
        seed = 1000 * (repeat + 1)
        reference = mixture.sample(args.num_samples, torch.Generator().manual_seed(seed))
        for pair in range(args.floor_pairs):  # the floor is cheap: estimate it from more pairs than the samplers
            other = mixture.sample(args.num_samples, torch.Generator().manual_seed(seed + 10 + pair))
            floors.append(sliced_wasserstein(reference, other, directions))
        noise = torch.randn(args.num_samples, args.dim, generator=torch.Generator().manual_seed(seed + 1))
        for name, make_scheduler in configs.items():
            for steps in args.steps:
                samples, nfe[name, steps] = sample(make_scheduler(), steps, noise, predictor, seed + 2)
                distances[name, steps].append(sliced_wasserstein(samples, reference, directions))
    floor = sum(floors) / len(floors)
    ratio = {key: sum(values) / len(values) / floor for key, values in distances.items()}

    headers = ["scheduler"] + [f"{steps} steps" for steps in args.steps]
    rows = []
    for name in configs:
        cells = [ratio[name, s] if nfe[name, s] == s else f"{ratio[name, s]:.3g} ({nfe[name, s]} NFE)" for s in args.steps]
        rows.append([name, *cells])
    for family, members in families.items():
        best = [min(members, key=lambda n: ratio[n, s]) for s in args.steps]
        rows.append([f"best {family}", *(f"{ratio[n, s]:.3g} ({n})" for n, s in zip(best, args.steps))])

    figure, axes = new_figure(ncols=2, width=5.5, height=4.5)
    for ax, (family, members) in zip(axes[0], families.items()):
        for i, name in enumerate(members):
            ax.plot(args.steps, [ratio[name, s] for s in args.steps], "-o", color=matplotlib.colormaps["tab20"](i), label=name, markersize=3,
                    linewidth=2.5 if name == "Simple default" else 1.2)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.axhline(1.5, color="gray", linewidth=0.8, linestyle=":")
        ax.set(xscale="log", yscale="log", xlabel="model evaluations (steps)", title=f"{family} ({args.dim}-D mixture)")
        ax.set_xticks(args.steps, [str(s) for s in args.steps], minor=False)
        ax.set_xticks([], minor=True)
        ax.legend(fontsize=6)
    axes[0, 0].set_ylabel("distance / finite-sample floor")
    axes[0, 1].sharey(axes[0, 0])

    wall = time.perf_counter() - start
    notes = f"""
Sliced Wasserstein-1 distance of {args.num_samples} samples to {args.num_samples} fresh true samples, divided by the
finite-sample floor (the same distance between two independent true sets: {floor:.4g}, mean of {len(floors)} pairs, which
range from {min(floors):.4g} to {max(floors):.4g}), mean over {args.repeats} draws of initial noise and true samples;
1.0 = as good as exact sampling. Data: a
{args.dim}-D mixture of {args.num_components} Gaussians (std {args.min_std} to {args.max_std}), exact noise predictor
E[eps | x_t]. Linear betas, 1000 train steps, no clipping; each scheduler otherwise at its defaults ("Simple default" is
`SimpleScheduler()`: {describe(SimpleScheduler())}). `lu`: use_lu_lambdas=True (SimpleScheduler's default), steps uniform
in log-SNR; `no-lof`: lower_order_final=False; `to t=0`: set_alpha_to_one=False. {machine_description(args.num_threads)}; wall time {wall:.0f} s (`benchmarks/sampler_accuracy.py`).
"""
    write_results(args.output_dir, "sampler_accuracy", "Sampler accuracy with an exact noise predictor", headers, rows, notes, figure)


if __name__ == "__main__":
    main()
