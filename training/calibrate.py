"""Per-model calibrated time grids for few-step sampling (`diffusers-simple-calibrate`).

For a budget of N model calls, the grid that makes N-call sampling closest to a fine reference solve is found by
dynamic programming over a fine grid of candidate timesteps, as in GITS (Chen et al. 2024, "On the Trajectory
Regularity of ODE-based Diffusion Sampling", https://huggingface.co/papers/2405.11326, Sec. 4):

1. A fine reference solve (the scheduler's ODE sampler on `fine_steps` warped log-SNR points) from a few batches of
   seeded noise stores the sample x_i and the x_0 prediction D_i at every fine point i. These are the only model calls.
2. The cost of a coarse step from fine point i to fine point j is the distance between the first-order
   (DDIM / DPM-Solver++(1)) step x_j' = sigma_j / sigma_i x_i - alpha_j (e^{-h} - 1) D_i and the reference x_j; the
   last step from point i to the clean sample costs the distance of D_i to x_0^ref. No further model calls. Distances
   are means over the samples of each sample's RMS distance: since the coarse and the reference solve start from the
   same noise, this bounds the Wasserstein-1 distance between what they sample (the RMS over the whole batch would
   bound Wasserstein-2, and let the few samples that switch modes outweigh the shape of every mode: it picked grids
   that sample worse).
3. Dynamic programming over (number of calls, fine point) finds, for each budget N, the path from the first fine point
   (t = T - 1) with N calls whose summed step costs are least. With the scheduler's `analytic_first_step`, a second
   run lets a path also start without a call there: the analytic step to its first call at fine point j (eps = x_T,
   redone with D_j, as `SimpleScheduler` does) costs the distance of its result to x_j.
4. Of these grids and the default one, the grid with which the sampler itself lands closest to the reference samples
   is kept (the step costs model first-order steps; the sampler, and its last step to the clean sample with the
   scheduler's `final_step_type`, are of higher order).
5. That grid is refined by minimising the sampler's own distance to the reference samples over its N timesteps
   directly, as LD3 does (Tong et al. 2025, "Learning to Discretize Denoising Diffusion ODEs",
   https://huggingface.co/papers/2405.15506), but derivative-free, so the model is only called, never
   differentiated: Nelder-Mead (scipy) on log t, `refine_evaluations` N-call solves per batch. The dynamic program
   only sees first-order steps and each step's error on its own; the refinement sees the whole higher-order solve.
   On the 64-D mixture of `benchmarks/sampler_accuracy.py` (2000 samples, the default 100 solves) it moves the 5-call
   grid from [656, 397, 171, 61, 21] to [432, 279, 132, 73, 23].

6. Optionally (`calibrate_model_timesteps`, `--shift_evaluations`), the grid is refit together with one shift per call
   of the timestep the model is given, t_i e^{delta_i} while the sample is at t_i: the shifted time steps of Li et al.
   2024 ("Alleviating Exposure Bias in Diffusion Models through Sampling with Shifted Time Steps",
   https://huggingface.co/papers/2305.15583), fitted per model on the same error. A budget keeps its shifts only if
   they also lower the error on a held-out batch. On the 64-D mixture they take 5-call sampling from 1.72x to 1.17x
   the floor (`benchmarks/sampler_accuracy.py`); on the digits model they did not lower the Frechet distance.

7. `calibrate_pipeline` and `shift_pipeline` (the console script, and the training script's calibration at export)
   fit the grids with the scheduler's default last step, `"auto"`, and set the scheduler's `final_step_type` to it, so
   that a grid is sampled with the last step it was fitted with: a grid fitted with one last step and sampled with
   another can be far off. With the first `"auto"` gate (|eps| / s over three calls) the Fashion-MNIST model's
   polynomial-fitted 4-call grid, [867, 648, 454, 294], gave 20.2 with the polynomial step and 47.5 with `"auto"`,
   whose Gaussian step some samples took from t = 294, and on the digits model `"auto"`-fitted grids were further in
   Frechet distance from 1000-step DDPM samples at 3-5 calls (16.7 / 13.6 / 12.7 against 14.1 / 11.2 / 11.1), so
   the default was `"polynomial"` then. With the present gate (a Gaussian mode fitted to the last two calls) no sample
   of the image models takes the Gaussian step: the two steps sample those grids bitwise alike (digits and demo at
   5 and 10 calls, the Fashion-MNIST 4-call grid above), and the digits model's grids for 3-10 calls and the
   Fashion-MNIST model's for 4 and 5 calls come out identical with either. On the exact mixtures of
   `benchmarks/sampler_accuracy.py`, which call `calibrate_timesteps` with the scheduler as it is, `"auto"` fits
   the better grids (64-D, 16 modes: 1.15x the floor at 5 calls). `final_step_type="polynomial"` (or
   `--final_step_type polynomial`) still fits and samples with the polynomial step.

The grids are stored as `calibrated_timesteps` in the scheduler config ({"N": [N timesteps]}), the model timesteps
as `calibrated_model_timesteps`, so a checkpoint carries them and `pipe(num_inference_steps=N)` uses them.
"""

