# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""SimpleDiffusionPipeline: sample and edit images with a SimpleUNet and any DDPM-family scheduler.

Self-contained on purpose: this file imports only the standard library, numpy, torch and diffusers, because
`save_pretrained` copies it (and the UNet and scheduler files) into every checkpoint, so that
`DiffusionPipeline.from_pretrained(path, trust_remote_code=True)` works where diffusers_simple is not installed.

Editing uses the same weights, with no retraining (see docs/editing.md):
- image-to-image, SDEdit (Meng et al. 2022, https://huggingface.co/papers/2108.01073): `pipe(image=..., strength=...)`
- inpainting, RePaint (Lugmayr et al. 2022, https://huggingface.co/papers/2201.09865): `pipe(image=..., mask_image=...)`
- inversion, DDIM (Song et al. 2021, eq. 13 run forwards): `pipe.invert(image)`
- interpolation, spherical between the noises of two images (Song et al. 2021, Sec. 5.3): `pipe.interpolate(image)`

Notation as in scheduling_simple.py: abar_t is the cumulative product of (1 - beta), and the forward process is
q(x_t | x_0): x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (Ho et al. 2020, eq. 4).
"""

import inspect
import json
import math
import numbers
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Union

import numpy as np
import torch

import diffusers
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils import BaseOutput
from diffusers.utils.pil_utils import Image as PILImage  # PIL, through Diffusers (which depends on it)
from diffusers.utils.torch_utils import randn_tensor


EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler

        >>> pipe = DiffusionPipeline.from_pretrained("someuser/simple-digits", trust_remote_code=True)
        >>> image = pipe(batch_size=4, num_inference_steps=20).images[0]

        >>> # any DDPM-family scheduler of Diffusers works on the same weights
        >>> pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
        >>> image = pipe(num_inference_steps=10).images[0]
        ```
"""

OUTPUT_TYPES = ("pil", "np", "pt")
# Steps used when `num_inference_steps` is not given, except by ancestral DDPM, which needs the whole chain
DEFAULT_STEPS_FAST = 20


def _is_ancestral_ddpm(scheduler) -> bool:
    sampler = scheduler.config.get("sampler")
    return sampler == "ddpm" or (sampler is None and type(scheduler).__name__ == "DDPMScheduler")


@dataclass
class SimpleInversionOutput(BaseOutput):
    """
    Output of [`SimpleDiffusionPipeline.invert`].

    Args:
        latents (`torch.Tensor` of shape `(batch_size, channels, height, width)`):
            The noise `x_T` the images invert to (float32). `pipe.interpolate(latents=...)` decodes it with the same
            ODE; `pipe(latents=...)` with a deterministic sampler (DDIM with `eta=0`) on the same steps comes close.
        reconstruction (`List[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`, *optional*):
            The images decoded back from `latents`, in `output_type`; `None` with `reconstruct=False`.
        reconstruction_error (`torch.Tensor` of shape `(batch_size,)`, *optional*):
            Root-mean-square difference between each reconstruction and its input, in pixel units of [0, 1] images.
    """

    latents: torch.Tensor
    reconstruction: Optional[Union[List, np.ndarray, torch.Tensor]] = None
    reconstruction_error: Optional[torch.Tensor] = None


def slerp(v0: torch.Tensor, v1: torch.Tensor, w: float, dot_threshold: float = 0.9995) -> torch.Tensor:
    """Spherical linear interpolation (Shoemake 1985) from `v0` (w = 0) to `v1` (w = 1), over all their elements:
    slerp = sin((1 - w) theta) / sin(theta) v0 + sin(w theta) / sin(theta) v1, theta the angle between them. Gaussian
    noises have norms near sqrt(d); linear interpolation would shrink the midpoint of two independent ones by sqrt(2)
    (an image the model never saw), slerp keeps it. Nearly parallel vectors fall back to linear interpolation."""
    a, b = v0.double().flatten(), v1.double().flatten()
    cos = (a @ b / (a.norm() * b.norm())).clamp(-1, 1)
    if cos.abs() > dot_threshold:
        return torch.lerp(v0.double(), v1.double(), w).to(v0.dtype)
    theta = torch.arccos(cos)
    out = (torch.sin((1 - w) * theta) * v0.double() + torch.sin(w * theta) * v1.double()) / torch.sin(theta)
    return out.to(v0.dtype)


def repaint_path(num_steps: int, jump_length: int, jump_n_sample: int) -> List[int]:
    """The positions RePaint visits (Lugmayr et al. 2022, Sec. 4.2 and Fig. 9), position p meaning `p` of the
    `num_steps` denoising steps done (0: the start, `num_steps`: the clean image). It goes down one position at a time;
    every `jump_length` positions, counted back from the last step, it goes back up `jump_length` positions
    (re-noising) and down again, `jump_n_sample - 1` times. The same schedule as Diffusers' `RePaintScheduler`."""
    jumps = {p: jump_n_sample - 1 for p in range(num_steps - 1, jump_length - 1, -jump_length)}
    p, path = 0, [0]
    while p < num_steps:
        p += 1
        path.append(p)
        if jumps.get(p, 0) > 0:
            jumps[p] -= 1
            for _ in range(jump_length):
                p -= 1
                path.append(p)
    return path


def _image_batch(image, name: str, pil_mode: Optional[str]) -> torch.Tensor:
    """`image` (a PIL image, numpy array or torch tensor, or a list of them) as a float32 CPU tensor (N, C, H, W) with
    values in [0, 1] for valid input: uint8 and PIL values are divided by 255, float values kept as they are. Layouts
    as in Diffusers: numpy (H, W), (H, W, C) or (N, H, W, C); torch (H, W), (C, H, W) or (N, C, H, W)."""
    items = list(image) if isinstance(image, (list, tuple)) else [image]
    if not items:
        raise ValueError(f"`{name}` is an empty list; give an image or a list or batch of images.")
    batch = []
    for item in items:
        if isinstance(item, PILImage.Image):
            if pil_mode is None:
                raise ValueError(f"`{name}` is a PIL image, but PIL images only hold 1 (mode L) or 3 (RGB) channels, "
                                 "not what this model takes: pass a numpy array or a tensor.")
            array = np.asarray(item.convert(pil_mode), dtype=np.float32) / 255.0
            tensor = torch.from_numpy(array.reshape(*array.shape[:2], -1)).permute(2, 0, 1)[None]
        elif isinstance(item, (np.ndarray, torch.Tensor)):
            tensor = torch.from_numpy(np.array(item)) if isinstance(item, np.ndarray) else item.detach().cpu()
            if tensor.dtype == torch.uint8:
                tensor = tensor.float() / 255.0
            elif tensor.dtype == torch.bool:
                tensor = tensor.float()
            elif not tensor.is_floating_point():
                raise TypeError(f"`{name}` has dtype {item.dtype}; accepted are floats in [0, 1] or uint8 in 0..255.")
            if tensor.ndim not in (2, 3, 4):
                raise ValueError(f"`{name}` has shape {tuple(item.shape)}; accepted are 2 to 4 dimensions: numpy (H, W), "
                                 "(H, W, C) or (N, H, W, C), torch (H, W), (C, H, W) or (N, C, H, W).")
            if tensor.ndim == 2:
                tensor = tensor[None, None]
            elif isinstance(item, np.ndarray):  # channels last
                tensor = (tensor[None] if tensor.ndim == 3 else tensor).permute(0, 3, 1, 2)
            elif tensor.ndim == 3:
                tensor = tensor[None]
        else:
            raise TypeError(f"`{name}` has to be a PIL image, a numpy array or a torch tensor, or a list of them, "
                            f"but is {type(item)}.")
        batch.append(tensor.float())
    if len({tuple(t.shape[1:]) for t in batch}) > 1:
        raise ValueError(f"The images in `{name}` differ in shape: {[tuple(t.shape[1:]) for t in batch]} (C, H, W).")
    return torch.cat(batch)


class SimpleDiffusionPipeline(DiffusionPipeline):
    r"""
    Pipeline for (class-conditional) image generation with a noise-prediction UNet.

    This model inherits from [`DiffusionPipeline`]. Check the superclass documentation for the generic methods
    implemented for all pipelines (downloading, saving, running on a particular device, etc.).

    Parameters:
        unet (`SimpleUNet` or [`UNet2DModel`]):
            A UNet predicting the noise (or `v`, or `x_0`, as the scheduler's `prediction_type` says) of an image.
        scheduler (`SimpleScheduler` or [`SchedulerMixin`]):
            A scheduler used with `unet` to denoise the image: `SimpleScheduler` or any of Diffusers' DDPM-family
            schedulers ([`DDPMScheduler`], [`DDIMScheduler`], [`DPMSolverMultistepScheduler`], ...).
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["latents"]

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    def latents_shape(self, batch_size: int) -> tuple:
        sample_size = self.unet.config.sample_size
        height, width = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
        return (batch_size, self.unet.config.in_channels, height, width)

    def check_inputs(
        self, batch_size, num_inference_steps, generator, eta, class_labels, guidance_scale, latents, output_type,
        callback_on_step_end, callback_on_step_end_tensor_inputs,
    ):
        for name, value in (("batch_size", batch_size), ("num_inference_steps", num_inference_steps)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise TypeError(f"`{name}` has to be a positive int but is {value!r} of type {type(value)}.")
            if value is not None and value < 1:
                raise ValueError(f"`{name}` has to be a positive int but is {value!r}.")
        num_train_timesteps = self.scheduler.config.num_train_timesteps
        if num_inference_steps is not None and num_inference_steps > num_train_timesteps:
            raise ValueError(
                f"`num_inference_steps` {num_inference_steps} exceeds the scheduler's `num_train_timesteps` "
                f"{num_train_timesteps}; accepted are 1 to {num_train_timesteps}."
            )
        generators = generator if isinstance(generator, list) else [generator]
        if generator is not None and not all(isinstance(g, torch.Generator) for g in generators):
            raise TypeError(
                f"`generator` has to be a torch.Generator or a list of `batch_size` of them but is {generator!r}; "
                "for a seed s pass `torch.Generator().manual_seed(s)`."
            )
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for `batch_size` {batch_size}; give one or {batch_size}.")
        for name, value in (("eta", eta), ("guidance_scale", guidance_scale)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise TypeError(f"`{name}` has to be a float but is {value!r} of type {type(value)}.")
        if eta is not None and not 0 <= eta <= 1:  # eta > 1: DDIM's noise exceeds the noise left, NaN images
            raise ValueError(f"`eta` has to be in [0, 1] but is {eta!r}.")
        if not math.isfinite(guidance_scale):
            raise ValueError(f"`guidance_scale` has to be a finite float but is {guidance_scale!r}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` has to be one of {OUTPUT_TYPES} but is {output_type!r}.")
        num_classes = self.unet.config.get("num_class_embeds")
        if num_classes is None:
            if class_labels is not None:
                raise ValueError(
                    f"`class_labels` were given ({class_labels!r}) but this UNet is unconditional (`num_class_embeds` is None)."
                )
            if guidance_scale != 1.0:
                raise ValueError(
                    f"`guidance_scale` {guidance_scale!r} needs a class-conditional UNet; this one is unconditional. "
                    "Leave it at 1.0."
                )
        elif class_labels is None:
            raise ValueError(
                f"This UNet is class-conditional with {num_classes} classes: pass `class_labels` "
                f"(an int or a list of {batch_size} ints in [0, {num_classes - 1}])."
            )
        if latents is not None:
            if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():
                kind = f"a tensor of dtype {latents.dtype}" if isinstance(latents, torch.Tensor) else type(latents)
                raise TypeError(
                    "`latents` has to be a floating-point torch.Tensor (for a numpy array: `torch.from_numpy(latents)`)"
                    f" but is {kind}."
                )
            shape = self.latents_shape(int(batch_size))
            if tuple(latents.shape) != shape:
                raise ValueError(f"`latents` has shape {tuple(latents.shape)}, expected {shape}.")
            if not torch.isfinite(latents).all():
                raise ValueError("`latents` has non-finite values (NaN or inf), which can only give NaN images.")
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise TypeError(f"`callback_on_step_end` has to be callable but is {callback_on_step_end!r}.")
        if not isinstance(callback_on_step_end_tensor_inputs, (list, tuple)) or any(
            name not in self._callback_tensor_inputs for name in callback_on_step_end_tensor_inputs
        ):
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` is {callback_on_step_end_tensor_inputs!r} but has to be a list "
                f"of names from {self._callback_tensor_inputs}."
            )

    def prepare_class_labels(self, class_labels, batch_size, device):
        try:
            labels = torch.as_tensor(class_labels)
        except (TypeError, ValueError, RuntimeError):
            labels = torch.tensor(0.0)  # refused below
        if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
            raise TypeError(
                f"`class_labels` have to be ints (an int, a list of ints, or an integer tensor or array) but are "
                f"{class_labels!r}; floats are refused, even integral ones like 3.0: pass `int(label)`."
            )
        labels = labels.to(device=device, dtype=torch.long)
        if labels.ndim > 1 or labels.numel() not in (1, batch_size):
            raise ValueError(
                f"Got {labels.numel()} `class_labels` for `batch_size` {batch_size} (shape {tuple(labels.shape)}); "
                f"give 1 or {batch_size}."
            )
        num_classes = self.unet.config.num_class_embeds
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"`class_labels` {labels.flatten().tolist()} out of range: accepted are 0..{num_classes - 1}.")
        return labels.flatten().expand(batch_size)

    def predict_noise(self, latents, t, labels, guidance_scale):
        """The model output at `t`; with classifier-free guidance (Ho & Salimans 2022, eq. 6):
        eps = eps(x, null) + w * (eps(x, c) - eps(x, null))."""
        model_input = self.scheduler.scale_model_input(latents, t)
        if labels is None:
            return self.unet(model_input, t).sample
        if guidance_scale == 1.0:
            return self.unet(model_input, t, class_labels=labels).sample
        null_labels = torch.full_like(labels, self.unet.config.num_class_embeds)
        output = self.unet(torch.cat([model_input] * 2), t, class_labels=torch.cat([labels, null_labels])).sample
        cond, uncond = output.chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    # --- editing inputs -----------------------------------------------------------------------------------------

    def check_edit_inputs(self, image, mask_image, strength, jump_length, jump_n_sample, reconstruction_guidance_scale=0.0):
        if image is None:
            given = [n for n, v in (("mask_image", mask_image), ("strength", strength)) if v is not None]
            if given:
                raise ValueError(f"{', '.join(f'`{n}`' for n in given)} edit an `image`, but no `image` was given.")
        if mask_image is None and (jump_length is not None or jump_n_sample is not None):
            raise ValueError("`jump_length` and `jump_n_sample` are RePaint's resampling for inpainting: pass "
                             "`image` and `mask_image` too.")
        w_r = reconstruction_guidance_scale
        if isinstance(w_r, bool) or not isinstance(w_r, numbers.Real) or not math.isfinite(w_r) or w_r < 0:
            raise ValueError(f"`reconstruction_guidance_scale` has to be a finite float >= 0 but is {w_r!r}.")
        if w_r != 0 and mask_image is None:
            raise ValueError(f"`reconstruction_guidance_scale` {w_r!r} guides inpainting: pass `image` and `mask_image` "
                             "too, or leave it at 0.")
        if strength is not None:
            if isinstance(strength, bool) or not isinstance(strength, numbers.Real):
                raise TypeError(f"`strength` has to be a float in [0, 1] but is {strength!r} of type {type(strength)}.")
            if not 0 <= strength <= 1:  # NaN fails both
                raise ValueError(f"`strength` has to be in [0, 1] but is {strength!r}.")
        for name, value in (("jump_length", jump_length), ("jump_n_sample", jump_n_sample)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise TypeError(f"`{name}` has to be a positive int but is {value!r} of type {type(value)}.")
            if value is not None and value < 1:
                raise ValueError(f"`{name}` has to be a positive int but is {value!r}.")

    def prepare_image(self, image, name: str = "image") -> torch.Tensor:
        """Validates `image` (PIL, numpy or torch; one, a list or a batch) against the UNet's size and channels and
        returns it as a float32 CPU tensor `(N, C, H, W)` in [-1, 1], the model's range."""
        _, channels, height, width = self.latents_shape(1)
        images = _image_batch(image, name, {1: "L", 3: "RGB"}.get(channels))
        self._check_size(images, name, channels)
        if not torch.isfinite(images).all():
            raise ValueError(f"`{name}` has non-finite values (NaN or inf).")
        low, high = images.min().item(), images.max().item()
        if low < 0 or high > 1:
            raise ValueError(
                f"`{name}` has values in [{low:.4g}, {high:.4g}]; accepted are floats in [0, 1] (and uint8 or PIL "
                "images in 0..255), as `output_type` 'np' and 'pt' return them. For an image in [-1, 1] pass "
                "`(image + 1) / 2`."
            )
        return images * 2 - 1

    def prepare_mask(self, mask_image) -> torch.Tensor:
        """Validates `mask_image` (like `image`, one channel) and returns it as a float32 CPU tensor `(N, 1, H, W)` of
        0 (keep the input) and 1 (regenerate)."""
        mask = _image_batch(mask_image, "mask_image", "L")
        self._check_size(mask, "mask_image", 1)
        values = torch.unique(mask)
        if not ((values == 0) | (values == 1)).all():
            raise ValueError(
                f"`mask_image` is not binary: it has the values {values[:6].tolist()}{' ...' if len(values) > 6 else ''}"
                "; accepted are 0 (keep) and 1 (regenerate): floats 0.0 and 1.0, or 0 and 255 in uint8 and PIL images "
                "(white = regenerate). Binarise it first, e.g. `mask > 0.5`."
            )
        return mask

    def _check_size(self, images, name, channels):
        _, _, height, width = self.latents_shape(1)
        if images.shape[1] != channels:
            raise ValueError(
                f"`{name}` has {images.shape[1]} channels (read as (N, C, H, W) = {tuple(images.shape)}) but has to have "
                f"{channels}{' (this UNet takes ' + str(channels) + ')' if name != 'mask_image' else ''}. Layouts: "
                "numpy (H, W, C) or (N, H, W, C), torch (C, H, W) or (N, C, H, W)."
            )
        if tuple(images.shape[2:]) != (height, width):
            raise ValueError(
                f"`{name}` is {images.shape[2]}x{images.shape[3]} (height x width) but this UNet and its images are "
                f"{height}x{width}; resize it first (PIL: `image.resize(({width}, {height}))`)."
            )

    def get_timesteps(self, strength: float, num_inference_steps: int) -> torch.Tensor:
        """The timesteps SDEdit runs for `strength`, in Diffusers' img2img convention: the last floor(strength * n)
        of the n steps `set_timesteps` made, so that the input is noised to the first of them. Refuses a `strength`
        above 0 that keeps no step."""
        order = getattr(self.scheduler, "order", 1)
        n = len(self.scheduler.timesteps) // order
        kept = min(math.floor(n * strength + 1e-9), n)  # 1e-9: 0.7 * 10 is 7.000000000000001, 0.29 * 100 28.999...
        if kept == 0 and strength > 0:
            raise ValueError(
                f"`strength` {strength!r} runs no denoising step: it keeps floor(strength * {n}) = 0 of the {n} steps "
                f"of `num_inference_steps` {num_inference_steps}. Accepted are 0 (the input unchanged) and "
                f"[{1 / n:.4g}, 1]; or raise `num_inference_steps`."
            )
        start = (n - kept) * order
        # Diffusers' multistep schedulers count their steps; at start 0 (strength 1) the input is pure noise, as for
        # generation (SimpleScheduler's analytic first step then applies in full)
        if start > 0 and hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(start)
        return self.scheduler.timesteps[start:]

    # --- the forward process, from the scheduler's alphas_cumprod -----------------------------------------------

    def _abar(self, timestep, device) -> torch.Tensor:
        """abar at a timestep of the schedule, from the scheduler's `alphas_cumprod`: exact at integers (-1: the clean
        image, after the last step, abar = 1); at the fractional timesteps of some schedules, log sigma_t =
        log sqrt((1 - abar_t) / abar_t) interpolated linearly between train timesteps (Diffusers' `_sigma_to_t`)."""
        t = float(timestep)
        table = self.scheduler.alphas_cumprod.double()
        if t < 0:
            return torch.tensor(1.0, device=device)
        low = min(int(math.floor(t)), len(table) - 1)
        if t == low:
            return table[low].float().to(device)
        high, w = min(low + 1, len(table) - 1), t - low
        log_sigma = (1 - w) * 0.5 * torch.log((1 - table[low]) / table[low]) + w * 0.5 * torch.log((1 - table[high]) / table[high])
        return torch.sigmoid(-2 * log_sigma).float().to(device)  # abar = 1 / (1 + sigma^2)

    def noise_to(self, x0: torch.Tensor, noise: torch.Tensor, timestep) -> torch.Tensor:
        """q(x_t | x_0), Ho et al. 2020, eq. 4: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, in float32. The same as
        the scheduler's `add_noise`, which Diffusers' multistep schedulers answer with their step counter rather than
        the timestep they are given once sampling has begun."""
        abar = self._abar(timestep, x0.device)
        return abar.sqrt() * x0.float() + (1 - abar).sqrt() * noise.float()

    def reconstruction_guided_output(
        self, latents, t, labels, guidance_scale, known, mask, weight, level=None
    ) -> torch.Tensor:
        """Reconstruction guidance (Ho et al. 2022, "Video Diffusion Models", eq. 7) for inpainting: the x_0 prediction
        of the regenerated region (mask = 1) is corrected by the gradient of the kept region's reconstruction error,
        x0~ = x0^ - (w_r alpha_t / 2) grad_{x_t} ||(1 - m) (x_known - x0^(x_t))||^2. Returns the model output, in the
        scheduler's `prediction_type`, whose x_0 at the same x_t is x0~: eps~ = eps + alpha / sigma d, v~ = v + d /
        sigma, x0~ = x0^ - d for the correction d (alpha^2 + sigma^2 = 1). `level` is the timestep of the noise level of
        `latents` when the model is called at another timestep `t` (SimpleScheduler's `solver_timesteps`); defaults
        to `t`."""
        abar = self._abar(t if level is None else level, latents.device)
        alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
        prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        with torch.enable_grad():
            x = latents.detach().requires_grad_(True)
            output = self.predict_noise(x, t, labels, guidance_scale)
            if prediction_type == "v_prediction":
                x0 = alpha * x.float() - sigma * output.float()
            elif prediction_type == "sample":
                x0 = output.float()
            else:
                x0 = (x.float() - sigma * output.float()) / alpha
            (gradient,) = torch.autograd.grad(((x0 - known) * (1 - mask)).square().sum(), x)
        d = (weight * alpha / 2) * gradient.float() * mask
        output = output.detach().float()
        if prediction_type == "v_prediction":
            output = output + d / sigma
        elif prediction_type == "sample":
            output = output - d
        else:
            output = output + alpha / sigma * d
        return output.to(latents.dtype)

    def renoise(self, x: torch.Tensor, timestep_from, timestep_to, generator) -> torch.Tensor:
        """q(x_to | x_from) for a noisier `timestep_to`, Ho et al. 2020, eq. 2 over the skipped steps (RePaint, Alg. 1,
        line 10): x_to = sqrt(a) x_from + sqrt(1 - a) z with a = abar_to / abar_from."""
        a = self._abar(timestep_to, x.device) / self._abar(timestep_from, x.device)
        z = randn_tensor(x.shape, generator=generator, device=x.device, dtype=torch.float32)
        return (a.sqrt() * x.float() + (1 - a).sqrt() * z).to(x.dtype)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: Optional[int] = None,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        num_inference_steps: Optional[int] = None,
        eta: Optional[float] = None,
        class_labels: Optional[Union[int, List[int], torch.Tensor]] = None,
        guidance_scale: float = 1.0,
        latents: Optional[torch.Tensor] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Optional[Callable[["SimpleDiffusionPipeline", int, int, Dict], Dict]] = None,
        callback_on_step_end_tensor_inputs: List[str] = ["latents"],
        image=None,
        strength: Optional[float] = None,
        mask_image=None,
        jump_length: Optional[int] = None,
        jump_n_sample: Optional[int] = None,
        reconstruction_guidance_scale: float = 0.0,
    ) -> Union[ImagePipelineOutput, tuple]:
        r"""
        The call function to the pipeline for generation, image-to-image (with `image`) and inpainting (with `image`
        and `mask_image`).

        Args:
            batch_size (`int`, *optional*):
                The number of images to generate (a Python or numpy int). Defaults to the number of images in `image`,
                else 1.
            generator (`torch.Generator` or `List[torch.Generator]`, *optional*):
                A [`torch.Generator`](https://pytorch.org/docs/stable/generated/torch.Generator.html) to make
                generation deterministic; a list of `batch_size` generators makes every image reproducible on its own.
            num_inference_steps (`int`, *optional*):
                The number of denoising steps, at most the scheduler's `num_train_timesteps`. Defaults to
                `num_train_timesteps` for ancestral DDPM sampling (the whole chain) and to 20 (or
                `num_train_timesteps` if fewer) for the others. With `image`, `strength` selects the last of them.
            eta (`float`, *optional*):
                The DDIM noise scale in [0, 1] (0 is deterministic DDIM, 1 is DDPM-like); only used by schedulers whose
                `step` takes `eta`. When not given, the scheduler's own default (`SimpleScheduler`: its `eta` config) applies.
            class_labels (`int`, `List[int]` or `torch.Tensor`, *optional*):
                Classes to generate, one for all images or one per image: ints, or an integer tensor or array. Floats
                are refused, integral ones like 3.0 too. Required for a class-conditional UNet, rejected for an
                unconditional one.
            guidance_scale (`float`, *optional*, defaults to 1.0):
                Classifier-free guidance scale `w`, a finite float; 1.0 is plain conditional sampling. Other values
                need a class-conditional UNet.
            latents (`torch.Tensor`, *optional*):
                Pre-generated Gaussian noise of shape `(batch_size, channels, height, width)` to start from: a finite
                floating-point tensor, cast to the UNet's device and dtype. With `image`, the noise added to it.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"` (`PIL.Image.Image`, mode "L" for one channel), `"np"` (float array in [0, 1], NHWC) or `"pt"`
                (float tensor in [0, 1], NCHW).
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether or not to return an [`~pipelines.ImagePipelineOutput`] instead of a plain tuple.
            callback_on_step_end (`Callable`, *optional*):
                Called at the end of each denoising step as `callback_on_step_end(self, i, t, callback_kwargs)`; the
                tensors named in `callback_on_step_end_tensor_inputs` are in `callback_kwargs`. It must return a dict
                (usually `callback_kwargs`); the tensors in it replace those of the pipeline.
            callback_on_step_end_tensor_inputs (`List[str]`, *optional*, defaults to `["latents"]`):
                The tensors passed to `callback_on_step_end`.
            image (`PIL.Image.Image`, `np.ndarray` or `torch.Tensor`, or a list of them, *optional*):
                Image(s) to edit, of the UNet's size and channels: PIL (converted to mode "L" or "RGB"), numpy
                `(H, W, C)` / `(N, H, W, C)` or torch `(C, H, W)` / `(N, C, H, W)` floats in [0, 1] (uint8: 0..255).
                One image for the whole batch or one per image.
            strength (`float`, *optional*):
                SDEdit's noise level, in [0, 1]: the input is noised to the first of the last floor(strength * n) of
                the n inference steps, which then run. 0 returns the input, 1 generates from pure noise (with
                `mask_image`: RePaint from pure noise). Defaults to 0.8 for image-to-image (as Diffusers'
                img2img pipelines) and 1.0 for inpainting.
            mask_image (like `image`, one channel, *optional*):
                Inpainting mask of the image's size: 1 (white) regenerates a pixel, 0 (black) keeps it; nothing else.
            jump_length (`int`, *optional*, defaults to 10):
                RePaint's resampling: how many steps each jump goes back up (`j` in the paper).
            jump_n_sample (`int`, *optional*, defaults to 1):
                RePaint's resampling: how many times each stretch of `jump_length` steps is denoised (`r` in the paper:
                10 there); 1 is plain replacement, the cost of generation. The UNet runs about
                `jump_n_sample * strength * num_inference_steps` times.
            reconstruction_guidance_scale (`float`, *optional*, defaults to 0.0):
                Inpainting only: the weight `w_r` of reconstruction guidance (Ho et al. 2022), which steers the
                regenerated region by the gradient of the kept region's reconstruction error, so that it agrees with
                what is kept rather than only being pasted next to it. 0 is plain RePaint; each step then also runs a
                backward pass through the UNet (measured: 2.1-2.4x the time of a step).

        Examples:

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`:
                An [`~pipelines.ImagePipelineOutput`] with the images, or a tuple whose first element is the images.
        """
        self.check_edit_inputs(image, mask_image, strength, jump_length, jump_n_sample, reconstruction_guidance_scale)
        init_image = None if image is None else self.prepare_image(image)
        mask = None if mask_image is None else self.prepare_mask(mask_image)
        if batch_size is None:
            batch_size = 1 if init_image is None else len(init_image)
        self.check_inputs(
            batch_size, num_inference_steps, generator, eta, class_labels, guidance_scale, latents, output_type,
            callback_on_step_end, callback_on_step_end_tensor_inputs,
        )
        batch_size, guidance_scale = int(batch_size), float(guidance_scale)  # numpy numbers too
        for name, given in (("image", init_image), ("mask_image", mask)):
            if given is not None and len(given) not in (1, batch_size):
                raise ValueError(f"Got {len(given)} images in `{name}` for `batch_size` {batch_size}; give 1 or {batch_size}.")
        if num_inference_steps is None:
            num_train_timesteps = self.scheduler.config.num_train_timesteps
            ancestral = _is_ancestral_ddpm(self.scheduler)
            num_inference_steps = num_train_timesteps if ancestral else min(DEFAULT_STEPS_FAST, num_train_timesteps)
        num_inference_steps = int(num_inference_steps)

        device = self._execution_device
        labels = None if class_labels is None else self.prepare_class_labels(class_labels, batch_size, device)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        if init_image is not None:
            strength = float((0.8 if mask is None else 1.0) if strength is None else strength)
            timesteps = self.get_timesteps(strength, num_inference_steps)
            init_image = init_image.to(device).expand(batch_size, -1, -1, -1)
        # the noise level of the sample at each of these model calls: the same timesteps, except for SimpleScheduler's
        # calibrated time shifts (`solver_timesteps`)
        levels = getattr(self.scheduler, "solver_timesteps", self.scheduler.timesteps)[
            len(self.scheduler.timesteps) - len(timesteps):]
        if mask is not None:
            mask = mask.to(device).expand(batch_size, -1, -1, -1)
            jump_length, jump_n_sample = jump_length or 10, jump_n_sample or 1
            if jump_n_sample > 1 and jump_length >= len(timesteps):
                raise ValueError(
                    f"`jump_length` {jump_length} leaves no room for RePaint's resampling in the {len(timesteps)} steps "
                    f"that run: accepted are 1 to {len(timesteps) - 1}, or `jump_n_sample` 1."
                )
        # like Diffusers' `prepare_extra_step_kwargs`: not every scheduler's `step` takes `eta` or `generator`
        step_parameters = inspect.signature(self.scheduler.step).parameters
        extra_step_kwargs = {"eta": float(eta)} if eta is not None and "eta" in step_parameters else {}
        if "generator" in step_parameters:
            extra_step_kwargs["generator"] = generator

        dtype = self.unet.dtype
        if init_image is not None and strength == 0:
            latents, timesteps, levels = init_image.to(dtype), timesteps[:0], levels[:0]  # SDEdit at t = 0: the input
        else:
            if latents is None:
                latents = randn_tensor(self.latents_shape(batch_size), generator=generator, device=device, dtype=dtype)
            latents = latents.to(device=device, dtype=dtype)
            if init_image is None or strength == 1:
                latents = latents * self.scheduler.init_noise_sigma  # pure noise, as for generation
            else:  # SDEdit (Meng et al. 2022, Sec. 3): x(t0) ~ N(sqrt(abar_t0) x_input, (1 - abar_t0) I)
                latents = self.noise_to(init_image, latents, levels[0]).to(dtype)

        # Positions along the schedule: p = the number of steps done. Generation and SDEdit go straight down;
        # RePaint also goes back up (re-noising) to resample.
        num_steps = len(timesteps)
        path = list(range(num_steps + 1)) if mask is None else repaint_path(num_steps, jump_length, jump_n_sample)
        begin, restart, i = len(self.scheduler.timesteps) - num_steps, False, 0
        with self.progress_bar(total=sum(b > a for a, b in zip(path, path[1:]))) as progress_bar:
            for position, next_position in zip(path, path[1:]):
                if next_position < position:  # RePaint, Alg. 1, line 10: one step of the forward process
                    t_to = levels[next_position]
                    latents = self.renoise(latents, levels[position] if position < num_steps else -1, t_to, generator)
                    restart = True
                    continue
                if restart:  # after a jump back, multistep solvers start a new history at this position
                    self.scheduler.set_timesteps(num_inference_steps, device=device)
                    if hasattr(self.scheduler, "set_begin_index"):
                        self.scheduler.set_begin_index(begin + position)
                    restart = False
                t = timesteps[position]
                if mask is not None and reconstruction_guidance_scale > 0:
                    model_output = self.reconstruction_guided_output(
                        latents, t, labels, guidance_scale, init_image, mask, reconstruction_guidance_scale,
                        levels[position])
                else:
                    model_output = self.predict_noise(latents, t, labels, guidance_scale)
                latents = self.scheduler.step(model_output, t, latents, **extra_step_kwargs).prev_sample
                if mask is not None:
                    # RePaint, eq. 8: x_{t-1} = m * x_known + (1 - m) * x_unknown, with m the kept region and the known
                    # part the input noised to the new level, q(x_{t-1} | x_0) (the input itself after the last step)
                    if next_position < num_steps:
                        noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=torch.float32)
                        known = self.noise_to(init_image, noise, levels[next_position])
                    else:
                        known = init_image
                    latents = torch.where(mask.bool(), latents, known.to(latents.dtype))
                if callback_on_step_end is not None:
                    callback_kwargs = {name: latents for name in callback_on_step_end_tensor_inputs}  # only "latents"
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    if not isinstance(callback_outputs, dict):
                        raise TypeError(
                            f"`callback_on_step_end` {callback_on_step_end!r} has to return a dict, the `callback_kwargs` "
                            f"it was given with any tensor replaced, but returned {callback_outputs!r} at step {i}."
                        )
                    latents = callback_outputs.pop("latents", latents)
                i += 1
                progress_bar.update()

        image = self.postprocess(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)

    def postprocess(self, latents: torch.Tensor, output_type: str):
        """Model space [-1, 1] to images in [0, 1], as `output_type` says."""
        image = (latents / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            image = image.cpu().permute(0, 2, 3, 1).float().numpy()
            if output_type == "pil":
                image = self.numpy_to_pil(image)
        return image

    # --- inversion and interpolation: the deterministic DDIM ODE ------------------------------------------------

    def model_eps(self, x: torch.Tensor, timestep, labels, guidance_scale) -> torch.Tensor:
        """The noise eps the model predicts at `timestep` (float32), from any `prediction_type`: v = sqrt(abar) eps -
        sqrt(1 - abar) x_0 gives eps = sqrt(abar) v + sqrt(1 - abar) x_t; x_0 gives eps = (x_t - sqrt(abar) x_0) /
        sqrt(1 - abar)."""
        output = self.predict_noise(x.to(self.unet.dtype), timestep, labels, guidance_scale).float()
        prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        abar = self._abar(timestep, x.device)
        if prediction_type == "v_prediction":
            return abar.sqrt() * output + (1 - abar).sqrt() * x.float()
        if prediction_type == "sample":
            return (x.float() - abar.sqrt() * output) / (1 - abar).sqrt()
        return output

    @staticmethod
    def ddim_move(x: torch.Tensor, eps: torch.Tensor, abar_from: torch.Tensor, abar_to: torch.Tensor) -> torch.Tensor:
        """One step of deterministic DDIM (Song et al. 2021, eq. 12 with sigma = 0) from noise level abar_from to
        abar_to, in either direction: x_0 = (x - sqrt(1 - abar_from) eps) / sqrt(abar_from), then
        x' = sqrt(abar_to) x_0 + sqrt(1 - abar_to) eps. For a fixed eps it is exactly invertible (swap the levels)."""
        x0 = (x - (1 - abar_from).sqrt() * eps) / abar_from.sqrt()
        return abar_to.sqrt() * x0 + (1 - abar_to).sqrt() * eps

    def _invert(self, x0, timesteps, eps_fn, fixed_point_iterations):
        # Up the schedule from the clean image (abar = 1) to timesteps[0]. Each step needs eps at its noisier end,
        # which is unknown: take it at the known less noisy sample (Song et al. 2021, Sec. 4.3; Diffusers'
        # DDIMInverseScheduler), then optionally solve x_t = ddim_move(x_s, eps(x_t, t)) by fixed-point iteration
        # (Pan et al. 2023, "Effective Real Image Editing with Accelerated Iterative Diffusion Inversion"), which makes
        # the inversion the exact inverse of the DDIM sampler step when it converges.
        x, abar_s = x0.float(), torch.tensor(1.0, device=x0.device)
        for t in timesteps.flip(0):
            abar_t = self._abar(t, x.device)
            x_t = self.ddim_move(x, eps_fn(x, t), abar_s, abar_t)
            for _ in range(fixed_point_iterations):
                x_t = self.ddim_move(x, eps_fn(x_t, t), abar_s, abar_t)
            x, abar_s = x_t, abar_t
        return x

    def _decode(self, x, timesteps, eps_fn):
        # Down the schedule with deterministic DDIM, to the clean image (abar = 1) after the last step.
        for t, t_next in zip(timesteps, [*timesteps[1:], -1]):
            x = self.ddim_move(x, eps_fn(x, t), self._abar(t, x.device), self._abar(t_next, x.device))
        return x

    def _ode_setup(self, num_inference_steps, batch_size, class_labels, guidance_scale, output_type, generator=None):
        self.check_inputs(batch_size, num_inference_steps, generator, None, class_labels, guidance_scale, None,
                          output_type, None, [])
        if num_inference_steps is None:
            num_inference_steps = min(DEFAULT_STEPS_FAST, self.scheduler.config.num_train_timesteps)
        device = self._execution_device
        labels = None if class_labels is None else self.prepare_class_labels(class_labels, batch_size, device)
        self.scheduler.set_timesteps(int(num_inference_steps), device=device)
        # the deterministic DDIM ODE calls the model where the sample is: at the solver's grid, without calibrated
        # time shifts
        timesteps = getattr(self.scheduler, "solver_timesteps", self.scheduler.timesteps)
        if getattr(self.scheduler, "analytic_first_step_active", False):
            # sampling starts at T - 1 with an analytic step (no model call there): invert up to x_T all the same
            timesteps = torch.cat([timesteps.new_tensor([self.scheduler.config.num_train_timesteps - 1]), timesteps])
        return device, labels, timesteps

    @torch.no_grad()
    def invert(
        self,
        image,
        num_inference_steps: Optional[int] = None,
        class_labels: Optional[Union[int, List[int], torch.Tensor]] = None,
        guidance_scale: float = 1.0,
        fixed_point_iterations: int = 0,
        reconstruct: bool = True,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> Union[SimpleInversionOutput, tuple]:
        r"""
        Deterministic inversion of images to their noise `x_T`: the DDIM ODE (Song et al. 2021, eq. 13; DPM-Solver++
        of order 1 is the same step) integrated from the image up the timesteps of the current scheduler's
        `set_timesteps(num_inference_steps)`, whatever its sampler, and on to `t = T - 1` when the scheduler reaches
        that point with an analytic first step (SimpleScheduler's `analytic_first_step`). Then, with `reconstruct`, the noise is decoded
        back down the same timesteps and the error measured.

        Args:
            image (`PIL.Image.Image`, `np.ndarray` or `torch.Tensor`, or a list of them):
                The images, as for `__call__`.
            num_inference_steps (`int`, *optional*, defaults to 20):
                Steps of the inversion (and of the reconstruction); more steps, smaller error.
            class_labels, guidance_scale:
                As for `__call__`; guidance above 1 makes the inversion less exact.
            fixed_point_iterations (`int`, *optional*, defaults to 0):
                Extra model evaluations per step that make each inverse step solve the DDIM step exactly (0: the
                usual approximation, eps taken at the less noisy sample).
            reconstruct (`bool`, *optional*, defaults to `True`):
                Decode the noise back and report the error (as many model evaluations again).
            output_type (`str`, *optional*, defaults to `"pil"`):
                The type of `reconstruction`: `"pil"`, `"np"` or `"pt"`.
            return_dict (`bool`, *optional*, defaults to `True`):
                Return a [`SimpleInversionOutput`] rather than the tuple `(latents, reconstruction, error)`.
        """
        x0 = self.prepare_image(image)
        if isinstance(fixed_point_iterations, bool) or not isinstance(fixed_point_iterations, numbers.Integral) \
                or fixed_point_iterations < 0:
            raise ValueError(f"`fixed_point_iterations` has to be an int >= 0 but is {fixed_point_iterations!r}.")
        device, labels, timesteps = self._ode_setup(num_inference_steps, len(x0), class_labels, guidance_scale, output_type)
        x0 = x0.to(device)
        guidance_scale = float(guidance_scale)

        def eps_fn(x, t):
            return self.model_eps(x, t, labels, guidance_scale)

        latents = self._invert(x0, timesteps, eps_fn, int(fixed_point_iterations))
        reconstruction = error = None
        if reconstruct:
            decoded = self._decode(latents, timesteps, eps_fn)
            error = ((decoded / 2 + 0.5).clamp(0, 1) - (x0 / 2 + 0.5)).pow(2).mean(dim=(1, 2, 3)).sqrt().cpu()
            reconstruction = self.postprocess(decoded, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (latents, reconstruction, error)
        return SimpleInversionOutput(latents=latents, reconstruction=reconstruction, reconstruction_error=error)

    @torch.no_grad()
    def interpolate(
        self,
        image=None,
        latents: Optional[torch.Tensor] = None,
        class_labels: Optional[Union[int, List[int], torch.Tensor]] = None,
        num_images: int = 5,
        num_inference_steps: Optional[int] = None,
        guidance_scale: float = 1.0,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> Union[ImagePipelineOutput, tuple]:
        r"""
        Images between two end points (Song et al. 2021, Sec. 5.3): their noises z_0 and z_1 are interpolated
        spherically, z_w = slerp(z_0, z_1, w) for `num_images` fractions w evenly from 0 to 1, and each z_w is
        decoded with the DDIM ODE on the current scheduler's timesteps. Between two class labels c_0 and c_1 the
        model's noise predictions are mixed, eps = (1 - w) eps(x, c_0) + w eps(x, c_1) (a geometric mixture of the
        two class-conditional densities).

        Args:
            image (two images, *optional*):
                The end points (a list or batch of two, as for `__call__`), inverted to their noises with
                [`~SimpleDiffusionPipeline.invert`]; the first and last images reconstruct them.
            latents (`torch.Tensor` of shape `(2, channels, height, width)`, *optional*):
                The two noises, e.g. from `invert(...).latents`. With neither `image` nor `latents`, two are drawn.
            class_labels (`int` or two ints, *optional*):
                For a class-conditional UNet: one label for both ends, or the labels of the two ends.
            num_images (`int`, *optional*, defaults to 5):
                The number of images, both ends included (at least 2).
            num_inference_steps (`int`, *optional*, defaults to 20):
                Steps of the inversion and of each decoding.
            guidance_scale, output_type, return_dict:
                As for `__call__`.
            generator (`torch.Generator` or two of them, *optional*):
                Draws the two noises when neither `image` nor `latents` is given.

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`: the `num_images` images, first end to last.
        """
        if image is not None and latents is not None:
            raise ValueError("Pass the end points as `image` or as `latents`, not both.")
        if isinstance(num_images, bool) or not isinstance(num_images, numbers.Integral) or num_images < 2:
            raise ValueError(f"`num_images` has to be an int >= 2 (both ends included) but is {num_images!r}.")
        ends = None if image is None else self.prepare_image(image)
        if ends is not None and len(ends) != 2:
            raise ValueError(f"`image` has {len(ends)} images; interpolation takes 2, the two end points.")
        shape = self.latents_shape(2)
        if latents is not None and (not isinstance(latents, torch.Tensor) or tuple(latents.shape) != shape
                                    or not latents.is_floating_point() or not torch.isfinite(latents).all()):
            described = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents)
            raise ValueError(f"`latents` has to be a finite float tensor of shape {shape} (the two end noises) but is "
                             f"{described}.")
        device, labels, timesteps = self._ode_setup(num_inference_steps, 2, class_labels, guidance_scale, output_type,
                                                    generator)
        guidance_scale = float(guidance_scale)

        if ends is not None:
            latents = self._invert(ends.to(device), timesteps, lambda x, t: self.model_eps(x, t, labels, guidance_scale), 0)
        elif latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        latents = latents.to(device=device, dtype=torch.float32)

        weights = torch.linspace(0, 1, int(num_images), device=device)
        frames = torch.stack([slerp(latents[0], latents[1], w.item()) for w in weights])
        w = weights.view(-1, 1, 1, 1)
        labels_0 = labels_1 = None
        if labels is not None:
            labels_0, labels_1 = labels[0].expand(len(weights)), labels[1].expand(len(weights))

        def eps_fn(x, t):
            eps = self.model_eps(x, t, labels_0, guidance_scale)
            if labels is not None and labels[0] != labels[1]:
                eps = (1 - w) * eps + w * self.model_eps(x, t, labels_1, guidance_scale)
            return eps

        images = self.postprocess(self._decode(frames, timesteps, eps_fn), output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    def save_pretrained(self, save_directory: Union[str, os.PathLike], push_to_hub: bool = False, **kwargs):
        """Saves like [`DiffusionPipeline.save_pretrained`], then makes the folder self-contained: the source file of
        every class that is not part of Diffusers is copied next to its weights and `model_index.json` names it
        (`["pipeline_simple", "SimpleDiffusionPipeline"]`, `unet/unet_simple.py`, ...), the layout Diffusers uses for
        custom pipelines and components. Load it with `DiffusionPipeline.from_pretrained(path, trust_remote_code=True)`."""
        push_kwargs = {k: kwargs.pop(k) for k in ("repo_id", "commit_message", "private", "token", "create_pr") if k in kwargs}
        super().save_pretrained(save_directory, **kwargs)

        index_path = os.path.join(save_directory, "model_index.json")
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
        for key, obj, folder in [("_class_name", self, ""), ("unet", self.unet, "unet"), ("scheduler", self.scheduler, "scheduler")]:
            cls = type(obj)
            if cls.__module__.split(".")[0] == "diffusers":
                continue  # a stock Diffusers class: loads by name
            source = inspect.getsourcefile(cls)
            stem = os.path.splitext(os.path.basename(source))[0]
            shutil.copyfile(source, os.path.join(save_directory, folder, stem + ".py"))
            index[key] = [stem, cls.__name__]
        with tempfile.NamedTemporaryFile("w", dir=save_directory, delete=False, suffix=".tmp", encoding="utf-8") as f:
            json.dump(index, f, indent=2, sort_keys=True)
            f.write("\n")
        shutil.copymode(index_path, f.name)  # the permissions Diffusers gave it, not the temporary file's 0600
        os.replace(f.name, index_path)

        if push_to_hub:
            repo_id = push_kwargs.pop("repo_id", None) or os.path.basename(os.path.normpath(save_directory))
            self.push_to_hub(repo_id, **push_kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], **kwargs):
        """Loads a saved pipeline. Where this class comes from the installed `diffusers_simple` package, its own
        classes load the components and no code from the checkpoint runs, so `trust_remote_code` is not needed.
        Otherwise (or with `trust_remote_code=True`) this is [`DiffusionPipeline.from_pretrained`]."""
        package = sys.modules.get(cls.__module__.rpartition(".")[0])  # diffusers_simple, when installed
        if kwargs.get("trust_remote_code") or not hasattr(package, "SimpleUNet"):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

        hub_kwargs = {k: kwargs.pop(k) for k in ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision") if k in kwargs}
        model_kwargs = {k: kwargs.pop(k) for k in ("torch_dtype", "variant", "use_safetensors") if k in kwargs}
        components = {name: kwargs.pop(name) for name in ("unet", "scheduler") if name in kwargs}
        if kwargs:
            raise ValueError(f"Unexpected arguments {sorted(kwargs)} for {cls.__name__}.from_pretrained.")

        index = cls.load_config(pretrained_model_name_or_path, **hub_kwargs)
        for name in ("unet", "scheduler"):
            if name in components:
                continue
            class_name = index[name][1]
            component_cls = getattr(package, class_name, None) or getattr(diffusers, class_name, None)
            if component_cls is None:
                raise ValueError(f"`{name}` is a {class_name}, which neither diffusers_simple nor diffusers provides.")
            load_kwargs = dict(hub_kwargs, **(model_kwargs if name == "unet" else {}))
            components[name] = component_cls.from_pretrained(pretrained_model_name_or_path, subfolder=name, **load_kwargs)
        pipeline = cls(**components)
        pipeline.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
        return pipeline
