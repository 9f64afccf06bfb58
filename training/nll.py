# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
r"""Negative log-likelihood in bits/dim through the variational bound of a DDPM (Ho et al. 2020, eq. 5;
Nichol & Dhariwal 2021, eq. 4-6):

    -log p(x_0) <= L_T + sum_{t=2}^{T} L_{t-1} + L_0
        L_T     = KL(q(x_T | x_0) || N(0, I))                           prior term, no parameters
        L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))         two Gaussians, closed form
        L_0     = -log p(x_0 | x_1)                                     discretized Gaussian decoder (eq. 13)

with x_t ~ q(x_t | x_0) drawn once per term (eq. 4). The reverse process p(x_{t-1} | x_t) = N(mu(x_t), sigma_t^2)
is the one the ancestral DDPM sampler runs: its mean is the posterior mean (eq. 7) with the model's x_0
prediction (clipped if the scheduler's `clip_sample` says so; dynamic thresholding is not modelled) and its variance
is fixed, sigma_t^2 = beta~_t ("fixed_small") or beta_t ("fixed_large"), as the scheduler's `variance_type` says.
The decoder uses sigma_1^2 = beta~_2 for both, since beta~_1 = 0 (the choice of the improved-diffusion code that
produced the published numbers). DDIM and DPM-Solver sample other, implicit models: this is not their likelihood.
Data are 8-bit images scaled to [-1, 1]; the result is in bits per dimension: nats / (C * H * W * ln 2).

Estimator. The T - 1 KL terms dominate the cost (one model call each). With `num_timesteps=K < T - 1` their sum
is estimated by stratified sampling: {2, ..., T} is split into K contiguous strata S_k, for every image one t_k is
drawn uniformly from each stratum, and sum_t L_{t-1} is estimated by sum_k |S_k| L_{t_k - 1}. Since
E[|S_k| L_{t_k - 1}] = sum_{t in S_k} L_{t-1}, the estimate is unbiased for any partition; its variance is small
when each stratum holds terms of similar size. The terms fall off roughly like 1/t (half of the sum sits in the
first ~10 timesteps of a 1000-step linear schedule), so the strata edges are spaced geometrically: the first
strata are single timesteps, computed exactly, and the wide late strata hold the small terms. L_T and L_0 are
always computed exactly. Drawing the timesteps per image makes the errors average out over a held-out set at
no extra cost. The bound is still stochastic through x_t: report the mean over many images.

Indexing: Diffusers' 0-based timestep `t` is Ho et al.'s t + 1, so the KL terms use timesteps 1..T-1 and the
decoder uses timestep 0.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor


VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log")


@dataclass
class VariationalBoundOutput(BaseOutput):
    """
    The variational bound per image, in bits/dim.

    Args:
        bits_per_dim (`torch.Tensor` of shape `(batch_size,)`):
            The whole bound: `prior_bits_per_dim + diffusion_bits_per_dim + decoder_bits_per_dim`.
        prior_bits_per_dim (`torch.Tensor` of shape `(batch_size,)`):
            L_T: how far q(x_T | x_0) is from the N(0, I) prior.
        diffusion_bits_per_dim (`torch.Tensor` of shape `(batch_size,)`):
            The sum of the KL terms L_1 .. L_{T-1} (an unbiased estimate when timesteps are subsampled).
        decoder_bits_per_dim (`torch.Tensor` of shape `(batch_size,)`):
            L_0: the discretized Gaussian decoder's negative log-likelihood.
    """

    bits_per_dim: torch.Tensor
    prior_bits_per_dim: torch.Tensor
    diffusion_bits_per_dim: torch.Tensor
    decoder_bits_per_dim: torch.Tensor


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def _log_normal_mass(lower, upper):
    """log(Phi(upper) - Phi(lower)) for lower < upper, accurate in both tails (no clamping)."""
    flip = lower > 0  # right tail: Phi(b) - Phi(a) = Phi(-a) - Phi(-b)
    lower, upper = torch.where(flip, -upper, lower), torch.where(flip, -lower, upper)
    log_upper, log_lower = torch.special.log_ndtr(upper), torch.special.log_ndtr(lower)
    return log_upper + torch.log(-torch.expm1(log_lower - log_upper))


def discretized_gaussian_log_likelihood(x, mean, log_scale):
    """log p(x) of 8-bit data x in [-1, 1] under N(mean, exp(log_scale)^2) integrated over x's bin (Ho et al. 2020,
    eq. 13): bins of width 2/255 centred on the 256 values, the two outer bins extended to -inf and +inf."""
    half_bin = 1.0 / 255.0
    inv_scale = torch.exp(-log_scale)
    lower = torch.where(x < -1 + 1e-3, -math.inf, (x - half_bin - mean) * inv_scale)
    upper = torch.where(x > 1 - 1e-3, math.inf, (x + half_bin - mean) * inv_scale)
    return _log_normal_mass(lower, upper)


def predict_original_sample(model_output, sample, alpha_prod_t, prediction_type):
    """x_0 from the model output at x_t (eq. 15 for "epsilon"; Salimans & Ho 2022 for "v_prediction")."""
    if prediction_type == "epsilon":
        return (sample - (1 - alpha_prod_t) ** 0.5 * model_output) / alpha_prod_t**0.5
    if prediction_type == "v_prediction":
        return alpha_prod_t**0.5 * sample - (1 - alpha_prod_t) ** 0.5 * model_output
    if prediction_type == "sample":
        return model_output
    raise ValueError(f"prediction_type {prediction_type!r} is not supported; accepted: 'epsilon', 'v_prediction', 'sample'.")


class _Coefficients:
    """The float64 quantities of the forward process and of the fixed-variance reverse process, per timestep."""

    def __init__(self, scheduler, device):
        variance_type = scheduler.config.get("variance_type") or "fixed_small"
        if variance_type not in VARIANCE_TYPES:
            raise ValueError(
                f"variance_type {variance_type!r} is not supported by the variational bound; accepted: {VARIANCE_TYPES} "
                "(learned variances need the model's variance output)."
            )
        betas = scheduler.betas.detach().to("cpu", torch.float64)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        # q(x_{t-1} | x_t, x_0) = N(coef_x0 x_0 + coef_xt x_t, beta~_t)                          (eq. 6-7)
        posterior_variance = betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)
        coef_x0 = betas * alphas_cumprod_prev.sqrt() / (1 - alphas_cumprod)
        coef_xt = (1 - alphas_cumprod_prev) * (1 - betas).sqrt() / (1 - alphas_cumprod)
        variance = posterior_variance if variance_type.startswith("fixed_small") else betas
        model_variance = torch.cat([posterior_variance[1:2], variance[1:]])  # sigma_1^2 = beta~_2 for the decoder

        self.num_train_timesteps = len(betas)
        self.alphas_cumprod = alphas_cumprod.to(device)
        self.posterior_log_variance = posterior_variance.log().to(device)  # -inf at t = 0, which only the decoder uses
        self.model_log_variance = model_variance.log().to(device)
        self.coef_x0, self.coef_xt = coef_x0.to(device), coef_xt.to(device)
        self.prediction_type = scheduler.config.get("prediction_type", "epsilon")
        self.clip_range = scheduler.config.get("clip_sample_range", 1.0) if scheduler.config.get("clip_sample", True) else None

    def posterior_mean(self, x0, x_t, t):
        return _per_image(self.coef_x0, t) * x0 + _per_image(self.coef_xt, t) * x_t


def _per_image(coefficients, t):
    """The coefficients at the per-image timesteps `t`, shaped to broadcast over (batch, channels, height, width)."""
    return coefficients[t].view(-1, 1, 1, 1)


def timestep_strata(num_train_timesteps: int, num_strata: int) -> list[range]:
    """Timesteps 1..T-1 split into `num_strata` non-empty contiguous strata with geometrically spaced edges: the KL
    terms fall off roughly like 1/t, so each stratum then holds a similar share of their sum. With
    `num_strata >= T - 1` every stratum is a single timestep (the exact sum)."""
    num_strata = min(num_strata, num_train_timesteps - 1)
    steps = np.arange(num_strata + 1)
    geometric = np.geomspace(1, num_train_timesteps, num_strata + 1).round().astype(int)
    # the smallest strictly increasing sequence >= `geometric`: e_i = max(g_i, e_{i-1} + 1); it runs from 1 to T
    edges = steps + np.maximum.accumulate(geometric - steps)
    return [range(start, stop) for start, stop in zip(edges[:-1].tolist(), edges[1:].tolist())]


@torch.no_grad()
def variational_bound(
    unet,
    scheduler,
    images: torch.Tensor,
    class_labels: torch.Tensor | None = None,
    num_timesteps: int | None = None,
    generator: torch.Generator | None = None,
) -> VariationalBoundOutput:
    """
    The variational bound on -log p(images) in bits/dim, per image (see the module docstring).

    Args:
        unet (`torch.nn.Module`):
            The denoiser, called as `unet(x_t, timesteps[, class_labels=...]).sample` in float32, with one
            timestep per image.
        scheduler (`SchedulerMixin`):
            Gives the training noise schedule (`betas`) and, from its config, `prediction_type`, `variance_type`
            (default "fixed_small"), `clip_sample` and `clip_sample_range`.
        images (`torch.Tensor` of shape `(batch_size, channels, height, width)`):
            8-bit images scaled to [-1, 1], i.e. values in {2k/255 - 1}, on the device of `unet`.
        class_labels (`torch.Tensor` of shape `(batch_size,)`, *optional*):
            Labels for a class-conditional `unet`; the bound is then on -log p(images | labels).
        num_timesteps (`int`, *optional*):
            Number of KL terms evaluated per image, by stratified sampling with unbiased rescaling. `None` (or at
            least `T - 1`) evaluates all of them.
        generator (`torch.Generator`, *optional*):
            A CPU generator that makes the noise and the timesteps drawn deterministic.

    Returns:
        [`VariationalBoundOutput`]: the bound and its three parts, each of shape `(batch_size,)`.
    """
    if images.ndim != 4:
        raise ValueError(f"`images` must be a (batch_size, channels, height, width) tensor, but has shape {tuple(images.shape)}.")
    levels = (images.double() + 1) * 127.5
    if images.min() < -1 or images.max() > 1 or (levels - levels.round()).abs().max() > 1e-3:
        raise ValueError("`images` must be 8-bit images scaled to [-1, 1] (values 2k/255 - 1 for k in 0..255).")
    if num_timesteps is not None and (not isinstance(num_timesteps, int) or num_timesteps < 1):
        raise ValueError(f"`num_timesteps` must be a positive int or None, but is {num_timesteps!r}.")

    device = images.device
    c = _Coefficients(scheduler, device)
    x0 = images.to(torch.float64)
    batch_size = x0.shape[0]
    model_kwargs = {} if class_labels is None else {"class_labels": class_labels}

    def q_sample(t):  # x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps                                  (eq. 4)
        noise = randn_tensor(x0.shape, generator=generator, device=device, dtype=torch.float64)
        alpha_prod_t = _per_image(c.alphas_cumprod, t)
        return alpha_prod_t.sqrt() * x0 + (1 - alpha_prod_t).sqrt() * noise

    def model_x0(x_t, t):
        output = unet(x_t.float(), t, **model_kwargs).sample.to(torch.float64)
        if output.shape != x_t.shape:
            raise ValueError(f"The model output has shape {tuple(output.shape)}; the variational bound needs {tuple(x_t.shape)}.")
        pred_x0 = predict_original_sample(output, x_t, _per_image(c.alphas_cumprod, t), c.prediction_type)
        return pred_x0 if c.clip_range is None else pred_x0.clamp(-c.clip_range, c.clip_range)

    def kl_term(t):  # L_{t-1} in Ho et al.'s indexing, nats per image
        x_t = q_sample(t)
        true_mean = c.posterior_mean(x0, x_t, t)
        model_mean = c.posterior_mean(model_x0(x_t, t), x_t, t)
        kl = normal_kl(true_mean, _per_image(c.posterior_log_variance, t), model_mean, _per_image(c.model_log_variance, t))
        return kl.flatten(1).sum(1)

    # L_T
    last = c.num_train_timesteps - 1
    zero = torch.zeros((), dtype=torch.float64, device=device)
    prior = normal_kl(c.alphas_cumprod[last].sqrt() * x0, (1 - c.alphas_cumprod[last]).log(), zero, zero).flatten(1).sum(1)

    # L_1 + ... + L_{T-1}: per image, one timestep drawn uniformly in each stratum, weighted by the stratum's size
    diffusion = torch.zeros(batch_size, dtype=torch.float64, device=device)
    for stratum in timestep_strata(c.num_train_timesteps, num_timesteps or c.num_train_timesteps):
        t = torch.randint(stratum.start, stratum.stop, (batch_size,), generator=generator).to(device)
        diffusion += len(stratum) * kl_term(t)

    # L_0: x_0 under N(mu(x_1, 1), sigma_1^2); at t = 0 the posterior mean is the x_0 prediction itself
    t = torch.zeros(batch_size, dtype=torch.long, device=device)
    log_scale = 0.5 * _per_image(c.model_log_variance, t)
    decoder = -discretized_gaussian_log_likelihood(x0, model_x0(q_sample(t), t), log_scale).flatten(1).sum(1)

    bits = 1.0 / (math.log(2.0) * x0[0].numel())
    return VariationalBoundOutput(
        bits_per_dim=(prior + diffusion + decoder) * bits,
        prior_bits_per_dim=prior * bits,
        diffusion_bits_per_dim=diffusion * bits,
        decoder_bits_per_dim=decoder * bits,
    )
