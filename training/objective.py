# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""The training objective: the regression target for each `prediction_type`, and Min-SNR loss weights."""

import torch


def training_target(scheduler, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the model learns to predict from `x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`: `eps` (Ho et al. 2020,
    eq. 14), `v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0` (Salimans & Ho 2022) or `x_0`."""
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(clean, noise, timesteps)
    return clean


def min_snr_weights(scheduler, timesteps: torch.Tensor, snr_gamma: float) -> torch.Tensor:
    """
    Per-sample loss weights of Min-SNR-gamma (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting
    Strategy"), written for the MSE of each prediction type. The weight of the x_0 loss is `min(SNR_t, gamma)` with
    `SNR_t = abar_t / (1 - abar_t)`; an eps-MSE equals SNR_t times an x_0-MSE and a v-MSE equals (SNR_t + 1) times
    one, so their weights are `min(SNR_t, gamma) / SNR_t` and `min(SNR_t, gamma) / (SNR_t + 1)`.
    """
    abar = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = abar / (1 - abar)
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return (snr_gamma / snr).clamp(max=1.0)  # = min(SNR, gamma) / SNR, and 1 at SNR = 0 (zero terminal SNR)
    if prediction_type == "v_prediction":
        return snr.clamp(max=snr_gamma) / (snr + 1)
    return snr.clamp(max=snr_gamma)
