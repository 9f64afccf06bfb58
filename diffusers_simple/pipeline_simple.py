# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""SimpleDiffusionPipeline: sample images from a SimpleUNet with any DDPM-family scheduler.

Self-contained on purpose: this file imports only the standard library, torch and diffusers, because
`save_pretrained` copies it (and the UNet and scheduler files) into every checkpoint, so that
`DiffusionPipeline.from_pretrained(path, trust_remote_code=True)` works where diffusers_simple is not installed.
"""

import inspect
import json
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
# Steps used when `num_inference_steps` is not given: ancestral DDPM needs the whole chain, the others do not.
DEFAULT_STEPS_ANCESTRAL = 1000
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

    def check_inputs(self, batch_size, num_inference_steps, class_labels, guidance_scale, output_type, latents, shape):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` has to be a positive integer but is {batch_size!r}.")
        if num_inference_steps is not None and (not isinstance(num_inference_steps, int) or num_inference_steps < 1):
            raise ValueError(f"`num_inference_steps` has to be a positive integer but is {num_inference_steps!r}.")
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
        if latents is not None and tuple(latents.shape) != shape:
            raise ValueError(f"`latents` has shape {tuple(latents.shape)}, expected {shape}.")

    def prepare_class_labels(self, class_labels, batch_size, device):
        labels = torch.as_tensor(class_labels, device=device).long().flatten()
        if labels.numel() == 1:
            labels = labels.expand(batch_size)
        num_classes = self.unet.config.num_class_embeds
        if labels.numel() != batch_size:
            raise ValueError(f"Got {labels.numel()} `class_labels` for `batch_size` {batch_size}; give 1 or {batch_size}.")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"`class_labels` {labels.tolist()} out of range: accepted are 0..{num_classes - 1}.")
        return labels

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
                The number of images to generate.
            generator (`torch.Generator` or `List[torch.Generator]`, *optional*):
                A [`torch.Generator`](https://pytorch.org/docs/stable/generated/torch.Generator.html) to make
                generation deterministic; a list of `batch_size` generators makes every image reproducible on its own.
            num_inference_steps (`int`, *optional*):
                The number of denoising steps. Defaults to 1000 for ancestral DDPM sampling and 20 for the others.
            eta (`float`, *optional*):
                The DDIM noise scale (0 is deterministic DDIM, 1 is DDPM-like); only used by schedulers whose `step`
                takes `eta`. When not given, the scheduler's own default (`SimpleScheduler`: its `eta` config) applies.
            class_labels (`int`, `List[int]` or `torch.Tensor`, *optional*):
                Classes to generate, one for all images or one per image. Required for a class-conditional UNet,
                rejected for an unconditional one.
            guidance_scale (`float`, *optional*, defaults to 1.0):
                Classifier-free guidance scale `w`; 1.0 is plain conditional sampling. Needs a class-conditional UNet.
            latents (`torch.Tensor`, *optional*):
                Pre-generated Gaussian noise of shape `(batch_size, channels, height, width)` to start from.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"` (`PIL.Image.Image`, mode "L" for one channel), `"np"` (float array in [0, 1], NHWC) or `"pt"`
                (float tensor in [0, 1], NCHW).
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether or not to return an [`~pipelines.ImagePipelineOutput`] instead of a plain tuple.
            callback_on_step_end (`Callable`, *optional*):
                Called at the end of each step as `callback_on_step_end(self, i, t, callback_kwargs)`; the tensors named
                in `callback_on_step_end_tensor_inputs` are in `callback_kwargs`, and those it returns replace them.
            callback_on_step_end_tensor_inputs (`List[str]`, *optional*, defaults to `["latents"]`):
                The tensors passed to `callback_on_step_end`.

        Examples:

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`:
                An [`~pipelines.ImagePipelineOutput`] with the images, or a tuple whose first element is the images.
        """
        sample_size = self.unet.config.sample_size
        height, width = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
        shape = (batch_size, self.unet.config.in_channels, height, width)
        self.check_inputs(batch_size, num_inference_steps, class_labels, guidance_scale, output_type, latents, shape)
        for name in callback_on_step_end_tensor_inputs:
            if name not in self._callback_tensor_inputs:
                raise ValueError(f"`callback_on_step_end_tensor_inputs` has {name!r}; accepted: {self._callback_tensor_inputs}.")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for `batch_size` {batch_size}; give one or {batch_size}.")
        if num_inference_steps is None:
            num_inference_steps = DEFAULT_STEPS_ANCESTRAL if _is_ancestral_ddpm(self.scheduler) else DEFAULT_STEPS_FAST

        device = self._execution_device
        labels = None if class_labels is None else self.prepare_class_labels(class_labels, batch_size, device)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
        latents = latents.to(device=device, dtype=self.unet.dtype) * self.scheduler.init_noise_sigma

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        takes_eta = "eta" in inspect.signature(self.scheduler.step).parameters
        extra_step_kwargs = {"eta": eta} if eta is not None and takes_eta else {}

        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            model_output = self.predict_noise(latents, t, labels, guidance_scale)
            latents = self.scheduler.step(model_output, t, latents, generator=generator, **extra_step_kwargs).prev_sample
            if callback_on_step_end is not None:
                callback_kwargs = {name: latents for name in callback_on_step_end_tensor_inputs}  # only "latents" exists
                latents = callback_on_step_end(self, i, t, callback_kwargs).pop("latents", latents)

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
