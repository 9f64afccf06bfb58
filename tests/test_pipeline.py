"""SimpleDiffusionPipeline: sampling, outputs, errors, and self-contained checkpoints."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    UNet2DModel,
)

import diffusers_simple
from diffusers_simple import SimpleDiffusionPipeline, SimpleScheduler, SimpleUNet

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
    batch = pipe(batch_size=2, num_inference_steps=4, output_type="np",
                 generator=[torch.Generator().manual_seed(s) for s in (7, 8)]).images
    single = sample(pipe, seed=8)
    np.testing.assert_allclose(batch[1:], single, atol=1e-5)


class StopSampling(Exception):
    pass


@pytest.mark.parametrize("scheduler, expected_steps", [
    (SimpleScheduler(sampler="dpmsolver++"), 20), (SimpleScheduler(sampler="ddim"), 20),
    (SimpleScheduler(sampler="ddpm"), 1000), (DDPMScheduler(), 1000), (DDIMScheduler(), 20),
])
def test_default_steps_depend_on_sampler(pipe, scheduler, expected_steps):
    def stop_at_first_step(pipe, i, t, kwargs):
        raise StopSampling(len(pipe.scheduler.timesteps))
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
    np.testing.assert_allclose(sample(ours, batch_size=2, num_inference_steps=5, **extra), expected, atol=1e-6)


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
    torch.testing.assert_close(per_image[1:], final_latents(pipe, class_labels=2), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kwargs, match", [
    ({"output_type": "latent"}, r"output_type.*\('pil', 'np', 'pt'\).*'latent'"),
    ({"class_labels": 1}, r"class_labels.*1.*unconditional"),
    ({"guidance_scale": 5.0}, r"guidance_scale.*5\.0.*unconditional"),
    ({"batch_size": 0}, r"batch_size.*0"),
    ({"num_inference_steps": 0}, r"num_inference_steps.*0"),
    ({"latents": torch.zeros(1, 3, 4, 4)}, r"latents.*\(1, 3, 4, 4\).*\(1, 3, 8, 8\)"),
    ({"callback_on_step_end_tensor_inputs": ["noise"]}, r"'noise'.*latents"),
    ({"batch_size": 2, "generator": [torch.Generator()]}, r"1 generators.*2"),
])
def test_bad_input_unconditional(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pipe(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({}, r"class-conditional with 3 classes.*class_labels"),
    ({"class_labels": 3}, r"\[3\] out of range.*0\.\.2"),
    ({"class_labels": -1}, r"\[-1\] out of range.*0\.\.2"),
    ({"class_labels": [0, 1, 2], "batch_size": 2}, r"3 `class_labels` for `batch_size` 2"),
])
def test_bad_input_conditional(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_pipeline(num_class_embeds=3)(num_inference_steps=1, **kwargs)


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
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        class NoDiffusersSimple(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "diffusers_simple":
                    raise ImportError("diffusers_simple is not installed here")
        sys.meta_path.insert(0, NoDiffusersSimple())
        try:
            import diffusers_simple
            raise SystemExit("diffusers_simple should not be importable")
        except ImportError:
            pass
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
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
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
    np.testing.assert_allclose(sample(pipe), sample(SimpleDiffusionPipeline(unet=pipe.unet, scheduler=original)), atol=1e-6)


def test_from_pretrained_rejects_unknown_arguments(saved_dir):
    with pytest.raises(ValueError, match="bogus"):
        SimpleDiffusionPipeline.from_pretrained(saved_dir, bogus=1)


def test_eta_defaults_to_the_scheduler_config():
    ddim_eta1 = tiny_pipeline(sampler="ddim")
    ddim_eta1.scheduler = SimpleScheduler(sampler="ddim", eta=1.0)
    torch.testing.assert_close(final_latents(ddim_eta1), final_latents(ddim_eta1, eta=1.0), rtol=0, atol=0)
    assert not torch.allclose(final_latents(ddim_eta1), final_latents(ddim_eta1, eta=0.0))