import argparse
import math
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SCHEDULER_CONFIG_NAME
from scipy.optimize import minimize

from diffusers_simple.scheduling_simple import FINAL_STEP_TYPES, SimpleScheduler, check_calibrated_timesteps
from diffusers_simple_training.atomic import fsync_tree, replace_path


def _fine_grid(scheduler: SimpleScheduler, fine_steps: int) -> np.ndarray:
    # log-SNR-uniform candidates from t = T - 1 down to t = 1 (last_lambda is capped there)
    fine = SimpleScheduler.from_config(
        scheduler.config, sampler="unipc", calibrated_timesteps=None, calibrated_model_timesteps=None, solver_order=3,
        lambda_spacing_power=1.0, last_lambda=1e3, analytic_first_step=False,
    )
    fine.set_timesteps(fine_steps)
    return fine, fine.timesteps.double().numpy()


def _fine_solve(model, fine: SimpleScheduler, noise: torch.Tensor, device):
    """The reference solve on the fine grid from `noise`: the samples x_i at the fine points, their x_0 predictions
    D_i, and the final sample."""
    x, xs, ds = noise, [], []
    for t in fine.timesteps:
        xs.append(x)
        out = fine.step(model(fine.scale_model_input(x, t), t.to(device)), t, x)
        ds.append(out.pred_original_sample.float())
        x = out.prev_sample.float()
    return xs, ds, x


