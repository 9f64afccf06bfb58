"""SimpleDiffusionPipeline: sampling, outputs, errors, and self-contained checkpoints."""

import json
import os
import re
import sys

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DiffusionPipeline,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UNet2DModel,
    UniPCMultistepScheduler,
)

import diffusers_simple
from diffusers_simple import SimpleDiffusionPipeline, SimpleScheduler, SimpleUNet
from conftest import run_without_package

PACKAGE_DIR = os.path.dirname(diffusers_simple.__file__)
TINY_UNET = dict(sample_size=8, block_out_channels=(16, 32), layers_per_block=1, attention_levels=(False, True),
                 norm_num_groups=8, attention_head_dim=8)


def tiny_pipeline(in_channels=3, num_class_embeds=None, sampler="dpmsolver++", seed=0):
    torch.manual_seed(seed)
    unet = SimpleUNet(in_channels=in_channels, out_channels=in_channels, num_class_embeds=num_class_embeds, **TINY_UNET)
    with torch.no_grad():  # zero-initialised output layers would hide the conditioning: give every weight a value
        for p in unet.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    pipe = SimpleDiffusionPipeline(unet=unet.eval(), scheduler=SimpleScheduler(sampler=sampler))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def saved_dir(pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("pipe")
    pipe.save_pretrained(path)
    return path


def rounding_bound(latents, units=100):
    """The largest difference allowed between two float32 samplings that differ only in rounding (a batch of two runs
    other kernels than one image): `units` units of float32 roundoff (u = 2**-24) times the largest |latent|.

    Derivation: measured with the tiny UNet over 4 steps, a float32 sampling differs from the same sampling with the
    UNet in float64 by 2-3 u times the largest |latent|, and a batch of two from single images by 2-8 u (each UNet
    pass sums at most 9 * 64 = 576 products per output over ~10 layers, and GroupNorms keep the activations O(1)).
    100 u leave more than 10x for other CPUs and vector units, and are 1e5 times smaller than the effect of other
    noise or another label (the size of the latents themselves)."""
    return units * torch.finfo(torch.float32).eps / 2 * latents.abs().max().item()


def sample(pipe, seed=0, **kwargs):
    kwargs = {"num_inference_steps": 4, "output_type": "np", "generator": torch.Generator().manual_seed(seed), **kwargs}
    return pipe(**kwargs).images


# --- sampling -------------------------------------------------------------------------------------------------------


def test_output_types(pipe):
    images_np = sample(pipe, batch_size=2)
    assert images_np.shape == (2, 8, 8, 3) and images_np.dtype == np.float32
    assert 0.0 <= images_np.min() and images_np.max() <= 1.0
    images_pt = sample(pipe, batch_size=2, output_type="pt")
    assert images_pt.shape == (2, 3, 8, 8)
    np.testing.assert_array_equal(images_pt.permute(0, 2, 3, 1).numpy(), images_np)
    images_pil = sample(pipe, batch_size=2, output_type="pil")
    assert len(images_pil) == 2 and images_pil[0].size == (8, 8) and images_pil[0].mode == "RGB"
    assert isinstance(pipe(num_inference_steps=2, output_type="np", return_dict=False), tuple)


def test_grayscale_model_gives_grayscale_pil():
    images = sample(tiny_pipeline(in_channels=1), output_type="pil")
    assert images[0].mode == "L" and images[0].size == (8, 8)


def test_same_seed_same_images_other_seed_other_images(pipe):
    np.testing.assert_array_equal(sample(pipe, seed=3), sample(pipe, seed=3))
    assert not np.allclose(sample(pipe, seed=3), sample(pipe, seed=4))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver++"])
def test_generator_list_gives_per_image_reproducibility(sampler):
    pipe = tiny_pipeline(sampler=sampler)
    # Latents, not images: the untrained UNet saturates nearly every pixel of the images to 0 or 1.
    batch = final_latents(pipe, batch_size=2, generator=[torch.Generator().manual_seed(s) for s in (7, 8)])
    single = final_latents(pipe, seed=8)
    torch.testing.assert_close(batch[1:], single, rtol=0, atol=rounding_bound(single))


class StopSampling(Exception):
    pass


@pytest.mark.parametrize("scheduler, expected_steps", [
    (SimpleScheduler(sampler="dpmsolver++"), 20), (SimpleScheduler(sampler="ddim"), 20),
    (SimpleScheduler(sampler="ddpm"), 1000), (DDPMScheduler(), 1000), (DDIMScheduler(), 20),
    # derived from the scheduler's config: the whole chain for ancestral DDPM, never more than it
    (SimpleScheduler(sampler="ddpm", num_train_timesteps=100), 100), (DDPMScheduler(num_train_timesteps=100), 100),
    (SimpleScheduler(sampler="ddim", num_train_timesteps=10), 10), (DDIMScheduler(num_train_timesteps=10), 10),
])
def test_default_steps_depend_on_sampler(pipe, scheduler, expected_steps):
    def stop_at_first_step(pipe, i, t, kwargs):
        raise StopSampling(pipe.scheduler.num_inference_steps)
    with pytest.raises(StopSampling) as stopped:
        SimpleDiffusionPipeline(unet=pipe.unet, scheduler=scheduler)(callback_on_step_end=stop_at_first_step)
    assert stopped.value.args[0] == expected_steps


def test_callback_on_step_end_sees_and_replaces_latents(pipe):
    steps = []
    def zero_latents(pipe, i, t, kwargs):
        steps.append(i)
        return {"latents": torch.zeros_like(kwargs["latents"])}
    images = sample(pipe, num_inference_steps=3, callback_on_step_end=zero_latents)
    assert steps == [0, 1, 2]
    np.testing.assert_allclose(images, 0.5)  # latents 0 decode to mid-grey


def test_given_latents_are_used(pipe):
    latents = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a = pipe(latents=latents, num_inference_steps=3, output_type="np").images
    b = pipe(latents=latents, num_inference_steps=3, output_type="np").images
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("reference_pipeline, scheduler_cls, extra", [
    (DDPMPipeline, DDPMScheduler, {}),
    (DDIMPipeline, DDIMScheduler, {"eta": 0.5}),
])
def test_same_images_as_diffusers_pipelines(reference_pipeline, scheduler_cls, extra):
    """Our denoising loop, given Diffusers' own UNet and scheduler, reproduces DDPMPipeline / DDIMPipeline."""
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    reference = reference_pipeline(unet=unet, scheduler=scheduler_cls(num_train_timesteps=1000))
    ours = SimpleDiffusionPipeline(unet=unet, scheduler=scheduler_cls(num_train_timesteps=1000))
    for p in (reference, ours):
        p.set_progress_bar_config(disable=True)
    expected = reference(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=5,
                         output_type="np", **extra).images
    np.testing.assert_array_equal(sample(ours, batch_size=2, num_inference_steps=5, **extra), expected)


def final_latents(pipe, **kwargs):
    """The last latents before they are clamped to images (an untrained UNet saturates the images)."""
    seen = []
    def keep(pipe, i, t, callback_kwargs):
        seen.append(callback_kwargs["latents"])
        return callback_kwargs
    sample(pipe, callback_on_step_end=keep, **kwargs)
    return seen[-1]


def test_classifier_free_guidance():
    pipe = tiny_pipeline(num_class_embeds=3)
    plain = final_latents(pipe, class_labels=1)
    assert not torch.allclose(plain, final_latents(pipe, class_labels=2))
    torch.testing.assert_close(plain, final_latents(pipe, class_labels=[1]), rtol=0, atol=0)
    guided = final_latents(pipe, class_labels=1, guidance_scale=3.0)
    assert torch.isfinite(guided).all() and not torch.allclose(plain, guided)
    generators = [torch.Generator().manual_seed(s) for s in (5, 0)]
    per_image = final_latents(pipe, batch_size=2, class_labels=torch.tensor([0, 2]), generator=generators)
    single = final_latents(pipe, class_labels=2)
    torch.testing.assert_close(per_image[1:], single, rtol=0, atol=rounding_bound(single))


def no_unet_call(pipe):
    """Fails the test if `pipe.unet` runs: input errors must come before any work."""
    def fail(*args):
        raise AssertionError("the UNet ran before the input error")
    return pipe.unet.register_forward_pre_hook(fail)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"output_type": "latent"}, ValueError, r"output_type.*\('pil', 'np', 'pt'\).*'latent'"),
    ({"output_type": None}, ValueError, r"output_type.*\('pil', 'np', 'pt'\).*None"),
    ({"class_labels": 1}, ValueError, r"class_labels.*1.*unconditional"),
    ({"guidance_scale": 5.0}, ValueError, r"guidance_scale.*5\.0.*unconditional"),
    ({"guidance_scale": float("nan")}, ValueError, r"`guidance_scale` has to be a finite float but is nan"),
    ({"guidance_scale": "7"}, TypeError, r"`guidance_scale` has to be a float but is '7'"),
    ({"batch_size": 0}, ValueError, r"batch_size.*0"),
    ({"batch_size": True}, TypeError, r"`batch_size` has to be a positive int but is True of type <class 'bool'>"),
    ({"batch_size": 2.0}, TypeError, r"`batch_size` has to be a positive int but is 2\.0 of type <class 'float'>"),
    ({"num_inference_steps": 0}, ValueError, r"num_inference_steps.*0"),
    ({"num_inference_steps": np.float64(3)}, TypeError, r"`num_inference_steps` has to be a positive int"),
    ({"num_inference_steps": 1001}, ValueError, r"`num_inference_steps` 1001 exceeds .* `num_train_timesteps` 1000"),
    ({"eta": 1.5}, ValueError, r"`eta` has to be in \[0, 1\] but is 1\.5"),
    ({"eta": float("nan")}, ValueError, r"`eta` has to be in \[0, 1\] but is nan"),
    ({"generator": 0}, TypeError, r"`generator` has to be a torch.Generator .* but is 0; .*manual_seed"),
    ({"generator": [0]}, TypeError, r"`generator` has to be a torch.Generator .* but is \[0\]"),
    ({"batch_size": 2, "generator": [torch.Generator()]}, ValueError, r"1 generators.*2"),
    ({"latents": torch.zeros(1, 3, 4, 4)}, ValueError, r"latents.*\(1, 3, 4, 4\).*\(1, 3, 8, 8\)"),
    ({"latents": np.zeros((1, 3, 8, 8), np.float32)}, TypeError, r"`latents` has to be a floating-point torch.Tensor "
                                                                 r"\(for a numpy array: .*numpy.ndarray"),
    ({"latents": torch.zeros(1, 3, 8, 8, dtype=torch.int64)}, TypeError, r"floating-point .* dtype torch.int64"),
    ({"latents": torch.full((1, 3, 8, 8), float("inf"))}, ValueError, r"`latents` has non-finite values"),
    ({"callback_on_step_end": "print"}, TypeError, r"`callback_on_step_end` has to be callable but is 'print'"),
    ({"callback_on_step_end_tensor_inputs": ["noise"]}, ValueError, r"'noise'.*latents"),
    ({"callback_on_step_end_tensor_inputs": "latents"}, ValueError, r"is 'latents' but has to be a list"),
])
def test_bad_input_unconditional(pipe, kwargs, error, match):
    with no_unet_call(pipe), pytest.raises(error, match=match):
        pipe(**kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    ({}, ValueError, r"class-conditional with 3 classes.*class_labels"),
    ({"class_labels": 3}, ValueError, r"\[3\] out of range.*0\.\.2"),
    ({"class_labels": -1}, ValueError, r"\[-1\] out of range.*0\.\.2"),
    ({"class_labels": [0, 1, 2], "batch_size": 2}, ValueError, r"3 `class_labels` for `batch_size` 2"),
    ({"class_labels": torch.tensor([[0], [1]]), "batch_size": 2}, ValueError, r"2 `class_labels` .*\(shape \(2, 1\)\)"),
    # floats are refused, not truncated, even integral ones
    ({"class_labels": 1.7}, TypeError, r"`class_labels` have to be ints .* but are 1\.7; floats are refused"),
    ({"class_labels": 1.0}, TypeError, r"but are 1\.0; floats are refused, even integral ones"),
    ({"class_labels": [1, 2.5], "batch_size": 2}, TypeError, r"but are \[1, 2\.5\]"),
    ({"class_labels": torch.tensor([1.0])}, TypeError, r"but are tensor\(\[1\.\]\)"),
    ({"class_labels": True}, TypeError, r"`class_labels` have to be ints"),
    ({"class_labels": "1"}, TypeError, r"`class_labels` have to be ints .* but are '1'"),
    ({"class_labels": 1, "guidance_scale": float("inf")}, ValueError, r"`guidance_scale` .* finite float but is inf"),
])
def test_bad_input_conditional(kwargs, error, match):
    pipe = tiny_pipeline(num_class_embeds=3)
    with no_unet_call(pipe), pytest.raises(error, match=match):
        pipe(num_inference_steps=1, **kwargs)


