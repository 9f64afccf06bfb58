# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""SimpleDiffusionPipeline: sample images from a SimpleUNet with any DDPM-family scheduler.

Self-contained on purpose: this file imports only the standard library, torch and diffusers, because
`save_pretrained` copies it (and the UNet and scheduler files) into every checkpoint, so that
`DiffusionPipeline.from_pretrained(path, trust_remote_code=True)` works where diffusers_simple is not installed.
"""

import inspect
import json
import math
import numbers
import os
import shutil
import sys
import tempfile
from typing import Callable, Dict, List, Optional, Union

import torch

import diffusers
from diffusers import DiffusionPipeline, ImagePipelineOutput
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

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
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
    ) -> Union[ImagePipelineOutput, tuple]:
        r"""
        The call function to the pipeline for generation.

        Args:
            batch_size (`int`, *optional*, defaults to 1):
                The number of images to generate (a Python or numpy int).
            generator (`torch.Generator` or `List[torch.Generator]`, *optional*):
                A [`torch.Generator`](https://pytorch.org/docs/stable/generated/torch.Generator.html) to make
                generation deterministic; a list of `batch_size` generators makes every image reproducible on its own.
            num_inference_steps (`int`, *optional*):
                The number of denoising steps, at most the scheduler's `num_train_timesteps`. Defaults to
                `num_train_timesteps` for ancestral DDPM sampling (the whole chain) and to 20 (or
                `num_train_timesteps` if fewer) for the others.
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
                floating-point tensor, cast to the UNet's device and dtype.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"` (`PIL.Image.Image`, mode "L" for one channel), `"np"` (float array in [0, 1], NHWC) or `"pt"`
                (float tensor in [0, 1], NCHW).
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether or not to return an [`~pipelines.ImagePipelineOutput`] instead of a plain tuple.
            callback_on_step_end (`Callable`, *optional*):
                Called at the end of each step as `callback_on_step_end(self, i, t, callback_kwargs)`; the tensors named
                in `callback_on_step_end_tensor_inputs` are in `callback_kwargs`. It must return a dict (usually
                `callback_kwargs`); the tensors in it replace those of the pipeline.
            callback_on_step_end_tensor_inputs (`List[str]`, *optional*, defaults to `["latents"]`):
                The tensors passed to `callback_on_step_end`.

        Examples:

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`:
                An [`~pipelines.ImagePipelineOutput`] with the images, or a tuple whose first element is the images.
        """
        self.check_inputs(
            batch_size, num_inference_steps, generator, eta, class_labels, guidance_scale, latents, output_type,
            callback_on_step_end, callback_on_step_end_tensor_inputs,
        )
        batch_size, guidance_scale = int(batch_size), float(guidance_scale)  # numpy numbers too
        if num_inference_steps is None:
            num_train_timesteps = self.scheduler.config.num_train_timesteps
            ancestral = _is_ancestral_ddpm(self.scheduler)
            num_inference_steps = num_train_timesteps if ancestral else min(DEFAULT_STEPS_FAST, num_train_timesteps)

        device = self._execution_device
        labels = None if class_labels is None else self.prepare_class_labels(class_labels, batch_size, device)
        self.scheduler.set_timesteps(int(num_inference_steps), device=device)
        takes_eta = "eta" in inspect.signature(self.scheduler.step).parameters
        extra_step_kwargs = {"eta": float(eta)} if eta is not None and takes_eta else {}

        if latents is None:
            latents = randn_tensor(self.latents_shape(batch_size), generator=generator, device=device, dtype=self.unet.dtype)
        latents = latents.to(device=device, dtype=self.unet.dtype) * self.scheduler.init_noise_sigma

        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            model_output = self.predict_noise(latents, t, labels, guidance_scale)
            latents = self.scheduler.step(model_output, t, latents, generator=generator, **extra_step_kwargs).prev_sample
            if callback_on_step_end is not None:
                callback_kwargs = {name: latents for name in callback_on_step_end_tensor_inputs}  # only "latents" exists
                callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                if not isinstance(callback_outputs, dict):
                    raise TypeError(
                        f"`callback_on_step_end` {callback_on_step_end!r} has to return a dict, the `callback_kwargs` "
                        f"it was given with any tensor replaced, but returned {callback_outputs!r} at step {i}."
                    )
                latents = callback_outputs.pop("latents", latents)

        image = (latents / 2 + 0.5).clamp(0, 1)
        self.maybe_free_model_hooks()
        if output_type != "pt":
            image = image.cpu().permute(0, 2, 3, 1).float().numpy()
            if output_type == "pil":
                image = self.numpy_to_pil(image)
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)

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