@torch.no_grad()
def calibrate_timesteps(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scheduler: SimpleScheduler,
    budgets: Iterable[int],
    sample_shape: tuple,
    num_batches: int = 2,
    seed: int = 0,
    fine_steps: int = 100,
    device: str | torch.device = "cpu",
    refine_evaluations: int = 100,
) -> dict[str, list[float]]:
    """
    Finds for each budget N the N timesteps that bring N-call sampling closest to a fine reference solve (GITS-style
    dynamic programming; see the module docstring). Deterministic: the same model, seed and arguments give the same
    grids.

    Args:
        model (`Callable`):
            `model(x_t, t)` returning the model output (in the scheduler's `prediction_type`) for a batch `x_t` at the
            (fractional) timestep `t`, a 0-d float tensor.
        scheduler (`SimpleScheduler`):
            The scheduler whose noise schedule, `prediction_type` and clipping are used.
        budgets (`Iterable[int]`):
            Numbers of model calls to calibrate, each from 1 to `fine_steps`.
        sample_shape (`tuple`):
            The shape of one batch of initial noise, e.g. `(16, 3, 32, 32)`.
        num_batches (`int`, defaults to 2):
            Batches of seeded noise the error is summed over.
        seed (`int`, defaults to 0):
            Seed of the noise.
        fine_steps (`int`, defaults to 100):
            Points of the fine reference grid, which are also the candidate timesteps.
        device (`str` or `torch.device`, defaults to `"cpu"`):
            Where the noise and the solve live.
        refine_evaluations (`int`, defaults to 100):
            N-call solves of each batch with which each budget's grid is refined (step 5 of the module docstring);
            0 keeps the grid of the dynamic program.

    Returns:
        `dict[str, list[float]]`: `{str(N): [N descending timesteps]}`, ready for `calibrated_timesteps`.
    """
    budgets = sorted({int(b) for b in budgets})
    if not budgets or budgets[0] < 1 or budgets[-1] > fine_steps:
        raise ValueError(f"budgets={budgets} must be numbers of model calls from 1 to fine_steps={fine_steps}.")
    if not isinstance(refine_evaluations, int) or refine_evaluations < 0:
        raise ValueError(f"refine_evaluations={refine_evaluations!r} must be a number of solves, 0 or more.")
    fine, grid = _fine_grid(scheduler, fine_steps)
    alphas, sigmas, lambdas = fine._alphas, fine._sigmas, fine._lambdas
    M = len(grid)
    generator = torch.Generator(device="cpu").manual_seed(seed)

    # step costs, summed over batches: cost[i, j] for i < j < M (a step between fine points), final[i] (to x_0)
    cost = torch.zeros(M, M, dtype=torch.float64)
    final = torch.zeros(M, dtype=torch.float64)
    start = torch.zeros(M, dtype=torch.float64)  # the analytic first step from fine point 0 (t = T - 1) to each point
    batches = []  # (noise, reference sample) per batch
    for _ in range(num_batches):
        noise = torch.randn(sample_shape, generator=generator, dtype=torch.float32).to(device)
        xs, ds, x_ref = _fine_solve(model, fine, noise, device)
        batches.append((noise, x_ref))
        X = torch.stack(xs).reshape(len(xs), len(noise), -1).double()  # (M, batch, numel of one sample)
        Dm = torch.stack(ds).reshape(X.shape).double()
        for i in range(M - 1):
            j = np.arange(i + 1, M)
            h = torch.as_tensor(lambdas[j] - lambdas[i])
            coef_x = torch.as_tensor(sigmas[j] / sigmas[i])[:, None, None]
            coef_d = -torch.as_tensor(alphas[j])[:, None, None] * torch.expm1(-h)[:, None, None]
            prediction = coef_x * X[i] + coef_d * Dm[i]
            cost[i, i + 1 :] += sample_distance(prediction, X[torch.from_numpy(j)]).cpu()
        final += sample_distance(Dm, x_ref.reshape(X.shape[1:]).double()).cpu()
        # SimpleScheduler's redone analytic first step: x_j' = alpha_j D_j + sigma_j / sigma_0 (x_T - alpha_0 D_j)
        x_T = X[0]
        analytic = torch.as_tensor(alphas[:M])[:, None, None] * Dm + torch.as_tensor(sigmas[:M] / sigmas[0])[:, None, None] * (
            x_T - alphas[0] * Dm)
        start += sample_distance(analytic, X).cpu()

    # Dynamic programming: best[k, j] = least cost of reaching fine point j with its model call as call k + 1. Run
    # once with the first call at t = T - 1 and, with the analytic first step, once more with the first call anywhere
    # (reached by the analytic step): two candidate grids per budget.
    starts = [torch.full((M,), math.inf, dtype=torch.float64)]
    starts[0][0] = 0.0
    if scheduler.config.analytic_first_step and scheduler.config.sampler == "unipc":
        starts.append(torch.cat([torch.zeros(1, dtype=torch.float64), start[1:]]))
    candidates = {str(n): [] for n in budgets}
    steps = torch.where(torch.triu(torch.ones(M, M, dtype=torch.bool), 1), cost, math.inf)
    for first in starts:
        best = torch.full((budgets[-1], M), math.inf, dtype=torch.float64)
        parent = torch.full((budgets[-1], M), -1, dtype=torch.long)
        best[0] = first
        for k in range(1, budgets[-1]):
            best[k], parent[k] = (best[k - 1][:, None] + steps).min(0)
        for n in budgets:
            j = int(torch.argmin(best[n - 1] + final))
            path = [j]
            for k in range(n - 1, 0, -1):
                j = int(parent[k, j])
                path.append(j)
            candidates[str(n)].append([round(float(grid[p]), 4) for p in reversed(path)])

    # The step costs model first-order steps; the sampler is of higher order. Of the candidates and the default grid,
    # keep the one with which the sampler itself, run from the same noise, lands closest to the reference, so that
    # calibrating never makes N-call sampling worse on these batches (N calls per batch and candidate).
    default = SimpleScheduler.from_config(scheduler.config, calibrated_timesteps=None, calibrated_model_timesteps=None)
    grids = {}
    for n in budgets:
        default.set_timesteps(n)
        options = [[round(float(t), 4) for t in default.timesteps], *candidates[str(n)]]
        options = [list(g) for g in dict.fromkeys(map(tuple, options))]  # both runs often find the same grid: sample once
        errors = [_grid_error(model, scheduler, g, batches, device) for g in options]
        grids[str(n)] = options[int(np.argmin(errors))]  # the first of equal errors: the default grid
        if refine_evaluations:
            grids[str(n)] = _refine(model, scheduler, grids[str(n)], min(errors), batches, device, refine_evaluations)
    check_calibrated_timesteps(grids, scheduler.config.num_train_timesteps)
    return grids