def test_numpy_numbers_work_like_python_numbers():
    pipe = tiny_pipeline(num_class_embeds=3)
    python = final_latents(pipe, batch_size=2, num_inference_steps=3, class_labels=[0, 2], guidance_scale=2.0, eta=0.5)
    numpy = final_latents(pipe, batch_size=np.int64(2), num_inference_steps=np.int32(3),
                          class_labels=np.array([0, 2]), guidance_scale=np.float32(2.0), eta=np.float64(0.5))
    torch.testing.assert_close(numpy, python, rtol=0, atol=0)
    # Integer tensors of any integer dtype are labels too.
    labels = torch.tensor([0, 2], dtype=torch.int32)
    torch.testing.assert_close(final_latents(pipe, batch_size=2, num_inference_steps=3, class_labels=labels,
                                             guidance_scale=2.0, eta=0.5), python, rtol=0, atol=0)


@pytest.mark.parametrize("returned", [None, "latents", [1]])
def test_callback_has_to_return_a_dict(pipe, returned):
    def forgetful_callback(pipe, i, t, callback_kwargs):
        return returned
    with pytest.raises(TypeError, match=rf"`callback_on_step_end` <function .*forgetful_callback .* has to return a "
                                        rf"dict, .* but returned {re.escape(repr(returned))} at step 0"):
        pipe(num_inference_steps=2, callback_on_step_end=forgetful_callback)


