"""diffusers-simple: the classic denoising-diffusion recipe as a small, readable Diffusers plugin.

`SimpleUNet`, `SimpleScheduler` and `SimpleDiffusionPipeline` each live in one self-contained file (standard library,
numpy, torch and diffusers only) that `SimpleDiffusionPipeline.save_pretrained` copies into every checkpoint.
"""

from .pipeline_simple import SimpleDiffusionPipeline
from .scheduling_simple import SimpleScheduler, SimpleSchedulerOutput
from .unet_simple import SimpleUNet, SimpleUNetOutput

__version__ = "0.1.0"
__all__ = ["SimpleDiffusionPipeline", "SimpleScheduler", "SimpleSchedulerOutput", "SimpleUNet", "SimpleUNetOutput"]