def _refine(model, scheduler, grid: list[float], error: float, batches, device, evaluations: int) -> list[float]:
    """Nelder-Mead on log t from `grid` (its error `error`), each simplex vertex first moving one timestep 18% lower;
    returns the grid of least error found (`grid` itself if none is better)."""
    T = scheduler.config.num_train_timesteps
    best = [error, grid]

    def objective(log_t):
        if not np.all(np.isfinite(log_t)):
            return math.inf
        candidate = [round(float(t), 4) for t in np.sort(np.clip(np.exp(log_t), 1e-3, T - 1))[::-1]]
        if len(set(candidate)) < len(candidate):
            return math.inf  # two timesteps merged: not a grid of N calls
        value = _grid_error(model, scheduler, candidate, batches, device)
        if value < best[0]:
            best[:] = [value, candidate]
        return value

    start = np.log(np.clip(np.asarray(grid, dtype=np.float64), 1e-3, None))  # a grid may end at t = 0 (dpmsolver++)
    simplex = np.vstack([start, start - 0.2 * np.eye(len(grid))])
    minimize(objective, start, method="Nelder-Mead",
             options={"maxfev": evaluations, "initial_simplex": simplex, "xatol": 1e-4, "fatol": 0.0})
    return best[1]


@torch.no_grad()
def calibrate_model_timesteps(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scheduler: SimpleScheduler,
    sample_shape: tuple,
    num_batches: int = 2,
    seed: int = 0,
    fine_steps: int = 100,
    device: str | torch.device = "cpu",
    evaluations: int = 400,
) -> dict[str, dict[str, list[float]]]:
    """
    Calibrated time shifts (step 6 of the module docstring) for each grid in `scheduler.config.calibrated_timesteps`:
    Nelder-Mead over the grid's log t and one shift delta_i per call together (the model called at t_i e^{delta_i},
    the sample at t_i), on the same batches and reference solves as `calibrate_timesteps` with the same `seed`,
    `num_batches` and `fine_steps`. A budget's shifts are kept only if they also lower the error on one more,
    held-out batch; otherwise its grid stays as it is, without shifts.

    Args:
        model (`Callable`), scheduler (`SimpleScheduler`), sample_shape (`tuple`), num_batches (`int`, defaults to
        2), seed (`int`, defaults to 0), fine_steps (`int`, defaults to 100), device (`str` or `torch.device`,
        defaults to `"cpu"`): as for [`calibrate_timesteps`]; `scheduler` holds the calibrated grids.
        evaluations (`int`, defaults to 400):
            N-call solves of each batch per budget.

    Returns:
        `dict`: `{"calibrated_timesteps": {...}, "calibrated_model_timesteps": {...}}` for the budgets whose shifts
        were kept, ready for `SimpleScheduler.from_config(scheduler.config, **...)` after merging.
    """
    grids = scheduler.config.calibrated_timesteps or {}
    if not grids:
        raise ValueError("calibrate_model_timesteps needs calibrated_timesteps in the scheduler config; run "
                         "calibrate_timesteps first.")
    if not isinstance(evaluations, int) or evaluations < 1:
        raise ValueError(f"evaluations={evaluations!r} must be a number of solves, 1 or more.")
    fine, _ = _fine_grid(scheduler, fine_steps)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    batches = []
    for _ in range(num_batches + 1):  # the calibration batches of calibrate_timesteps, then the held-out one
        noise = torch.randn(sample_shape, generator=generator, dtype=torch.float32).to(device)
        batches.append((noise, _fine_solve(model, fine, noise, device)[2]))
    fit, held_out = batches[:-1], batches[-1:]
    T = scheduler.config.num_train_timesteps
    kept = {"calibrated_timesteps": {}, "calibrated_model_timesteps": {}}
    for key, grid in grids.items():
        n = len(grid)

        def times(p):  # (grid, model timesteps) of the parameters (log t_i, delta_i), or None if not N calls
            if not np.all(np.isfinite(p)):
                return None
            candidate = [round(float(t), 4) for t in np.sort(np.clip(np.exp(p[:n]), 1e-3, T - 1))[::-1]]
            model_times = [round(float(t), 4) for t in np.clip(np.array(candidate) * np.exp(p[n:]), 0, T - 1)]
            if len(set(candidate)) < n or not np.all(np.diff(model_times) < 0):
                return None
            return candidate, model_times

        def objective(p):
            pair = times(p)
            return math.inf if pair is None else _grid_error(model, scheduler, pair[0], fit, device, pair[1])

        start = np.concatenate([np.log(np.clip(np.asarray(grid, dtype=np.float64), 1e-3, None)), np.zeros(n)])
        simplex = np.vstack([start, start - 0.1 * np.eye(2 * n)])
        result = minimize(objective, start, method="Nelder-Mead",
                          options={"maxfev": evaluations, "initial_simplex": simplex, "xatol": 1e-4, "fatol": 0.0})
        pair = times(result.x)
        if pair is None or result.fun >= _grid_error(model, scheduler, grid, fit, device):
            continue  # nothing better than the grid alone on the calibration batches
        if _grid_error(model, scheduler, pair[0], held_out, device, pair[1]) < _grid_error(model, scheduler, grid, held_out, device):
            kept["calibrated_timesteps"][key], kept["calibrated_model_timesteps"][key] = pair
    return kept


