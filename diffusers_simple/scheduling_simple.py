# Copyright 2025 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
#
# Self-contained on purpose: this file imports only the standard library, numpy, torch and diffusers, because
# `save_pretrained` copies it verbatim into checkpoints loaded with `trust_remote_code=True`.
"""
`SimpleScheduler`: the forward process of DDPM and three ways to run it backwards, in one file.

Notation (Ho et al. 2020): `abar_t` is the cumulative product of `1 - beta_s` for s <= t, so that the forward
process is x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps. For DPM-Solver (Lu et al. 2022) alpha_t = sqrt(abar_t),
sigma_t = sqrt(1 - abar_t) and lambda_t = log(alpha_t / sigma_t) is the half log-SNR.

Papers:
- DDPM: Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models", https://huggingface.co/papers/2006.11239
- DDIM: Song, Meng, Ermon 2021, "Denoising Diffusion Implicit Models", https://huggingface.co/papers/2010.02502
- DPM-Solver++: Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
  https://huggingface.co/papers/2211.01095
- UniPC: Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models",
  https://huggingface.co/papers/2302.04867 (the default sampler: predictor UniP, corrector UniC at no extra call)
- Calibrated grids (`calibrated_timesteps`, made by `diffusers-simple-calibrate`): Chen et al. 2024, "On the
  Trajectory Regularity of ODE-based Diffusion Sampling" (GITS), https://huggingface.co/papers/2405.11326
"""

import inspect
import math
from dataclasses import dataclass

import diffusers
import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, FrozenDict, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor


SAMPLERS = ("ddpm", "ddim", "dpmsolver++", "unipc")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "linear_rescaled")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")
VARIANCE_TYPES = ("fixed_small", "fixed_large", None)  # None: what DPMSolverMultistepScheduler saves; = fixed_small
FINAL_STEP_TYPES = ("auto", "gaussian", "polynomial")