def test_half_precision_unet_takes_float32_latents():
    pipe = tiny_pipeline()
    latents = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = final_latents(pipe, latents=latents)
    pipe.unet.to(torch.float16)
    out = final_latents(pipe, latents=latents)  # cast to the UNet's dtype, as Diffusers' pipelines do
    assert out.dtype == torch.float16
    # 4 steps of a half-precision UNet: a few units of fp16 roundoff per pass (see tests/test_unet.py)
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=40 * 2**-11 * expected.abs().max().item())


# --- saving and loading ---------------------------------------------------------------------------------------------


def test_saved_folder_carries_the_package_code(saved_dir):
    index = json.loads((saved_dir / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_simple", "SimpleDiffusionPipeline"]
    assert index["unet"] == ["unet_simple", "SimpleUNet"]
    assert index["scheduler"] == ["scheduling_simple", "SimpleScheduler"]
    for copied in ["pipeline_simple.py", "unet/unet_simple.py", "scheduler/scheduling_simple.py"]:
        original = os.path.join(PACKAGE_DIR, os.path.basename(copied))
        assert (saved_dir / copied).read_bytes() == open(original, "rb").read()
    assert (saved_dir / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert not list(saved_dir.rglob("*.bin")) and not list(saved_dir.rglob("*.pt"))
    # model_index.json is rewritten through a temporary file: it keeps the permissions of the files Diffusers wrote
    assert (saved_dir / "model_index.json").stat().st_mode == (saved_dir / "unet" / "config.json").stat().st_mode


@pytest.mark.parametrize("module", ["pipeline_simple", "unet_simple", "scheduling_simple"])
def test_copied_modules_import_only_stdlib_numpy_torch_diffusers(module):
    import ast
    tree = ast.parse(open(os.path.join(PACKAGE_DIR, module + ".py")).read())
    roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0}
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level > 0]
    assert roots - {"numpy", "torch", "diffusers"} <= set(sys.stdlib_module_names), roots


def test_from_pretrained_with_package_needs_no_remote_code(pipe, saved_dir):
    loaded = SimpleDiffusionPipeline.from_pretrained(saved_dir)
    assert type(loaded.unet) is SimpleUNet and type(loaded.scheduler) is SimpleScheduler
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(sample(loaded), sample(pipe))


def test_diffusion_pipeline_refuses_without_trust_remote_code(saved_dir):
    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(saved_dir)


@pytest.mark.slow
def test_loads_with_trust_remote_code_where_package_cannot_be_imported(pipe, saved_dir, tmp_path):
    """A fresh interpreter in which `import diffusers_simple` fails loads the folder from its own code and samples."""
    expected = sample(pipe)
    np.save(tmp_path / "expected.npy", expected)
    script = f"""
        import numpy as np, torch
        from diffusers import DiffusionPipeline
        pipe = DiffusionPipeline.from_pretrained({str(saved_dir)!r}, trust_remote_code=True)
        assert type(pipe).__name__ == "SimpleDiffusionPipeline", type(pipe)
        assert not type(pipe).__module__.startswith("diffusers_simple"), type(pipe).__module__
        assert type(pipe.unet).__name__ == "SimpleUNet" and type(pipe.scheduler).__name__ == "SimpleScheduler"
        pipe.set_progress_bar_config(disable=True)
        images = pipe(generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np").images
        np.testing.assert_array_equal(images, np.load({str(tmp_path / "expected.npy")!r}))
        pipe.save_pretrained({str(tmp_path / "resaved")!r})  # a remote-loaded pipeline saves self-contained too
        print("REMOTE-OK")
    """
    result = run_without_package(script, tmp_path)
    assert "REMOTE-OK" in result.stdout, result.stderr[-3000:]
    for copied in ["pipeline_simple.py", "unet/unet_simple.py", "scheduler/scheduling_simple.py"]:
        assert (tmp_path / "resaved" / copied).read_bytes() == (saved_dir / copied).read_bytes()


def test_unet_plugs_into_stock_ddpm_pipeline(saved_dir):
    ddpm = DDPMPipeline(unet=SimpleUNet.from_pretrained(saved_dir, subfolder="unet"),
                        scheduler=DDPMScheduler.from_pretrained(saved_dir, subfolder="scheduler"))
    ddpm.set_progress_bar_config(disable=True)
    images = ddpm(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=3, output_type="np").images
    assert images.shape == (2, 8, 8, 3) and np.isfinite(images).all()


def test_swap_scheduler_and_back(saved_dir, tmp_path):
    pipe = SimpleDiffusionPipeline.from_pretrained(saved_dir)
    pipe.set_progress_bar_config(disable=True)
    original = pipe.scheduler
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    torch.testing.assert_close(pipe.scheduler.alphas_cumprod, original.alphas_cumprod, rtol=0, atol=0)
    assert np.isfinite(sample(pipe)).all()

    pipe.save_pretrained(tmp_path)  # a stock scheduler is saved by name, the UNet still with its code
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "DPMSolverMultistepScheduler"]
    reloaded = SimpleDiffusionPipeline.from_pretrained(tmp_path)
    assert type(reloaded.scheduler) is DPMSolverMultistepScheduler

    pipe.scheduler = SimpleScheduler.from_config(pipe.scheduler.config)
    torch.testing.assert_close(pipe.scheduler.alphas_cumprod, original.alphas_cumprod, rtol=0, atol=0)
    np.testing.assert_array_equal(sample(pipe), sample(SimpleDiffusionPipeline(unet=pipe.unet, scheduler=original)))