def sample_distance(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The mean over the samples of each sample's RMS distance to its reference; `x` and `reference` of shape
    (..., batch, numel of one sample), the result of shape (...)."""
    return (x - reference).double().pow(2).mean(-1).sqrt().mean(-1)


def _grid_error(model, scheduler: SimpleScheduler, grid: list[float], batches, device, model_timesteps=None) -> float:
    """`sample_distance`, summed over the batches, of sampling with `scheduler` on `grid` (its calibrated grid for
    len(grid) calls, with the model called at `model_timesteps` if given) from each batch's noise to the batch's
    reference samples."""
    n = len(grid)
    scheduler = SimpleScheduler.from_config(
        scheduler.config, calibrated_timesteps={str(n): grid},
        calibrated_model_timesteps=None if model_timesteps is None else {str(n): model_timesteps})
    total = 0.0
    for noise, reference in batches:
        scheduler.set_timesteps(n)
        x = noise * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = scheduler.step(model(scheduler.scale_model_input(x, t), t.to(device)), t, x).prev_sample.float()
        total += sample_distance(x.reshape(len(x), -1), reference.reshape(len(x), -1)).item()
    return total


def _pipeline_model(pipeline, batch_size: int = 16, seed: int = 0):
    """
    What `calibrate_pipeline` calibrates `pipeline.unet` with: `model(x_t, t)`, the UNet's float32 output (a
    class-conditional UNet gets seeded random labels, no guidance), and the shape of one batch of noise.

    Args:
        pipeline (`SimpleDiffusionPipeline`): the pipeline, with a `SimpleScheduler`.
        batch_size (`int`, defaults to 16), seed (`int`, defaults to 0): as for [`calibrate_pipeline`].

    Returns:
        `tuple`: `(model, sample_shape)`.
    """
    unet, scheduler = pipeline.unet, pipeline.scheduler
    if not isinstance(scheduler, SimpleScheduler):
        raise ValueError(f"calibration needs a SimpleScheduler, not {type(scheduler).__name__}.")
    num_classes = unet.config.get("num_class_embeds")
    labels = None
    if num_classes:
        labels = torch.randint(num_classes, (batch_size,), generator=torch.Generator().manual_seed(seed + 1)).to(unet.device)
    dtype = unet.dtype

    def model(x, t):
        return unet(x.to(dtype), t, class_labels=labels).sample.float()

    sample_size = unet.config.sample_size
    height, width = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
    return model, (batch_size, unet.config.in_channels, height, width)


def _calibration_scheduler(scheduler: SimpleScheduler, final_step_type: str | None) -> SimpleScheduler:
    """`scheduler` with the last step `final_step_type` (`None`: its own): what the calibration solves with, and the
    calibrated scheduler samples with."""
    if final_step_type is None:
        return scheduler
    return SimpleScheduler.from_config(scheduler.config, final_step_type=final_step_type)  # checks the value


def calibrate_pipeline(pipeline, budgets: Iterable[int], batch_size: int = 16, num_batches: int = 2, seed: int = 0,
                       fine_steps: int = 100, refine_evaluations: int = 100,
                       shift_evaluations: int = 0, final_step_type: str | None = "auto") -> dict[str, list[float]]:
    """
    Calibrates `pipeline.scheduler` (a `SimpleScheduler`) for `pipeline.unet` and stores the grids in its config
    (`calibrated_timesteps`, merged with grids already there; model timesteps of a recalibrated budget are dropped);
    `pipeline.save_pretrained` then writes them into the checkpoint. Class-conditional UNets are calibrated on seeded
    random labels, without guidance.

    Args:
        pipeline (`SimpleDiffusionPipeline`): the trained pipeline.
        budgets (`Iterable[int]`): numbers of model calls to calibrate.
        batch_size (`int`, defaults to 16), num_batches (`int`, defaults to 2), seed (`int`, defaults to 0),
        fine_steps (`int`, defaults to 100), refine_evaluations (`int`, defaults to 100): see [`calibrate_timesteps`].
        shift_evaluations (`int`, defaults to 0):
            If above 0, also fits calibrated time shifts with this many solves per budget
            ([`calibrate_model_timesteps`]), stored as `calibrated_model_timesteps` where a held-out batch confirms
            them.
        final_step_type (`str`, *optional*, defaults to `"auto"`):
            The last step the grids are fitted with (`"auto"`, `"gaussian"` or `"polynomial"`). It also replaces the
            scheduler's own `final_step_type`, so that the grids are sampled with it; grids already there for other
            budgets are kept as they are, so recalibrate them too if they were fitted with another last step. `None`
            keeps the scheduler's own (step 7 of the module docstring).

    Returns:
        `dict[str, list[float]]`: the new grids.
    """
    scheduler = pipeline.scheduler
    solver = _calibration_scheduler(scheduler, final_step_type)
    model, shape = _pipeline_model(pipeline, batch_size, seed)
    grids = calibrate_timesteps(model, solver, budgets, shape, num_batches, seed, fine_steps, pipeline.unet.device,
                                refine_evaluations)
    model_timesteps = {k: v for k, v in (scheduler.config.calibrated_model_timesteps or {}).items() if k not in grids}
    merged = {**(scheduler.config.calibrated_timesteps or {}), **grids}
    pipeline.scheduler = SimpleScheduler.from_config(solver.config, calibrated_timesteps=merged,
                                                     calibrated_model_timesteps=model_timesteps or None)
    if shift_evaluations:
        grids.update(shift_pipeline(pipeline, grids, batch_size, num_batches, seed, fine_steps, shift_evaluations,
                                    final_step_type))
    return grids


def shift_pipeline(pipeline, budgets: Iterable[int | str], batch_size: int = 16, num_batches: int = 2, seed: int = 0,
                   fine_steps: int = 100, evaluations: int = 400,
                   final_step_type: str | None = "auto") -> dict[str, list[float]]:
    """
    Fits calibrated time shifts ([`calibrate_model_timesteps`]) for the calibrated grids of `budgets` in
    `pipeline.scheduler` and stores the grids and model timesteps of the budgets where a held-out batch confirms them
    in its config (`calibrated_timesteps`, `calibrated_model_timesteps`).

    Args:
        pipeline (`SimpleDiffusionPipeline`): a pipeline whose scheduler holds calibrated grids for `budgets`.
        budgets (`Iterable[int | str]`): numbers of model calls whose grids get shifts.
        batch_size (`int`, defaults to 16), num_batches (`int`, defaults to 2), seed (`int`, defaults to 0),
        fine_steps (`int`, defaults to 100): as for [`calibrate_pipeline`], whose batches these are.
        evaluations (`int`, defaults to 400): see [`calibrate_model_timesteps`].
        final_step_type (`str`, *optional*, defaults to `"auto"`): as for [`calibrate_pipeline`].

    Returns:
        `dict[str, list[float]]`: the refit grids of the budgets that kept shifts.
    """
    scheduler = pipeline.scheduler
    grids = scheduler.config.calibrated_timesteps or {}
    budgets = [str(n) for n in budgets]
    missing = [n for n in budgets if n not in grids]
    if missing:
        raise ValueError(
            f"shift_pipeline needs a calibrated grid for each budget; {missing} have none (the scheduler has grids for "
            f"{sorted(grids, key=int)}). Calibrate them first with `calibrate_pipeline`."
        )
    solver = _calibration_scheduler(scheduler, final_step_type)
    to_shift = SimpleScheduler.from_config(solver.config, calibrated_timesteps={n: grids[n] for n in budgets},
                                           calibrated_model_timesteps=None)
    model, shape = _pipeline_model(pipeline, batch_size, seed)
    shifted = calibrate_model_timesteps(model, to_shift, shape, num_batches, seed, fine_steps, pipeline.unet.device,
                                        evaluations)
    pipeline.scheduler = SimpleScheduler.from_config(
        solver.config, calibrated_timesteps={**grids, **shifted["calibrated_timesteps"]},
        calibrated_model_timesteps={**(scheduler.config.calibrated_model_timesteps or {}),
                                    **shifted["calibrated_model_timesteps"]} or None)
    return shifted["calibrated_timesteps"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Calibrate few-step time grids of a diffusers-simple pipeline (GITS-style dynamic programming "
        "against a fine reference solve) and store them in its scheduler config."
    )
    parser.add_argument("pipeline", type=Path, help="A saved SimpleDiffusionPipeline folder.")
    parser.add_argument("--budgets", type=int, nargs="+", default=[3, 4, 5, 6, 8, 10])
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_batches", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fine_steps", type=int, default=100)
    parser.add_argument("--refine_evaluations", type=int, default=100,
                        help="N-call solves per batch that refine each budget's grid (0: the dynamic program's grid).")
    parser.add_argument("--shift_evaluations", type=int, default=0,
                        help="N-call solves per batch that fit calibrated time shifts with each grid, kept where a "
                        "held-out batch confirms them (0: no shifts).")
    parser.add_argument("--final_step_type", choices=[*FINAL_STEP_TYPES, "scheduler"], default="auto",
                        help="The last step the grids are fitted with, saved as the scheduler's final_step_type so that "
                        "they are sampled with it ('scheduler': keep the scheduler's own).")
    parser.add_argument("--output_dir", type=Path, default=None, help="Where to save the pipeline (default: in place).")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from diffusers_simple import SimpleDiffusionPipeline

    pipeline = SimpleDiffusionPipeline.from_pretrained(args.pipeline).to(args.device)
    grids = calibrate_pipeline(pipeline, args.budgets, args.batch_size, args.num_batches, args.seed, args.fine_steps,
                               args.refine_evaluations, args.shift_evaluations,
                               None if args.final_step_type == "scheduler" else args.final_step_type)
    output_dir = args.output_dir or args.pipeline
    if output_dir == args.pipeline:  # only the scheduler config changes: write it aside, then swap it in atomically
        with tempfile.TemporaryDirectory(dir=output_dir) as staging:
            pipeline.scheduler.save_pretrained(staging)
            fsync_tree(staging)
            replace_path(Path(staging) / SCHEDULER_CONFIG_NAME, Path(output_dir) / "scheduler" / SCHEDULER_CONFIG_NAME)
    else:
        pipeline.save_pretrained(output_dir)
    model_timesteps = pipeline.scheduler.config.calibrated_model_timesteps or {}
    for n, grid in grids.items():
        print(f"{n} calls: {grid}" + (f", the model called at {model_timesteps[n]}" if n in model_timesteps else ""))


if __name__ == "__main__":
    main()
