# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""The training objective: Algorithm 1 of Ho et al. (2020) with the target of each `prediction_type`, Min-SNR loss
weights, offset noise and class dropout."""

import torch
import torch.nn.functional as F


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


def diffusion_loss(
    unet,
    scheduler,
    clean: torch.Tensor,
    class_labels: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    snr_gamma: float | None = None,
    noise_offset: float = 0.0,
    class_dropout_prob: float = 0.0,
    null_class: int | None = None,
) -> torch.Tensor:
    """
    The denoising loss of a batch of clean images `x_0` in [-1, 1] (Ho et al. 2020, Algorithm 1): draw
    t ~ U{0, ..., T-1} and eps ~ N(0, I), form x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (eq. 4, in float32
    whatever the precision the model runs in) and take the MSE between the model output and its target.

    Args:
        unet: the model, called as `unet(x_t, t, class_labels=...)`.
        scheduler (`SimpleScheduler`): gives the forward process and `prediction_type`.
        clean (`torch.Tensor`): the images `x_0`, float32, `(batch, channels, height, width)`.
        class_labels (`torch.Tensor`, *optional*): one label per image for a class-conditional model.
        valid (`torch.Tensor`, *optional*): a bool per image; images marked False (failed to decode) do not count.
        snr_gamma (`float`, *optional*): weight each image's loss with Min-SNR-gamma.
        noise_offset (`float`, defaults to 0.0): add `noise_offset` times a random constant per image and channel to
            eps (offset noise), so the model also learns to change the mean brightness.
        class_dropout_prob (`float`, defaults to 0.0): replace each label by `null_class` with this probability, which
            trains the unconditional model used by classifier-free guidance (Ho & Salimans 2022).
        null_class (`int`, *optional*): the label of the null class (`num_class_embeds`).

    Returns:
        `torch.Tensor`: the mean loss over the valid images (0 if there are none), float32.
    """
    noise = torch.randn_like(clean)
    if noise_offset:
        noise = noise + noise_offset * torch.randn(clean.shape[:2] + (1, 1), device=clean.device)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (clean.shape[0],), device=clean.device)
    noisy = scheduler.add_noise(clean, noise, timesteps)
    if class_labels is not None and class_dropout_prob:
        drop = torch.rand(class_labels.shape, device=class_labels.device) < class_dropout_prob
        class_labels = class_labels.masked_fill(drop, null_class)

    prediction = unet(noisy, timesteps, class_labels=class_labels).sample
    target = training_target(scheduler, clean, noise, timesteps)
    loss = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=tuple(range(1, clean.ndim)))
    if snr_gamma is not None:
        loss = loss * min_snr_weights(scheduler, timesteps, snr_gamma)
    if valid is None:
        return loss.mean()
    return (loss * valid).sum() / valid.sum().clamp(min=1)