@dataclass
class SimpleSchedulerOutput(BaseOutput):
    """
    Output class for the scheduler's `step` function.

    Args:
        prev_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)` for images):
            Computed sample `x_{t-1}` of the previous timestep, in the dtype of the input `sample`. Use it as the
            next model input in the denoising loop.
        pred_original_sample (`torch.Tensor` of shape `(batch_size, num_channels, height, width)` for images):
            The predicted denoised sample `x_0` (after clipping or thresholding) from the current timestep, for
            previews or guidance.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


def _check_choice(name, value, choices):
    if value not in choices:
        accepted = ", ".join(repr(c) for c in choices if c is not None)
        raise ValueError(f"Unsupported {name}={value!r}; accepted values are {accepted}.")


def _same_value(a, b) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except (TypeError, ValueError):
        return False


def _check_eta(eta):
    if not 0 <= eta <= 1:
        raise ValueError(f"eta={eta!r} is out of range; accepted values are 0 <= eta <= 1.")


def make_betas(beta_schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """
    The named beta schedules, with the same float32 values as Diffusers' DDPMScheduler.

    Args:
        beta_schedule (`str`):
            One of `"linear"`, `"scaled_linear"`, `"squaredcos_cap_v2"`, `"sigmoid"` or `"linear_rescaled"`.
        num_train_timesteps (`int`):
            The number of betas `T`.
        beta_start (`float`):
            The first beta (unused by `"squaredcos_cap_v2"`).
        beta_end (`float`):
            The last beta (unused by `"squaredcos_cap_v2"`).

    Returns:
        `torch.Tensor`: the `T` betas, float32.
    """
    T = num_train_timesteps
    if beta_schedule == "linear":  # Ho et al. 2020, Sec. 4: linear from 1e-4 to 0.02 over T = 1000
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
    if beta_schedule == "linear_rescaled":
        # The same schedule stretched to any T, as in the DDPM authors' and improved-diffusion's code:
        # beta from beta_start * 1000 / T to beta_end * 1000 / T, so that short chains still end in pure noise.
        scale = 1000 / T
        return torch.linspace(beta_start * scale, beta_end * scale, T, dtype=torch.float32)
    if beta_schedule == "scaled_linear":  # latent diffusion: linear in sqrt(beta)
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float32) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        # Nichol & Dhariwal 2021, eq. 17: abar(t) = cos^2((t / T + s) / (1 + s) * pi / 2), s = 0.008,
        # beta_t = 1 - abar(t + 1) / abar(t), capped at 0.999.
        def abar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)]
        return torch.tensor(betas, dtype=torch.float32)
    # "sigmoid", GeoDiff (Xu et al. 2022)
    return torch.sigmoid(torch.linspace(-6, 6, T)) * (beta_end - beta_start) + beta_start


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """
    Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1: shift and scale
    sqrt(abar) so that the last timestep has zero SNR (abar_T = 0) while the first keeps its value.

    Args:
        betas (`torch.Tensor`): the betas to rescale.

    Returns:
        `torch.Tensor`: the rescaled betas (the last one is 1).
    """
    sqrt_abar = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_abar[0].clone(), sqrt_abar[-1].clone()
    sqrt_abar = (sqrt_abar - last) * (first / (first - last))
    abar = sqrt_abar**2
    alphas = torch.cat([abar[0:1], abar[1:] / abar[:-1]])
    return 1 - alphas


def check_calibrated_timesteps(calibrated_timesteps, num_train_timesteps: int, calibrated_model_timesteps=None):
    """
    Raises a `ValueError` unless `calibrated_timesteps` is `None` or maps `str(N)` to N strictly descending
    timesteps in `[0, num_train_timesteps - 1]`, and `calibrated_model_timesteps` is `None` or such a map for budgets
    that `calibrated_timesteps` holds.

    Args:
        calibrated_timesteps (`dict[str, list[float]]` or `None`): the grids to check.
        num_train_timesteps (`int`): the scheduler's `T`.
        calibrated_model_timesteps (`dict[str, list[float]]`, *optional*): the model timesteps to check.
    """
    T = num_train_timesteps
    for name, grids in (("calibrated_timesteps", calibrated_timesteps),
                        ("calibrated_model_timesteps", calibrated_model_timesteps)):
        if grids is None:
            continue
        if not isinstance(grids, dict):
            raise ValueError(
                f"{name}={grids!r} must be a dict mapping a number of model calls (as a string, e.g. '5') to that "
                "many timesteps."
            )
        for key, grid in grids.items():
            values = np.asarray(grid, dtype=np.float64) if isinstance(grid, (list, tuple)) else None
            if (
                not str(key).isdigit()
                or values is None
                or values.ndim != 1
                or len(values) != int(key)
                or not np.all(np.isfinite(values))
                or not np.all(np.diff(values) < 0)
                or values.min() < 0
                or values.max() > T - 1
            ):
                raise ValueError(
                    f"{name}[{key!r}] = {grid!r} does not fit this scheduler: each entry must map N (a positive "
                    f"integer, as a string) to N strictly decreasing timesteps in [0, {T - 1}] "
                    f"(num_train_timesteps={T})."
                )
    unmatched = sorted(set(calibrated_model_timesteps or {}) - set(calibrated_timesteps or {}), key=int)
    if unmatched:
        raise ValueError(
            f"calibrated_model_timesteps has budgets {unmatched} without a grid in calibrated_timesteps "
            f"(budgets {sorted(calibrated_timesteps or {}, key=int)}): model timesteps shift the calls of a "
            "calibrated grid and need one."
        )


class SimpleScheduler(SchedulerMixin, ConfigMixin):
    """
    `SimpleScheduler` holds the DDPM forward process (`add_noise`) and four samplers that reverse it: ancestral DDPM
    sampling, DDIM, multistep DPM-Solver++ and (the default) UniPC with its corrector. `num_inference_steps` is exactly
    the number of model calls; the ODE samplers end on the clean sample without a call at t = 0 (except where
    `"dpmsolver++"` reproduces `DPMSolverMultistepScheduler`'s own grids, e.g. `use_lu_lambdas=True`). The config keys mean the same as in [`DDPMScheduler`],
    [`DDIMScheduler`] and [`DPMSolverMultistepScheduler`], so `from_config` works in both directions and keeps the
    noise schedule. Unlike `DDIMScheduler`, the previous timestep is always read from the actual timestep sequence
    (correct for every `timestep_spacing`).

    This model inherits from [`SchedulerMixin`] and [`ConfigMixin`]. Check the superclass documentation for the generic
    methods the library implements for all schedulers such as loading and saving.

    Args:
        num_train_timesteps (`int`, defaults to 1000):
            The number of diffusion steps `T` used to train the model.
        beta_start (`float`, defaults to 0.0001):
            The first `beta` of the schedule.
        beta_end (`float`, defaults to 0.02):
            The last `beta` of the schedule.
        beta_schedule (`str`, defaults to `"linear"`):
            `"linear"`, `"scaled_linear"`, `"squaredcos_cap_v2"`, `"sigmoid"`, or `"linear_rescaled"`: the original
            DDPM schedule for any `T`, linear from `beta_start * 1000 / T` to `beta_end * 1000 / T`. With
            `"linear_rescaled"` the computed betas are also written to the config as `trained_betas` (which then take
            precedence when the config is loaded), so that Diffusers' schedulers built with `from_config` reproduce
            them exactly.
        trained_betas (`np.ndarray` or `list[float]`, *optional*):
            Betas to use directly instead of `beta_schedule`; must have `num_train_timesteps` entries.
        sampler (`str`, defaults to `"unipc"`):
            The reverse process used by `step`: `"ddpm"` (ancestral sampling, Ho et al. 2020), `"ddim"` (Song et al.
            2021, stochasticity set by `eta`), `"dpmsolver++"` (multistep DPM-Solver++, Lu et al. 2022, the same
            timesteps and samples as `DPMSolverMultistepScheduler(algorithm_type="dpmsolver++")` with this config) or
            `"unipc"` (UniPC bh2 with the UniC corrector, Zhao et al. 2023, on fractional timesteps of a warped
            log-SNR grid; the most accurate at 3-20 model calls, see benchmarks/results/sampler_accuracy.md).
        variance_type (`str`, defaults to `"fixed_small"`):
            Noise variance of the `"ddpm"` sampler: `"fixed_small"` (the posterior variance beta_tilde_t) or
            `"fixed_large"` (beta_t). `None`, as saved by `DPMSolverMultistepScheduler`, means `"fixed_small"`.
        eta (`float`, defaults to 0.0):
            Weight of the noise of the `"ddim"` sampler, in [0, 1]: 0 is deterministic DDIM, 1 matches DDPM's
            `"fixed_small"` posterior. `step(..., eta=...)` overrides it per call.
        solver_order (`int`, defaults to 2):
            Order of the `"dpmsolver++"` sampler (1: DDIM with `eta=0`, 2 or 3) and of the `"unipc"` predictor (the
            corrector adds one). 2, as in Diffusers' multistep schedulers: with `"unipc"` it is the more robust choice
            at 3-10 model calls (order 3 wins at 5 calls but loses at 6 and 8; benchmarks/results/sampler_accuracy.md).
        lower_order_final (`bool`, defaults to `True`):
            For `"dpmsolver++"` with fewer than 15 steps, use first order on the last step and at most second order
            on the one before it, which stabilises few-step sampling (as in `DPMSolverMultistepScheduler`).
        prediction_type (`str`, defaults to `"epsilon"`):
            What the model predicts: `"epsilon"` (the noise), `"v_prediction"` (v = alpha_t eps - sigma_t x_0, see
            section 2.4 of [Imagen Video](https://huggingface.co/papers/2210.02303)) or `"sample"` (x_0).
        clip_sample (`bool`, defaults to `False`):
            Clip the predicted `x_0` to `[-clip_sample_range, clip_sample_range]`.
        clip_sample_range (`float`, defaults to 1.0):
            The maximum magnitude for sample clipping. Valid only when `clip_sample=True`.
        thresholding (`bool`, defaults to `False`):
            Whether to use "dynamic thresholding" (Imagen) on the predicted `x_0`; takes precedence over
            `clip_sample`. Unsuitable for latent-space models.
        dynamic_thresholding_ratio (`float`, defaults to 0.995):
            The percentile of `|x_0|` used as threshold. Valid only when `thresholding=True`.
        sample_max_value (`float`, defaults to 1.0):
            The largest threshold allowed. Valid only when `thresholding=True`.
        timestep_spacing (`str`, defaults to `"trailing"`):
            How `set_timesteps` picks `num_inference_steps` of the `T` train timesteps: `"linspace"`, `"leading"` or
            `"trailing"` as defined by `DDPMScheduler` (Table 2 of [Common Diffusion Noise Schedules and Sample Steps
            are Flawed](https://huggingface.co/papers/2305.08891)). The `"dpmsolver++"` sampler uses it only with
            `use_lu_lambdas=False`.
        use_lu_lambdas (`bool`, defaults to `True`):
            For `sampler="dpmsolver++"` only (the same key and meaning as in `DPMSolverMultistepScheduler`): steps
            uniform in log-SNR lambda_t = log(alpha_t / sigma_t) (Lu et al. 2022), the model called at the rounded
            timesteps (repeats kept) and the solver stepping with the unrounded ones, as Diffusers does.
        steps_offset (`int`, defaults to 0):
            An offset added to the `"leading"` timesteps, as required by some model families.
        rescale_betas_zero_snr (`bool`, defaults to `False`):
            Rescale the betas to have zero terminal SNR (Lin et al. 2024), so samples can be very bright or dark.
            Use it with `prediction_type="v_prediction"`: at zero SNR an epsilon prediction does not determine x_0.
        set_alpha_to_one (`bool`, defaults to `True`):
            Where the last step goes: to `abar = 1` (the clean sample; DDPM, DDIM's default and
            DPMSolverMultistep's `final_sigmas_type="zero"`) or, if `False`, to the noise level of train timestep 0
            (DDIM's `set_alpha_to_one=False`, DPMSolverMultistep's `final_sigmas_type="sigma_min"`).
        use_corrector (`bool`, defaults to `True`):
            For `"unipc"`: apply UniC after each model call (one order more accuracy, no extra call).
        last_lambda (`float`, defaults to 2.5):
            For `"unipc"`: the half log-SNR lambda = log(alpha / sigma) of the last model call for up to
            `last_lambda_growth_start` model calls (capped at that of train timestep 1); the last step then lands on
            the clean sample.
        last_lambda_growth (`float`, defaults to 0.15):
            For `"unipc"`: above `last_lambda_growth_start` model calls the last call's lambda rises by this much per
            extra call, so that longer runs end closer to the data, as far as the train timesteps allow (0 keeps
            `last_lambda` for every n).
        last_lambda_growth_start (`int`, defaults to 6):
            For `"unipc"`: the number of model calls above which `last_lambda_growth` applies.
        lambda_spacing_power (`float`, defaults to 0.6):
            For `"unipc"`: lambda_i = lambda_{T-1} + (last_lambda - lambda_{T-1}) (i / m)^p, i = 0..m (m = n, or
            n - 1 without `analytic_first_step`); 1 is log-SNR-uniform, smaller values take a longer first step and
            spend more calls at low noise.
        analytic_first_step (`bool`, defaults to `True`):
            For `"unipc"` grids made by `set_timesteps(num_inference_steps)` (the warped log-SNR grid, or a calibrated
            grid that starts below `T - 1`): no model call at `t = T - 1`. There the noise prediction is the noise
            itself to within sqrt(abar_{T-1}) (0.006 for the DDPM schedule), so the step from `T - 1` to the first
            grid point is taken analytically with eps = x_T (the "analytic first step" of Zhou et al. 2024, "Fast
            ODE-based Sampling for Diffusion Models in Around 5 Steps", https://huggingface.co/papers/2312.00094),
            and all `n` calls go to lower noise. Generation starts from `randn * init_noise_sigma`, the result of
            that step; after the first call the step is redone with that call's x_0 prediction (no extra call).
            Pipelines that start from a noised image rather than pure noise call `set_begin_index`, which skips that
            redo.
        final_step_order (`int`, defaults to 3):
            For `"unipc"` with `final_step_type` `"polynomial"` (or `"auto"` where it falls back to it): the order of
            the last step, from the last model call to the clean sample (`sigma = 0`).
            An exponential integrator can take that step only at first order (its log-SNR step is infinite), which
            returns the last x_0 prediction, as `final_step_order=1` does here and Diffusers' multistep schedulers do
            (`lower_order_final`); it shrinks a mode of width w toward its mean by w^2 / (w^2 + s_last^2). With k = 2
            or 3 the step integrates the ODE in EDM's variables, dy/ds = eps with y = x / alpha and s = sigma /
            alpha (Karras et al. 2022, eq. 4), over [0, s_last] with the polynomial through the noise predictions of
            the last k calls: the variable-step Adams-Bashforth step of iPNDM (Zhang & Chen 2023, DEIS; Zhou et al.
            2024). It starts from the sample of the last call, where the last prediction was made (not from its
            UniC correction).
        final_step_type (`str`, defaults to `"auto"`):
            For `"unipc"`: how the last step to the clean sample is taken. `"polynomial"`: the step of
            `final_step_order`. `"gaussian"`: the ODE solved in closed form as if each sample sat in an isotropic
            Gaussian mode N(mu, w^2 I). There y - mu grows like a = sqrt(w^2 + s^2) along the path and eps = s (y -
            mu) / a^2, so y_0 = y_last - s_last eps_last a_last / (a_last + w) (the flow of a Gaussian score, as in
            Wang & Vastola 2024, "The Unreasonable Effectiveness of Gaussian Score Approximation for Diffusion Models",
            https://huggingface.co/papers/2311.10892). Each sample's mode is fitted to its last two calls: in a
            Gaussian mode the x_0 prediction is mu + w^2 eps / s at every point (Tweedie's formula), so the change of
            the x_0 prediction between the two calls is w^2 times the change of eps / s, which gives w^2 by least
            squares wherever the samples were. It keeps sharp modes at their width where the polynomial step pulls
            them toward their means, but image data are not locally isotropic, and there it is worse. `"auto"`: per
            sample, the Gaussian step where that fit is consistent (its residual, relative to the distance between
            the two samples, at most `final_step_tolerance`, and w <= 30 s_last), the polynomial step elsewhere (and
            after a single call, the x_0 prediction). The residual is 0 up to rounding in an isotropic Gaussian mode
            and was 0.11 or more on every sample of the trained image models of `benchmarks/`, which therefore take
            the polynomial step.
        final_step_tolerance (`float`, defaults to 0.01):
            For `final_step_type="auto"`: the largest residual of the two-call Gaussian fit, relative to the distance
            between the two samples, at which a sample is taken as sitting in an isotropic Gaussian mode.
        calibrated_timesteps (`dict[str, list[float]]`, *optional*):
            Per-model grids for the ODE samplers, `{"N": [N strictly decreasing timesteps]}`, used by
            `set_timesteps(N)`; made by `diffusers_simple_training.calibrate` (`diffusers-simple-calibrate`).
        calibrated_model_timesteps (`dict[str, list[float]]`, *optional*):
            For budgets N of `calibrated_timesteps`: the N strictly decreasing timesteps at which the model is called,
            when they differ from the grid the solver steps on (calibrated time shifts: the model at call i is
            given t_i' = t_i e^{delta_i} while the sample is at t_i, the shifted timesteps of Li et al. 2024,
            "Alleviating Exposure Bias in Diffusion Models through Sampling with Shifted Time Steps",
            https://huggingface.co/papers/2305.15583, fitted per model by `diffusers-simple-calibrate
            --shift_evaluations`). `set_timesteps(N)` then makes `timesteps` these model timesteps and
            `solver_timesteps` the grid.
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1  # one model evaluation per step, also for multistep DPM-Solver++ (as in DPMSolverMultistepScheduler)

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        sampler: str = "unipc",
        variance_type: str | None = "fixed_small",
        eta: float = 0.0,
        solver_order: int = 2,
        lower_order_final: bool = True,
        prediction_type: str = "epsilon",
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "trailing",
        use_lu_lambdas: bool = True,
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
        set_alpha_to_one: bool = True,
        use_corrector: bool = True,
        last_lambda: float = 2.5,
        last_lambda_growth: float = 0.15,
        last_lambda_growth_start: int = 6,
        lambda_spacing_power: float = 0.6,
        calibrated_timesteps: dict[str, list[float]] | None = None,
        analytic_first_step: bool = True,
        final_step_order: int = 3,
        calibrated_model_timesteps: dict[str, list[float]] | None = None,
        final_step_type: str = "auto",
        final_step_tolerance: float = 0.01,
    ):
        _check_choice("sampler", sampler, SAMPLERS)
        _check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
        _check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        _check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        _check_choice("variance_type", variance_type, VARIANCE_TYPES)
        _check_choice("solver_order", solver_order, (1, 2, 3))
        _check_choice("final_step_order", final_step_order, (1, 2, 3))
        _check_choice("final_step_type", final_step_type, FINAL_STEP_TYPES)
        _check_eta(eta)
        for name, value in [("beta_start", beta_start), ("beta_end", beta_end), ("clip_sample_range", clip_sample_range),
                            ("last_lambda", last_lambda), ("last_lambda_growth", last_lambda_growth),
                            ("lambda_spacing_power", lambda_spacing_power),
                            ("final_step_tolerance", final_step_tolerance),
                            ("dynamic_thresholding_ratio", dynamic_thresholding_ratio),
                            ("sample_max_value", sample_max_value)]:
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"{name}={value!r} is not a finite number; pass a finite float.")
        if not (isinstance(num_train_timesteps, int) and num_train_timesteps >= 1):
            raise ValueError(f"num_train_timesteps={num_train_timesteps!r} must be a positive integer.")
        if not isinstance(analytic_first_step, bool):
            raise ValueError(f"analytic_first_step={analytic_first_step!r} must be True or False.")
        if final_step_tolerance < 0:
            raise ValueError(
                f"final_step_tolerance={final_step_tolerance!r} must be >= 0 (0: always the polynomial step)."
            )
        if lambda_spacing_power <= 0:
            raise ValueError(f"lambda_spacing_power={lambda_spacing_power!r} must be > 0 (1 = log-SNR-uniform).")
        if isinstance(last_lambda_growth_start, bool) or not isinstance(last_lambda_growth_start, int) or last_lambda_growth_start < 1:
            raise ValueError(f"last_lambda_growth_start={last_lambda_growth_start!r} must be a positive integer (a number "
                             "of model calls).")
        if last_lambda_growth < 0:
            raise ValueError(f"last_lambda_growth={last_lambda_growth!r} must be >= 0 (0 keeps last_lambda for every n).")
        if rescale_betas_zero_snr and prediction_type == "epsilon":
            # At zero terminal SNR, x_0 = (x_T - sqrt(1 - abar_T) eps) / sqrt(abar_T) divides by 0 at t = T - 1.
            # Diffusers' DDPM and DDIM schedulers return NaN there; its DPM-Solver, UniPC and Euler schedulers clamp
            # abar_T to 2**-24, which multiplies the error of eps by 4096. Both are refused here.
            raise ValueError(
                "rescale_betas_zero_snr=True with prediction_type='epsilon' is refused: at zero terminal SNR an "
                "epsilon prediction does not determine x_0 at t = num_train_timesteps - 1 (division by "
                "sqrt(abar_T) = 0, NaN samples). Use prediction_type='v_prediction' or 'sample' with zero terminal "
                "SNR (Lin et al. 2024), or rescale_betas_zero_snr=False; SimpleScheduler does not clamp abar_T."
            )

        if trained_betas is not None:
            betas = torch.tensor(np.asarray(trained_betas, dtype=np.float64), dtype=torch.float32)
        else:
            betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end)
            if beta_schedule == "linear_rescaled":
                # Diffusers' schedulers do not know this schedule but all accept `trained_betas`
                self.register_to_config(trained_betas=betas.tolist())
        if betas.shape != (num_train_timesteps,):
            raise ValueError(
                f"trained_betas has {betas.numel()} values but num_train_timesteps={num_train_timesteps}; "
                "pass exactly one beta per train timestep."
            )
        if not bool(((betas > 0) & (betas < 1)).all()):  # also False for NaN
            source = "trained_betas" if trained_betas is not None else (
                f"beta_schedule={beta_schedule!r} with beta_start={beta_start}, beta_end={beta_end} and "
                f"num_train_timesteps={num_train_timesteps}"
            )
            bad = betas[~((betas > 0) & (betas < 1))]
            raise ValueError(
                f"{source} gives betas outside (0, 1): {bad[:5].tolist()} (min {betas.min().item():.4g}, max "
                f"{betas.max().item():.4g}). Every beta must satisfy 0 < beta < 1: beta >= 1 makes abar_t = 0 "
                "(NaN samples), beta <= 0 or a non-finite beta is not a noising step."
            )
        if rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)

        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)  # abar_t, float32, kept on the CPU
        # abar after the last step: 1 (the clean sample) or abar_0
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]

        self.init_noise_sigma = 1.0  # x_T ~ N(0, I); set_timesteps changes it with `analytic_first_step`
        check_calibrated_timesteps(calibrated_timesteps, num_train_timesteps, calibrated_model_timesteps)

        # set by `set_timesteps`
        self.num_inference_steps = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)
        self.solver_timesteps = self.timesteps
        self._reset_history()

    # Keys whose default here differs from Diffusers' schedulers' defaults, and trained_betas: `from_config` always
    # passes them on, so that a Diffusers scheduler made from this config agrees.
    _carried_keys = ("clip_sample", "timestep_spacing", "use_lu_lambdas", "trained_betas", "solver_order")

    def register_to_config(self, **kwargs):
        super().register_to_config(**kwargs)
        self._normalize_hidden_config()

    def _normalize_hidden_config(self):
        # `from_config` drops the keys listed in `_use_default_values`. Derive that list from the values (the keys at
        # their default here, except the carried ones) rather than from how this object was made, and always hold
        # `_class_name` and `_diffusers_version` (which saving writes in place), so that `config` is the same after
        # `from_config(config)` and after `save_pretrained` + `from_pretrained`.
        defaults = {
            name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items() if name != "self"
        }
        internal = dict(self._internal_dict)
        internal["_use_default_values"] = sorted(
            k for k, default in defaults.items()
            if k not in self._carried_keys and k in internal and _same_value(internal[k], default)
        )
        internal["_class_name"], internal["_diffusers_version"] = type(self).__name__, diffusers.__version__
        self._internal_dict = FrozenDict(internal)

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """
        Ensures interchangeability with schedulers that need to scale the denoising model input depending on the
        current timestep; this one does not (`init_noise_sigma` is 1).

        Args:
            sample (`torch.Tensor`):
                The input sample.
            timestep (`int`, *optional*):
                The current timestep in the diffusion chain.

        Returns:
            `torch.Tensor`: the unchanged sample.
        """
        return sample

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | list[float] | None = None,
    ):
        """
        Sets the timesteps of the diffusion chain (to be run before inference) and resets the multistep state.
        `num_inference_steps` is exactly the number of model calls `step` then expects.

        Args:
            num_inference_steps (`int`, *optional*):
                The number of denoising steps (= model calls), from 1 to `num_train_timesteps`. The timesteps are
                `calibrated_timesteps[str(num_inference_steps)]` when the config holds such a grid (ODE samplers),
                otherwise: for `"unipc"` the warped log-SNR grid of `last_lambda` and `lambda_spacing_power`
                (fractional timesteps); for `"dpmsolver++"` exactly those of `DPMSolverMultistepScheduler` for
                `timestep_spacing` / `use_lu_lambdas`; for `"ddpm"` and `"ddim"` those of `DDPMScheduler` /
                `DDIMScheduler` for `timestep_spacing`. Exactly one of `num_inference_steps` and `timesteps` must be
                given.
            device (`str` or `torch.device`, *optional*):
                The device to move `self.timesteps` to. If `None`, the timesteps stay on the CPU.
            timesteps (`list[int]` or `list[float]`, *optional*):
                Custom timesteps: strictly descending numbers in `[0, num_train_timesteps - 1]`, integers for
                `"ddpm"` and `"ddim"`; each is one model call (no analytic first step).

        With `analytic_first_step` and a `"unipc"` grid below `T - 1`, `analytic_first_step_active` is `True` and
        `init_noise_sigma` is the scale of the sample at `self.timesteps[0]`; otherwise they are `False` and 1.

        `self.timesteps` are the timesteps the model is called at, `self.solver_timesteps` those the sample is at when
        it is called: the same tensor, except for a budget N with `calibrated_model_timesteps[str(N)]`.
        """
        T = self.config.num_train_timesteps
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError(
                f"Pass exactly one of `num_inference_steps` (got {num_inference_steps!r}) or `timesteps` "
                f"(got {timesteps!r})."
            )
        sigmas = None  # VE noise levels sigma = sqrt((1 - abar) / abar) of the grid, when they are not abar[t]
        model_timesteps = None  # where the model is called, when not at the grid (calibrated_model_timesteps)
        if timesteps is None:
            if not (isinstance(num_inference_steps, (int, np.integer)) and 1 <= num_inference_steps <= T):
                raise ValueError(
                    f"num_inference_steps={num_inference_steps!r} is out of range; accepted values are 1 to "
                    f"num_train_timesteps={T}."
                )
            n = int(num_inference_steps)
            calibrated = (self.config.calibrated_timesteps or {}).get(str(n))
            if calibrated is not None and self._is_ode_sampler():
                timesteps, source = np.array(calibrated, dtype=np.float64), f"calibrated_timesteps[{str(n)!r}]"
                model_timesteps = (self.config.calibrated_model_timesteps or {}).get(str(n))
            elif self.config.sampler == "unipc":
                timesteps, source = self._warped_log_snr_timesteps(n), "last_lambda / lambda_spacing_power"
            elif self.config.sampler == "dpmsolver++":
                timesteps, sigmas = self._dpm_solver_timesteps(n)
                source = (
                    "use_lu_lambdas=True" if self.config.use_lu_lambdas
                    else f"timestep_spacing={self.config.timestep_spacing!r}, steps_offset={self.config.steps_offset}"
                )
            else:
                timesteps = self._spaced_timesteps(n)
                source = f"timestep_spacing={self.config.timestep_spacing!r}, steps_offset={self.config.steps_offset}"
        else:
            source = "custom timesteps"
        timesteps = np.array(timesteps.cpu().numpy() if isinstance(timesteps, torch.Tensor) else timesteps)
        fractional_ok = self._is_ode_sampler() and source != "use_lu_lambdas=True"
        # DPMSolverMultistepScheduler's own grids may repeat a timestep at large n (it steps by a counter, as here)
        strict = sigmas is None and not (self.config.sampler == "dpmsolver++" and source.startswith("timestep_spacing"))
        self._check_grid(timesteps, source, integers=not fractional_ok, strict=strict)

        integral = bool(np.all(np.round(timesteps) == timesteps)) and sigmas is None
        if integral or not fractional_ok:  # integer timesteps (also DPMSolverMultistep's rounded log-SNR ones)
            self.timesteps = torch.from_numpy(timesteps.astype(np.int64)).to(device)
        else:  # fractional timesteps: the model is called at noise levels between train timesteps
            self.timesteps = torch.from_numpy(timesteps.astype(np.float32)).to(device)
        self.solver_timesteps = self.timesteps
        if model_timesteps is not None:  # the model is called at t_i', the sample is at t_i (the solver's grid)
            model_timesteps = np.array(model_timesteps, dtype=np.float32)
            self._check_grid(model_timesteps, f"calibrated_model_timesteps[{str(n)!r}] in float32", integers=False)
            self.timesteps = torch.from_numpy(model_timesteps).to(device)
        # (alpha, sigma) at each grid point and after the last step, float64: x_t = alpha x_0 + sigma eps
        if sigmas is None:
            abar = np.append(self._abar_at(timesteps), float(self.final_alpha_cumprod))
            self._alphas, self._sigmas = np.sqrt(abar), np.sqrt(1 - abar)
        else:  # DPMSolverMultistepScheduler's float32 sigmas: alpha = 1 / sqrt(1 + sigma^2), sigma_t = sigma alpha
            sigmas = sigmas.astype(np.float64)
            self._alphas = 1 / np.sqrt(1 + sigmas**2)
            self._sigmas = sigmas * self._alphas
        with np.errstate(divide="ignore"):
            self._lambdas = np.log(self._alphas) - np.log(self._sigmas)  # +inf at the clean sample
        self.num_inference_steps = len(timesteps)
        # analytic first step: (alpha, sigma) at t = T - 1, where sampling starts without a model call
        self._analytic_start, self.init_noise_sigma, self.analytic_first_step_active = None, 1.0, False
        if self.config.analytic_first_step and self.config.sampler == "unipc" and source != "custom timesteps" \
                and timesteps[0] < T - 1:
            abar_start = float(self._abar_at(np.array([T - 1.0]))[0])
            alpha_s, sigma_s = math.sqrt(abar_start), math.sqrt(1 - abar_start)
            self._analytic_start, self.analytic_first_step_active = (alpha_s, sigma_s), True
            # DDIM from T - 1 with eps = x_T: x_0 = (1 - sigma_s) / alpha_s x_T = alpha_s / (1 + sigma_s) x_T, so
            # x_{t_0} = alpha_0 x_0 + sigma_0 x_T = init_noise_sigma x_T
            self.init_noise_sigma = float(self._sigmas[0] + self._alphas[0] * alpha_s / (1 + sigma_s))
        self._begin_index = None
        self._reset_history()

    def set_begin_index(self, begin_index: int = 0):
        """
        Marks a sampling loop that starts at `self.timesteps[begin_index]` from a noised sample rather than from
        pure noise (img2img, RePaint), as in Diffusers' multistep schedulers. Run it after `set_timesteps`. With
        `analytic_first_step`, a loop that starts at index 0 then skips the redo of the analytic first step (its
        sample already holds the signal).

        Args:
            begin_index (`int`, defaults to 0):
                The index of the first timestep the loop steps from.
        """
        self._begin_index = int(begin_index)

    def _check_grid(self, timesteps: np.ndarray, source: str, integers: bool, strict: bool = True):
        T = self.config.num_train_timesteps
        if (
            timesteps.ndim != 1
            or timesteps.size == 0
            or not np.all(np.isfinite(timesteps))
            or (integers and not np.all(np.round(timesteps) == timesteps))
            or not np.all(np.diff(timesteps) < 0 if strict else np.diff(timesteps) <= 0)
            or timesteps.min() < 0
            or timesteps.max() > T - 1
        ):
            kind = "integers" if integers else "numbers"
            raise ValueError(
                f"Invalid timesteps {timesteps.tolist()} ({source}): they must be strictly descending {kind} in "
                f"[0, {T - 1}] (num_train_timesteps={T})."
            )

    def _is_ode_sampler(self) -> bool:
        return self.config.sampler in ("unipc", "dpmsolver++")

    def _reset_history(self):
        # multistep state: x_0 predictions of the latest steps (oldest first), the index of the step that continues
        # them, and for UniC the sample before the last step and that step's order
        self.model_outputs = []
        self._step_index = None
        self._last_sample, self._last_order = None, None
        self._final_history = []  # (s = sigma / alpha, eps, x, alpha, x_0) of the last calls, for the last step

    def _log_sigmas(self) -> np.ndarray:
        # log of the VE noise level sigma_t = sqrt((1 - abar_t) / abar_t), increasing in t (inf at zero SNR)
        abar = self.alphas_cumprod.double().numpy()
        with np.errstate(divide="ignore"):
            return 0.5 * (np.log1p(-abar) - np.log(abar))

    def _abar_at(self, timesteps: np.ndarray) -> np.ndarray:
        """abar at (possibly fractional) train timesteps: log sigma interpolated linearly between train timesteps, the
        inverse of Diffusers' `_sigma_to_t`; exactly `alphas_cumprod[t]` at integers."""
        timesteps = np.asarray(timesteps, dtype=np.float64)
        table = self.alphas_cumprod.double().numpy()
        low = np.clip(np.floor(timesteps).astype(np.int64), 0, len(table) - 1)
        high = np.clip(low + 1, 0, len(table) - 1)
        w = timesteps - low
        log_sigmas = self._log_sigmas()
        with np.errstate(invalid="ignore"):
            log_sigma = (1 - w) * log_sigmas[low] + w * log_sigmas[high]
        abar = 1 / (1 + np.exp(2 * log_sigma))
        return np.where(w == 0, table[low], abar)

    def _timesteps_of_lambdas(self, lambdas: np.ndarray) -> np.ndarray:
        # the inverse of `_abar_at`: fractional train timesteps with half log-SNR lambda = -log sigma
        log_sigmas = self._log_sigmas()
        T = len(log_sigmas)
        finite = np.isfinite(log_sigmas)
        return np.interp(-lambdas, log_sigmas[finite], np.arange(T)[finite])

    def _warped_log_snr_timesteps(self, n: int) -> np.ndarray:
        # The "unipc" default grid: points at half log-SNRs lambda_i = lambda_start + (lambda_end - lambda_start) (i / m)^p,
        # i = 0..m, the first at t = T - 1 (m = n with the analytic first step, which drops that point from the model
        # calls; m = n - 1 without), p = lambda_spacing_power and lambda_end
        # = last_lambda + last_lambda_growth * max(0, n - last_lambda_growth_start) (capped at lambda_1, and never t = 0
        # unless n = T). p = 1 is log-SNR-uniform (Lu et al. 2022); p < 1 moves every lambda_i toward lambda_end: a
        # longer first step and more calls at low noise, where modes separate and sharpen. Up to 6 calls, stopping at
        # lambda = 2.5 and taking the last step to the clean sample at third order (`final_step_order`) beats spending
        # a call closer to the data; with more calls, ending closer to the data pays (+0.15 per call, lambda_1 from
        # about 18 calls on). Chosen by measurement on the exact mixtures of benchmarks/results/sampler_accuracy.md and
        # on trained models (sampler_quality_trained*.md).
        T = self.config.num_train_timesteps
        log_sigmas = self._log_sigmas()
        lambda_start = -min(log_sigmas[-1], 0.5 * math.log(2.0**24))  # zero terminal SNR: abar floored at 2**-24
        growth_calls = max(0, n - self.config.last_lambda_growth_start)
        last_lambda = self.config.last_lambda + self.config.last_lambda_growth * growth_calls
        lambda_end = min(last_lambda, -log_sigmas[min(1, T - 1)])
        points = n + 1 if self.config.analytic_first_step else n  # the first, t = T - 1, then without a model call
        ramp = np.linspace(0, 1, points) ** self.config.lambda_spacing_power
        t = self._timesteps_of_lambdas(lambda_start + (lambda_end - lambda_start) * ramp)
        t[0] = T - 1
        if points > 1 and not np.all(np.diff(t) < 0):  # more points than distinct log-SNRs: uniform in t, all called
            return np.linspace(T - 1, 0, n) if n == T else np.linspace(T - 1, min(t[-1], 1.0), n)
        return t[points - n :]

    def _spaced_timesteps(self, n: int) -> np.ndarray:
        # "ddpm" and "ddim": "linspace", "leading", "trailing" (Lin et al. 2024, Table 2, DDPMScheduler's definitions)
        T = self.config.num_train_timesteps
        if self.config.timestep_spacing == "linspace":
            return np.linspace(0, T - 1, n).round()[::-1].astype(np.int64)
        if self.config.timestep_spacing == "leading":
            return (np.arange(n) * (T // n))[::-1] + self.config.steps_offset
        return np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1  # "trailing"

    def _dpm_solver_timesteps(self, n: int):
        # DPMSolverMultistepScheduler.set_timesteps (lambda_min_clipped = -inf): n timesteps from a grid of n + 1 for
        # "linspace" / "leading" (the t = 0 point is dropped, never evaluated), the float32 sigmas it steps with.
        T = self.config.num_train_timesteps
        abar = self.alphas_cumprod.clamp(min=2.0**-24)  # DPMSolverMultistep's zero terminal SNR
        sigmas = (((1 - abar) / abar) ** 0.5).numpy()  # float32, as Diffusers (np.array of the same tensor)
        if self.config.use_lu_lambdas:
            # Lu et al. 2022: n steps uniform in log sigma = -lambda from sigma_{T-1} to sigma_0, model called at the
            # rounded timesteps (duplicates kept: n calls), solver stepping with the unrounded sigmas
            log_sigmas = np.log(sigmas)
            sigmas = np.exp(np.linspace(log_sigmas[-1], log_sigmas[0], n))
            timesteps = np.interp(np.log(sigmas), log_sigmas, np.arange(T))
            if self.config.beta_schedule != "squaredcos_cap_v2":
                timesteps = timesteps.round()
            timesteps = timesteps.astype(np.int64)
            if self.alphas_cumprod[-1] == 0:  # zero terminal SNR: start from the exact point alpha = 0
                sigmas[0] = np.inf
            return timesteps, self._append_final_sigma(sigmas)
        if self.config.timestep_spacing == "linspace":
            timesteps = np.linspace(0, T - 1, n + 1).round()[::-1][:-1].astype(np.int64)
        elif self.config.timestep_spacing == "leading":
            timesteps = (np.arange(0, n + 1) * (T // (n + 1))).round()[::-1][:-1].astype(np.int64)
            timesteps = timesteps + self.config.steps_offset
        else:
            timesteps = np.arange(T, 0, -T / n).round().astype(np.int64) - 1
        return timesteps, None

    def _append_final_sigma(self, sigmas: np.ndarray) -> np.ndarray:
        sigma_last = 0.0 if self.config.set_alpha_to_one else float(((1 - self.alphas_cumprod[0]) / self.alphas_cumprod[0]) ** 0.5)
        return np.append(sigmas, sigma_last).astype(np.float32)

    def index_for_timestep(self, timestep: int | float | torch.Tensor) -> int:
        """
        The position of `timestep` in `self.timesteps` (the second one of repeated timesteps, as in Diffusers, so that
        a sampling loop that starts there does not skip a step).

        Args:
            timestep (`int`, `float` or `torch.Tensor`): a timestep of the current schedule.

        Returns:
            `int`: its index.
        """
        matches = (self.timesteps.cpu() == torch.as_tensor(timestep).cpu().to(self.timesteps.dtype)).nonzero()
        if len(matches) == 0:
            raise ValueError(
                f"timestep={timestep.item() if isinstance(timestep, torch.Tensor) else timestep} is not in the current "
                f"schedule {self.timesteps.tolist()}; step with the timesteps set by `set_timesteps`."
            )
        return int(matches[1] if len(matches) > 1 else matches[0])

    def _current_index(self, timestep) -> int:
        # The step continues the multistep history when it is at the expected timestep; any other timestep (a new
        # sampling loop, or an img2img start mid-schedule) starts a new history there.
        i = self._step_index
        if i is not None and i < len(self.timesteps) and bool(self.timesteps[i].cpu() == torch.as_tensor(timestep).cpu()):
            return i
        self._reset_history()
        return self.index_for_timestep(timestep)

    def previous_timestep(self, timestep: int | float | torch.Tensor) -> int | float:
        """
        The timestep that `step` goes to from `timestep`: the next entry of `self.solver_timesteps` (the noise level of
        the sample it returns), or -1 after the last.

        Args:
            timestep (`int`, `float` or `torch.Tensor`): a timestep of the current schedule.

        Returns:
            `int` or `float`: the previous timestep, -1 meaning "after the last step" (`abar = final_alpha_cumprod`).
        """
        return self._timestep_after(self.index_for_timestep(timestep))

    def _timestep_after(self, index: int):
        return self.solver_timesteps[index + 1].item() if index + 1 < len(self.solver_timesteps) else -1

    def _abar(self, t: int) -> torch.Tensor:
        return self.alphas_cumprod[t] if t >= 0 else self.final_alpha_cumprod

    def _predict_x0_and_eps(self, model_output, sample, alpha, sigma):
        # x_t = alpha_t x_0 + sigma_t eps (alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t)), v = alpha_t eps - sigma_t x_0
        if self.config.prediction_type == "epsilon":  # Ho et al. eq. 15
            eps = model_output
            x0 = (sample - sigma * eps) / alpha if isinstance(alpha, torch.Tensor) else torch.add(
                sample, eps, alpha=-sigma).mul_(1 / alpha)
        elif self.config.prediction_type == "v_prediction":
            x0 = alpha * sample - sigma * model_output
            eps = alpha * model_output + sigma * sample
        else:  # "sample"
            x0 = model_output
            eps = (sample - alpha * x0) / sigma
        return x0, eps

    def _clip_or_threshold(self, x0: torch.Tensor) -> torch.Tensor:
        if self.config.thresholding:
            # Dynamic thresholding (Saharia et al. 2022, Imagen): s = a high percentile of |x_0| per sample, at least
            # 1 and at most sample_max_value; clip x_0 to [-s, s] and divide by s.
            s = torch.quantile(x0.reshape(x0.shape[0], -1).abs(), self.config.dynamic_thresholding_ratio, dim=1)
            s = s.clamp(min=1, max=self.config.sample_max_value).reshape(-1, *[1] * (x0.ndim - 1))
            return torch.clamp(x0, -s, s) / s
        if self.config.clip_sample:
            return x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
        return x0

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
        eta: float | None = None,
    ) -> SimpleSchedulerOutput | tuple:
        """
        One step of the reverse process, from `timestep` to the next timestep of the schedule (or, after the last
        model call, to the clean sample), with the configured `sampler`. Computed in float32; the outputs have the
        dtype of `sample`.

        Args:
            model_output (`torch.Tensor`):
                The direct output of the diffusion model at `timestep` (see `prediction_type`).
            timestep (`int`, `float` or `torch.Tensor`):
                The current timestep; must be one of `self.timesteps`.
            sample (`torch.Tensor`):
                The current sample `x_t`.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Random number generator(s) for the noise of the `"ddpm"` and `"ddim"` (`eta > 0`) samplers. The
                noise is drawn like `DDPMScheduler` / `DDIMScheduler` draw it, so the same seed gives the same
                samples.
            return_dict (`bool`, defaults to `True`):
                Whether to return a [`SimpleSchedulerOutput`] or a tuple.
            eta (`float`, *optional*):
                Overrides `config.eta` for this step of the `"ddim"` sampler; ignored by the other samplers.

        Returns:
            [`SimpleSchedulerOutput`] or `tuple`: `(prev_sample, pred_original_sample)`.
        """
        if self.num_inference_steps is None:
            raise ValueError("`step` was called before `set_timesteps`; call `set_timesteps(num_inference_steps)`.")
        index = self._current_index(timestep)
        self._step_index = index + 1
        x_t = sample.float()

        if self.config.sampler in ("ddpm", "ddim"):  # integer timesteps, abar looked up as DDPM / DDIM do
            t, prev_t = int(self.timesteps[index]), int(self._timestep_after(index))
            abar_t = self._abar(t)
            x0, eps = self._predict_x0_and_eps(model_output.float(), x_t, abar_t.sqrt(), (1 - abar_t).sqrt())
            x0 = self._clip_or_threshold(x0)
            if self.config.sampler == "ddpm":
                prev_sample = self._ddpm_step(x0, x_t, t, prev_t, generator)
            else:
                eta = self.config.eta if eta is None else eta
                _check_eta(eta)
                prev_sample = self._ddim_step(x0, eps, t, prev_t, eta, generator)
        else:
            alpha, sigma = float(self._alphas[index]), float(self._sigmas[index])
            x0, _ = self._predict_x0_and_eps(model_output.float(), x_t, alpha, sigma)
            x0 = self._clip_or_threshold(x0)
            if self.config.sampler == "dpmsolver++":
                prev_sample = self._dpm_solver_step(x0, x_t, index)
            else:
                prev_sample = self._unipc_step(x0, x_t, index)

        prev_sample, x0 = prev_sample.to(sample.dtype), x0.to(sample.dtype)
        if not return_dict:
            return (prev_sample, x0)
        return SimpleSchedulerOutput(prev_sample=prev_sample, pred_original_sample=x0)

    def _ddpm_step(self, x0, x_t, t, prev_t, generator):
        # Ho et al. 2020, Algorithm 2, for a step t -> prev_t that may skip train timesteps: it uses the effective
        # alpha_t = abar_t / abar_prev and beta_t = 1 - alpha_t of that step.
        abar_t, abar_prev = self._abar(t), self._abar(prev_t)
        alpha_t = abar_t / abar_prev
        beta_t = 1 - alpha_t
        # eq. 7: posterior mean mu_tilde(x_t, x_0) (with x_0 from eq. 15 this is eq. 11)
        # = sqrt(abar_prev) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_prev) / (1 - abar_t) x_t
        coef_x0 = abar_prev.sqrt() * beta_t / (1 - abar_t)
        coef_xt = alpha_t.sqrt() * (1 - abar_prev) / (1 - abar_t)
        mean = coef_x0 * x0 + coef_xt * x_t
        if prev_t < 0:  # Algorithm 2: z = 0 on the last step
            return mean
        # Sec. 3.2: sigma_t^2 = beta_tilde_t = (1 - abar_prev) / (1 - abar_t) beta_t ("fixed_small") or beta_t
        variance = beta_t if self.config.variance_type == "fixed_large" else (1 - abar_prev) / (1 - abar_t) * beta_t
        noise = randn_tensor(x_t.shape, generator=generator, device=x_t.device, dtype=torch.float32)
        return mean + variance.sqrt() * noise

    def _ddim_step(self, x0, eps, t, prev_t, eta, generator):
        abar_t, abar_prev = self._abar(t), self._abar(prev_t)
        # Song et al. 2021, eq. 16:
        # sigma_t(eta) = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)
        sigma = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).sqrt()
        # eq. 12: x_prev = sqrt(abar_prev) x_0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z
        prev_sample = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).sqrt() * eps
        if eta > 0:
            noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=torch.float32)
            prev_sample = prev_sample + sigma * noise
        return prev_sample

    def _dpm_solver_step(self, x0, x_t, index):
        # Multistep DPM-Solver++ (Lu et al. 2022) integrates the diffusion ODE in lambda with the data prediction
        # x_0, reusing the x_0 of the previous steps; the order rules are DPMSolverMultistepScheduler's.
        self.model_outputs = [*self.model_outputs, x0][-self.config.solver_order :]
        n = len(self.timesteps)
        order = len(self.model_outputs)
        short = self.config.lower_order_final and n < 15
        if index == n - 1 and (short or self.config.set_alpha_to_one):  # lambda = inf at the end: 1st order only
            order = 1
        elif index == n - 2 and short:
            order = min(order, 2)
        # a repeated timestep (DPMSolverMultistep's grids at large n) leaves no divided difference: lower the order
        while order > 1 and any(self._lambdas[index - k] == self._lambdas[index - k + 1] for k in range(1, order)):
            order -= 1

        # Lu et al.'s notation: the step goes from s0 (grid point `index`) to t (the next one); s1, s2 before s0
        alpha_t, sigma_t, lambda_t = self._alphas[index + 1], self._sigmas[index + 1], self._lambdas[index + 1]
        sigma_s0, lambda_s0 = self._sigmas[index], self._lambdas[index]
        h = lambda_t - lambda_s0
        m0 = self.model_outputs[-1]

        if order == 1 or h == 0:  # h = 0: a step from timestep 0 to abar_0 (set_alpha_to_one=False) stays put
            # Alg. 2, first step (DPM-Solver++(1), equal to DDIM): x_t = sigma_t / sigma_s x_s - alpha_t (e^{-h} - 1) x0_s
            return (sigma_t / sigma_s0) * x_t - alpha_t * math.expm1(-h) * m0

        m1 = self.model_outputs[-2]
        r0 = (lambda_s0 - self._lambdas[index - 1]) / h
        if order == 2:
            # Alg. 2, DPM-Solver++(2M): D = (1 + 1 / (2 r)) x0_s0 - 1 / (2 r) x0_s1, r = h_{i-1} / h_i,
            # x_t = sigma_t / sigma_s0 x_s0 - alpha_t (e^{-h} - 1) D
            D = (1 + 1 / (2 * r0)) * m0 - (1 / (2 * r0)) * m1
            return (sigma_t / sigma_s0) * x_t - alpha_t * math.expm1(-h) * D

        # DPM-Solver++(3M), the third-order multistep rule of the DPM-Solver++ reference code: first and second
        # divided differences D1, D2 of x_0 in lambda, then the exponential-integrator update.
        m2 = self.model_outputs[-3]
        r1 = (self._lambdas[index - 1] - self._lambdas[index - 2]) / h
        D1_0, D1_1 = (m0 - m1) / r0, (m1 - m2) / r1
        D1 = D1_0 + r0 / (r0 + r1) * (D1_0 - D1_1)
        D2 = (D1_0 - D1_1) / (r0 + r1)
        phi_1 = math.expm1(-h)
        return (
            (sigma_t / sigma_s0) * x_t
            - alpha_t * phi_1 * m0
            + alpha_t * (phi_1 / h + 1) * D1
            - alpha_t * ((phi_1 + h) / h**2 - 0.5) * D2
        )

    def _unipc_coefficients(self, index: int, order: int, with_new_point: bool):
        # UniPC (Zhao et al. 2023), B(h) = e^h - 1 ("bh2"), data prediction, h = lambda_t - lambda_s0 from grid
        # point `index` to `index + 1`: the ratios r_k = (lambda_{s_k} - lambda_s0) / h of the earlier points (and
        # r = 1 for the new point t for the corrector), and the solution rho of eq. (6)/(8): sum_k rho_k r_k^(i-1) =
        # i! phi_{i+1}(h) / B(h), i = 1..p, with phi_{i+1} = (phi_i - 1 / i!) / h from phi_1 = (e^h - 1) / h.
        h = self._lambdas[index + 1] - self._lambdas[index]
        hh = -h
        rks = [(self._lambdas[index - k] - self._lambdas[index]) / h for k in range(1, order)]
        if with_new_point:
            rks.append(1.0)
        h_phi_1 = math.expm1(hh)
        B_h = math.expm1(hh)
        h_phi_k, factorial = h_phi_1 / hh - 1, 1
        R, b = [], []
        for i in range(1, order + 1):
            R.append([r ** (i - 1) for r in rks])
            b.append(h_phi_k * factorial / B_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        size = len(rks)
        if size == 0:
            rhos = []
        elif size == 1:
            rhos = [0.5]  # Zhao et al.: UniP-2 / UniC-1 use rho = 1/2
        else:
            rhos = np.linalg.solve(np.array(R)[:size, :size], np.array(b)[:size]).tolist()
        return rks, rhos, h_phi_1, B_h

    def _unipc_update(self, x, index, order, new_x0=None):
        # x_t = sigma_t / sigma_s0 x_s0 - alpha_t (e^{-h} - 1) x0_s0 - alpha_t B(h) sum_k rho_k D_k, D_k = (x0_{s_k} -
        # x0_s0) / r_k (UniP, Zhao et al. eq. 7), plus rho_t (x0_t - x0_s0) with the new point for UniC (eq. 8).
        # Evaluated as one linear combination of x and the x_0 (one in-place operation per tensor).
        alpha_t, sigma_t, sigma_s0 = self._alphas[index + 1], self._sigmas[index + 1], self._sigmas[index]
        history = self.model_outputs  # for UniC: the x_0 up to s0, before the new one is added
        rks, rhos, h_phi_1, B_h = self._unipc_coefficients(index, order, new_x0 is not None)
        points = [history[-1 - k] for k in range(1, order)] + ([new_x0] if new_x0 is not None else [])
        coefficients = [-alpha_t * B_h * rho / rk for rho, rk in zip(rhos, rks)]
        out = x * (sigma_t / sigma_s0)
        out.add_(history[-1], alpha=-alpha_t * h_phi_1 - sum(coefficients))
        for point, coefficient in zip(points, coefficients):
            out.add_(point, alpha=coefficient)
        return out

    def _unipc_step(self, x0, x_t, index):
        n = len(self.timesteps)
        x_t_called = x_t  # the sample the model saw, before the redo and UniC below
        if index == 0 and self._analytic_start is not None and self._begin_index is None:
            # Redo the analytic first step from T - 1 with the x_0 of the first call: DDIM with eps_{T-1} = (x_T -
            # alpha_s x_0) / sigma_s, x_{t_0} = alpha_0 x_0 + sigma_0 eps_{T-1}, x_T = sample / init_noise_sigma.
            alpha_s, sigma_s = self._analytic_start
            x_T = x_t / self.init_noise_sigma
            x_t = self._alphas[0] * x0 + (self._sigmas[0] / sigma_s) * (x_T - alpha_s * x0)
        if self.config.use_corrector and self._last_sample is not None and index > 0:
            # UniC: with the model output at the new point, redo the last step one order higher (no extra model call)
            x_t = self._unipc_update(self._last_sample, index - 1, self._last_order, new_x0=x0)
        self.model_outputs = [*self.model_outputs, x0][-self.config.solver_order :]
        k = max(self.config.final_step_order, 2) if self.config.final_step_type == "auto" else (
            2 if self.config.final_step_type == "gaussian" else self.config.final_step_order)
        if k > 1 and self._sigmas[-1] == 0 and index >= n - k:  # one of the calls the last step uses
            alpha, sigma = float(self._alphas[index]), float(self._sigmas[index])
            self._final_history.append((sigma / alpha, (x_t_called - alpha * x0) / sigma, x_t_called, alpha, x0))
        if self._sigmas[index + 1] == 0:
            # The last call: no model call at t = 0; see `final_step_type`
            self._last_sample = None
            return self._final_step(x_t_called / float(self._alphas[index]), x0)
        # UniP, order at most the number of x_0 known and the calls left (lower order at the end, as UniPC's)
        order = min(self.config.solver_order, len(self.model_outputs), n - index)
        self._last_sample, self._last_order = x_t, order
        return self._unipc_update(x_t, index, order)

    def _final_step(self, y: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        # y = x / alpha at the last call; see `final_step_type`. "auto" computes only the steps its samples take.
        history, kind = self._final_history, self.config.final_step_type
        if len(history) <= 1:
            return x0  # y_last - s_last eps_last, exactly
        if kind != "polynomial":
            factor, consistent = self._gaussian_fit()
            eps_last = history[-1][1]
            if kind == "gaussian" or bool(consistent.all()):
                return torch.addcmul(y, eps_last, factor, value=-1)
        polynomial = self._polynomial_final_step(y, x0, history[-self.config.final_step_order :])
        if kind == "polynomial" or not bool(consistent.any()):
            return polynomial
        return torch.where(consistent, torch.addcmul(y, eps_last, factor, value=-1), polynomial)

    def _gaussian_fit(self):
        # In an isotropic Gaussian mode N(mu, w^2 I), at every point (y, s) the x_0 prediction is D = y - s eps = mu +
        # w^2 eps / s (Tweedie's formula), so the last two calls give D_1 - D_2 = w^2 (eps_1 / s_1 - eps_2 / s_2),
        # wherever the samples were. Per sample: w^2 by least squares, and the residual of that fit relative to
        # |y_1 - y_2|, which is 0 in a Gaussian mode (up to rounding) and large where the data is not locally isotropic
        # (measured 0.11 to 0.4 on image models, on every sample). Along the ODE y - mu grows like a = sqrt(w^2 + s^2)
        # and eps = s (y - mu) / a^2, so y_0 = mu + (y_2 - mu) w / a_2 = y_2 - s_2 eps_2 / (1 + w / a_2).
        # Returns, per sample, the factor s_2 / (1 + w / a_2) of that y_0 and whether to take it: a consistent fit
        # (w^2 >= 0, residual <= final_step_tolerance) of a mode no wider than 30 s_2. Wider modes take the polynomial
        # step, which the Gaussian one approaches there (y_0 - y_2 = -s_2 eps_2 (1/2 + O(s^2 / w^2))), while eps / s
        # changes too little between the calls (< (s_1^2 - s_2^2) / (1800 s_2^2)) to fit w from float32 samples.
        # Samples of more than 4096 values are fitted on a strided subset of about 4096 of them (exact for an isotropic
        # mode, and it keeps the fit's cost below that of the step).
        (s_1, eps_1, x_1, alpha_1, x0_1), (s_2, eps_2, x_2, alpha_2, x0_2) = self._final_history[-2:]
        shape = (-1, *[1] * (eps_2.ndim - 1))
        stride = max(1, eps_2[0].numel() // 4096)

        def part(a):  # per sample, a strided subset of at most ~4096 values
            return a.reshape(len(a), -1)[:, ::stride]

        change = part(x0_1) - part(x0_2)  # D_1 - D_2
        rate = torch.sub(part(eps_1), part(eps_2), alpha=s_1 / s_2)  # s_1 (eps_1 / s_1 - eps_2 / s_2)
        projection = torch.linalg.vecdot(change, rate) / torch.linalg.vecdot(rate, rate).clamp_min(
            torch.finfo(rate.dtype).tiny)
        width_squared = s_1 * projection
        # the residual directly, not as |c|^2 - <c, r>^2 / |r|^2, whose cancellation depends on the order of summation
        residual = torch.addcmul(change, rate, projection[:, None], value=-1)  # D_1 - D_2 - w^2 (...)
        moved = torch.sub(part(x_1), part(x_2), alpha=alpha_1 / alpha_2)  # alpha_1 (y_1 - y_2)
        tolerance = self.config.final_step_tolerance
        consistent = (width_squared >= 0) & (width_squared <= 900 * s_2**2)
        consistent &= torch.linalg.vecdot(residual, residual) <= (tolerance / alpha_1) ** 2 * torch.linalg.vecdot(
            moved, moved)
        w_squared = width_squared.clamp_min(0.0)
        shrink = (w_squared / (w_squared + s_2**2)).sqrt()  # w / a_2
        return (s_2 / (1 + shrink)).view(shape), consistent.view(shape)

    def _polynomial_final_step(self, y: torch.Tensor, x0: torch.Tensor, history) -> torch.Tensor:
        # y_0 = y_last - int_0^{s_last} P(s) ds, P the polynomial through the (s_j, eps_j) of the last k calls (k = 1:
        # y_last - s_last eps_last, which is the x_0 prediction); int_0^{s_last} of P's Lagrange basis, exactly
        if len(history) <= 1:
            return x0  # y_last - s_last eps_last, exactly
        nodes = np.array([s for s, *_ in history], dtype=np.float64)
        out = y
        for j, (s_j, eps_j, *_) in enumerate(history):
            basis = np.poly1d([1.0])
            for other in np.delete(nodes, j):
                basis = basis * np.poly1d([1.0, -other]) / (s_j - other)
            antiderivative = basis.integ()
            out = out - float(antiderivative(nodes[-1]) - antiderivative(0.0)) * eps_j
        return out

    def _abar_like(self, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        # abar at each timestep, float32, shaped to broadcast over a batch like `like`
        self._check_train_timesteps(timesteps)
        abar = self.alphas_cumprod.to(like.device)[torch.as_tensor(timesteps, device=like.device).long()]
        return abar.flatten().reshape(-1, *[1] * (like.ndim - 1))

    def _check_train_timesteps(self, timesteps):
        T = self.config.num_train_timesteps
        t = torch.as_tensor(timesteps)
        if t.is_floating_point() or t.is_complex():
            bad = t[(t != t.round()) | (t < 0) | (t > T - 1) | ~torch.isfinite(t)]
        else:
            bad = t[(t < 0) | (t > T - 1)]
        if bad.numel():
            raise ValueError(
                f"timesteps {bad.flatten()[:8].tolist()} are out of range: train timesteps must be integers in "
                f"[0, {T - 1}] (num_train_timesteps={T}); a negative index would wrap around."
            )

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor
    ) -> torch.Tensor:
        """
        The forward process (Ho et al. 2020, eq. 4): x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, computed in
        float32 whatever the input dtype and returned in the dtype of `original_samples`.

        Args:
            original_samples (`torch.Tensor`):
                The clean samples `x_0`, batch first.
            noise (`torch.Tensor`):
                The noise `eps`, same shape.
            timesteps (`torch.IntTensor`):
                One train timestep per sample (or one for all).

        Returns:
            `torch.Tensor`: the noisy samples `x_t`.
        """
        abar = self._abar_like(timesteps, original_samples)
        noisy = abar.sqrt() * original_samples.float() + (1 - abar).sqrt() * noise.float()
        return noisy.to(original_samples.dtype)

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor) -> torch.Tensor:
        """
        The v-prediction target v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022), computed in float32
        and returned in the dtype of `sample`.

        Args:
            sample (`torch.Tensor`):
                The clean samples `x_0`, batch first.
            noise (`torch.Tensor`):
                The noise `eps`, same shape.
            timesteps (`torch.IntTensor`):
                One train timestep per sample (or one for all).

        Returns:
            `torch.Tensor`: the velocity `v`.
        """
        abar = self._abar_like(timesteps, sample)
        velocity = abar.sqrt() * noise.float() - (1 - abar).sqrt() * sample.float()
        return velocity.to(sample.dtype)

    def __len__(self) -> int:
        return self.config.num_train_timesteps