@pytest.mark.parametrize("scheduler_class", [UniPCMultistepScheduler, DEISMultistepScheduler, EulerDiscreteScheduler, DDPMScheduler])
def test_diffusers_schedulers_without_generator_or_eta_arguments_sample(pipe, scheduler_class):
    # UniPC's and DEIS's `step` take no `generator`, Euler's no `eta`: the pipeline passes each only what it accepts
    swapped = SimpleDiffusionPipeline(unet=pipe.unet, scheduler=scheduler_class.from_config(pipe.scheduler.config))
    swapped.set_progress_bar_config(disable=True)
    first, second = (swapped(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=3, eta=0.0,
                             output_type="np").images for _ in range(2))
    assert first.shape == (2, 8, 8, 3) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)  # the generator drives every random draw, DDPM's noise included


def test_pickle_unet_weights_are_refused(pipe, tmp_path):
    pipe.save_pretrained(tmp_path, safe_serialization=False)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.bin").is_file()
    refused = r"SimpleUNet loads safetensors weights only, and .*unet has no safetensors .*\(.bin\) are refused"
    with pytest.raises(ValueError, match=refused):
        SimpleDiffusionPipeline.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=refused):  # the checkpoint's own copy of the UNet code refuses it too
        DiffusionPipeline.from_pretrained(tmp_path, trust_remote_code=True)


def test_from_pretrained_rejects_unknown_arguments(saved_dir):
    with pytest.raises(ValueError, match="bogus"):
        SimpleDiffusionPipeline.from_pretrained(saved_dir, bogus=1)


def test_eta_defaults_to_the_scheduler_config():
    ddim_eta1 = tiny_pipeline(sampler="ddim")
    ddim_eta1.scheduler = SimpleScheduler(sampler="ddim", eta=1.0)
    torch.testing.assert_close(final_latents(ddim_eta1), final_latents(ddim_eta1, eta=1.0), rtol=0, atol=0)
    assert not torch.allclose(final_latents(ddim_eta1), final_latents(ddim_eta1, eta=0.0))
