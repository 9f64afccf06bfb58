"""Tests of `SimpleUNet`: shapes, serialization, dtypes, gradients, conditioning, input checks, and agreement of its
building blocks with Diffusers' reference implementations. Tiny configs, CPU only."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline, DDPMScheduler
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.resnet import ResnetBlock2D

from diffusers_simple.unet_simple import (
    AttentionBlock,
    ResnetBlock,
    SimpleUNet,
    SimpleUNetOutput,
    timestep_embedding,
)


# Two levels (8x8 and 4x4) with attention at 4x4, two layers there: every code path at a few thousand parameters.
TINY = {
    "sample_size": 8,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (8, 16),
    "layers_per_block": (1, 2),
    "attention_levels": (False, True),
    "attention_head_dim": 8,
    "norm_num_groups": 4,
    "dropout": 0.1,
}
NUM_CLASSES = 5


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine their synchronisation costs seconds per
    test (6x slower here). Restored after this module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rounding_bound(dtype: torch.dtype, magnitude: float, units: float = 100) -> float:
    """The largest difference allowed between two computations of the same tiny-model result that differ only in
    rounding (other kernels, batch sizes, vector units or operation orders): `units` units of roundoff `u = eps / 2` of
    `dtype`, times the magnitude of the result.

    Derivation: a forward pass sums at most 9 * 48 = 432 products per output (3x3 convs over 48 channels) in each of
    ~20 layers, and the GroupNorms keep the activations O(1); its rounding error is then a few to some tens of `u`
    times the output magnitude. Measured against float64: 10 u (float32: 1.9e-6 at magnitude 3.1; fp16 and bf16
    store every activation rounded but accumulate in float32: 3 u). The default 100 units leave 10x for other CPUs
    and kernels and are still 1e5 times smaller (float32) than the O(1) effect of a wrong timestep, label or weight.
    """
    return units * torch.finfo(dtype).eps / 2 * magnitude


def make_model(**overrides) -> SimpleUNet:
    """A tiny model in eval mode whose zero-initialised layers (second conv of each residual block, attention output,
    final conv) are perturbed like every other weight, so that every parameter influences the output."""
    torch.manual_seed(0)
    model = SimpleUNet(**{**TINY, **overrides})
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.2 * torch.randn_like(param))
    return model.eval()


def inputs():
    """A batch of two 8x8 RGB samples and their timesteps."""
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([3, 700])


# ---------------------------------------------------------------------------------------------------------------------
# Shapes, structure, parameters


def test_output_shape_and_return_types():
    model = make_model(out_channels=2, sample_size=(8, 12))
    sample = torch.randn(3, 3, 8, 12)
    with torch.no_grad():
        out = model(sample, 10)
        tuple_out = model(sample, 10, return_dict=False)
    assert isinstance(out, SimpleUNetOutput)
    assert out.sample.shape == (3, 2, 8, 12)
    assert isinstance(tuple_out, tuple) and len(tuple_out) == 1
    assert torch.equal(tuple_out[0], out.sample)


def test_fresh_model_predicts_zero_and_blocks_start_as_identity():
    # Zero-initialised output conv, residual second convs and attention outputs (DDPM / ADM initialisation).
    model = SimpleUNet(**TINY).eval()
    with torch.no_grad():
        assert torch.equal(model(torch.randn(2, 3, 8, 8), 5).sample, torch.zeros(2, 3, 8, 8))
        block = model.down_layers[1][0]
        hidden_states = torch.randn(2, 16, 4, 4)
        assert torch.equal(block.attention(hidden_states), hidden_states)


def test_layers_per_block_int_or_per_level_and_shortcut_only_when_needed():
    model = SimpleUNet(**{**TINY, "layers_per_block": (1, 3)})
    assert [len(layers) for layers in model.down_layers] == [1, 3]
    assert [len(layers) for layers in model.up_layers] == [4, 2]  # from the lowest resolution up, one more per level
    same = SimpleUNet(**{**TINY, "layers_per_block": 2})
    tuple_form = SimpleUNet(**{**TINY, "layers_per_block": (2, 2)})
    shapes = {k: v.shape for k, v in same.state_dict().items()}
    assert shapes == {k: v.shape for k, v in tuple_form.state_dict().items()}
    for module in model.modules():
        if isinstance(module, ResnetBlock):
            changes_channels = module.conv1.in_channels != module.conv1.out_channels
            assert (module.conv_shortcut is not None) == changes_channels
    # Attention only where configured (level 1 and the middle).
    assert all(layer.attention is None for layer in model.down_layers[0])
    assert all(layer.attention is not None for layer in model.down_layers[1])
    assert model.mid_layer.attention is not None


def test_num_parameters_of_default_and_tiny_config():
    default = SimpleUNet()
    assert default.config.sample_size == 32 and isinstance(default.config.sample_size, int)
    assert default.num_parameters() == sum(p.numel() for p in default.parameters()) == 25_581_891
    assert default.num_parameters(only_trainable=True) == default.num_parameters()
    tiny = SimpleUNet(**TINY)
    assert tiny.num_parameters() == sum(p.numel() for p in tiny.parameters())
    conditional = SimpleUNet(**TINY, num_class_embeds=NUM_CLASSES)
    temb_channels = 4 * TINY["block_out_channels"][0]
    assert conditional.class_embedding.weight.shape == (NUM_CLASSES + 1, temb_channels)
    assert conditional.num_parameters() - tiny.num_parameters() == (NUM_CLASSES + 1) * temb_channels
    assert tiny.class_embedding is None


@pytest.mark.parametrize(
    "block_out_channels, layers_per_block, attention_levels, attention_head_dim",
    [
        ((16,), (2,), (False,), 16),
        ((16, 32), (1, 2), (False, True), 32),
        ((16, 32, 48), (1, 2, 2), (False, True, True), 16),
        ((64, 128, 256, 256), (1, 1, 2, 2), (False, True, True, True), 64),
    ],
)
def test_per_level_defaults_fit_the_number_of_levels(
    block_out_channels, layers_per_block, attention_levels, attention_head_dim
):
    model = SimpleUNet(sample_size=8, block_out_channels=block_out_channels, norm_num_groups=8)
    assert model.config.layers_per_block == layers_per_block
    assert model.config.attention_levels == attention_levels
    assert model.config.attention_head_dim == attention_head_dim
    assert [len(layers) for layers in model.down_layers] == list(layers_per_block)
    # The same from a config file that sets only the levels.
    assert SimpleUNet.from_config({"block_out_channels": list(block_out_channels), "norm_num_groups": 8}).config[
        "layers_per_block"
    ] == layers_per_block
    if len(block_out_channels) < 4:
        with torch.no_grad():
            assert model(torch.randn(1, 3, 8, 8), 10).sample.shape == (1, 3, 8, 8)


def test_training_builds_a_unet_of_any_depth_from_flags(tmp_path):
    from types import SimpleNamespace

    from diffusers_simple_training.args import parse_args
    from diffusers_simple_training.modeling import build_unet_and_scheduler

    data = SimpleNamespace(num_channels=1, num_classes=None)
    flags = ["--resolution", "8", "--norm_num_groups", "8", "--block_out_channels", "16", "32"]
    unet = build_unet_and_scheduler(parse_args(flags), data)[0]
    assert unet.config.block_out_channels == [16, 32] and unet.config.layers_per_block == (1, 2)
    # A 4-level config file (every key written, as `save_pretrained` does) with two levels from the flags.
    SimpleUNet(norm_num_groups=8).save_pretrained(tmp_path)
    unet = build_unet_and_scheduler(parse_args(flags + ["--model_config_name_or_path", str(tmp_path / "config.json")]),
                                    data)[0]
    assert unet.config.attention_levels == (False, True)
    with pytest.raises(ValueError, match=r"`attention_levels` must have one bool per level \(2 levels\)"):
        build_unet_and_scheduler(parse_args(flags + ["--attention_levels", "true", "true", "true"]), data)


def test_module_file_is_self_contained():
    # `save_pretrained` of the pipeline copies this file into checkpoints: stdlib, numpy, torch and diffusers only.
    import diffusers_simple.unet_simple as module

    tree = ast.parse(Path(module.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            roots.add(node.module.split(".")[0])
    assert roots <= {"math", "dataclasses", "numpy", "torch", "diffusers"}, roots


# ---------------------------------------------------------------------------------------------------------------------
# Agreement with Diffusers' reference building blocks


def test_timestep_embedding_matches_diffusers():
    timesteps = torch.tensor([0.0, 1.0, 17.5, 999.0])
    for dim in (32, 33):
        expected = get_timestep_embedding(timesteps, dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        # Both round f_i (relative error a few eps) and t f_i (up to ulp(999) / 2 = 3e-5) in float32: their
        # arguments |t f_i| <= 999 rad may differ by about 2 * 999 * eps, and so may their cos and sin. A wrong
        # convention (sin/cos order, frequency shift) differs by O(1).
        atol = 4 * 999 * torch.finfo(torch.float32).eps
        torch.testing.assert_close(timestep_embedding(timesteps, dim), expected, rtol=0, atol=atol)


def test_resnet_block_matches_diffusers_scale_shift_resnet():
    torch.manual_seed(0)
    # In float64: the two differ in the order of their operations only, by a few units of roundoff.
    ours = ResnetBlock(8, 16, temb_channels=12, groups=4, eps=1e-5, dropout=0.0).eval().double()
    reference = ResnetBlock2D(
        in_channels=8, out_channels=16, temb_channels=12, groups=4, eps=1e-5, time_embedding_norm="scale_shift"
    ).eval().double()
    with torch.no_grad():
        for param in ours.parameters():
            param.normal_(0, 0.2)
        for name in ("norm1", "conv1", "time_emb_proj", "conv2", "conv_shortcut"):
            getattr(reference, name).load_state_dict(getattr(ours, name).state_dict())
    hidden_states, temb = torch.randn(2, 8, 6, 6, dtype=torch.float64), torch.randn(2, 12, dtype=torch.float64)
    with torch.no_grad():
        # Ours takes the embedding after its SiLU (done once per forward); Diffusers' applies the SiLU itself.
        expected = reference(hidden_states, temb)
        atol = rounding_bound(torch.float64, expected.abs().max().item())
        torch.testing.assert_close(ours(hidden_states, F.silu(temb)), expected, rtol=0, atol=atol)


def test_attention_block_matches_diffusers_attention():
    torch.manual_seed(0)
    # In float64: the two differ in the order of their operations only, by a few units of roundoff.
    ours = AttentionBlock(32, head_dim=8, groups=4, eps=1e-5).eval().double()
    reference = Attention(
        32, heads=4, dim_head=8, norm_num_groups=4, eps=1e-5, bias=True, residual_connection=True,
        _from_deprecated_attn_block=True,
    ).eval().double()
    with torch.no_grad():
        for param in ours.parameters():
            param.normal_(0, 0.3)
        reference.group_norm.load_state_dict(ours.norm.state_dict())
        for projection, weight, bias in zip(
            (reference.to_q, reference.to_k, reference.to_v), ours.to_qkv.weight.chunk(3), ours.to_qkv.bias.chunk(3)
        ):
            projection.weight.copy_(weight)
            projection.bias.copy_(bias)
        reference.to_out[0].load_state_dict(ours.to_out.state_dict())
        hidden_states = torch.randn(2, 32, 4, 5, dtype=torch.float64)
        expected = reference(hidden_states)
        atol = rounding_bound(torch.float64, expected.abs().max().item())
        torch.testing.assert_close(ours(hidden_states), expected, rtol=0, atol=atol)


# ---------------------------------------------------------------------------------------------------------------------
# Serialization


def test_save_pretrained_from_pretrained_round_trip_is_bit_identical(tmp_path):
    model = make_model(num_class_embeds=NUM_CLASSES)
    sample, timesteps = inputs()
    labels = torch.tensor([0, NUM_CLASSES])
    with torch.no_grad():
        expected = model(sample, timesteps, labels).sample

    model.save_pretrained(tmp_path / "unet")
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    config = json.loads((tmp_path / "unet" / "config.json").read_text())
    assert config["_class_name"] == "SimpleUNet"
    assert config["layers_per_block"] == [1, 2] and config["attention_levels"] == [False, True]

    for loaded in (
        SimpleUNet.from_pretrained(tmp_path / "unet"),
        SimpleUNet.from_pretrained(tmp_path, subfolder="unet"),
    ):
        assert not loaded.training
        with torch.no_grad():
            assert torch.equal(loaded(sample, timesteps, labels).sample, expected)

    rebuilt = SimpleUNet.from_config(model.config)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_pickle_weights_are_refused(tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path / "pickle", safe_serialization=False)
    assert [p.name for p in (tmp_path / "pickle").glob("diffusion_pytorch_model.*")] == ["diffusion_pytorch_model.bin"]
    refused = r"safetensors weights only, and .*pickle has no safetensors.*\(.bin\) are refused.*safetensors.torch.save_file"
    with pytest.raises(ValueError, match=refused):
        SimpleUNet.from_pretrained(tmp_path / "pickle")
    with pytest.raises(ValueError, match=refused):
        SimpleUNet.from_pretrained(tmp_path, subfolder="pickle")
    # Asking for pickle weights is refused even where safetensors exist.
    model.save_pretrained(tmp_path / "both")
    model.save_pretrained(tmp_path / "both", safe_serialization=False)
    with pytest.raises(ValueError, match=r"safetensors weights only: leave `use_safetensors` at None or True"):
        SimpleUNet.from_pretrained(tmp_path / "both", use_safetensors=False)
    assert isinstance(SimpleUNet.from_pretrained(tmp_path / "both"), SimpleUNet)


def test_fp16_variant_round_trip(tmp_path):
    model = make_model().to(torch.float16)
    model.save_pretrained(tmp_path, variant="fp16")
    assert (tmp_path / "diffusion_pytorch_model.fp16.safetensors").is_file()
    loaded = SimpleUNet.from_pretrained(tmp_path, variant="fp16", torch_dtype=torch.float16)
    assert loaded.dtype == torch.float16
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    sample, timesteps = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(sample.half(), timesteps).sample, model(sample.half(), timesteps).sample)


# ---------------------------------------------------------------------------------------------------------------------
# Numerics: determinism, dtypes, timestep forms


def test_deterministic_construction_and_forward():
    first, second = make_model(), make_model()
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), key
    sample, timesteps = inputs()
    with torch.no_grad():
        assert torch.equal(first(sample, timesteps).sample, first(sample, timesteps).sample)
        assert torch.equal(first(sample, timesteps).sample, second(sample, timesteps).sample)


def test_dropout_only_in_training_mode():
    model = make_model(dropout=0.5)
    sample, timesteps = inputs()
    model.train()
    assert not torch.equal(model(sample, timesteps).sample, model(sample, timesteps).sample)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_close_to_float32(dtype):
    model = make_model()
    sample, timesteps = inputs()
    with torch.no_grad():
        expected = model(sample, timesteps).sample
        model.to(dtype)
        assert model.dtype == dtype
        out = model(sample.to(dtype), timesteps).sample
    assert out.dtype == dtype
    # Rounding every activation to `dtype` (accumulating in float32) costs about 3 units of roundoff of `dtype`
    # times the output magnitude (see `rounding_bound`); 10 leave 3x, and the float32 error is negligible.
    bound = rounding_bound(dtype, expected.abs().max().item(), units=10)
    error = (out.float() - expected).abs().max().item()
    assert error < bound, f"error {error:.2e} > {bound:.2e} in {dtype}"


def test_float32_model_under_bfloat16_autocast():
    # What `accelerate launch --mixed_precision bf16` does on CPU.
    model = make_model()
    sample, timesteps = inputs()
    with torch.no_grad():
        expected = model(sample, timesteps).sample
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(sample, timesteps).sample
    # As in `test_half_precision_close_to_float32`: about 3 units of roundoff of bfloat16.
    bound = rounding_bound(torch.bfloat16, expected.abs().max().item(), units=10)
    error = (out.float() - expected).abs().max().item()
    assert error < bound, f"error {error:.2e} > {bound:.2e}"


def test_timestep_embedding_stays_float32_in_bfloat16_model():
    # bfloat16 rounds both 998 and 999 to 1000; the embedding must see the exact timesteps.
    model = make_model().to(torch.bfloat16)
    sample = inputs()[0].to(torch.bfloat16)
    with torch.no_grad():
        assert not torch.equal(model(sample, 998).sample, model(sample, 999).sample)


def test_timestep_forms_give_the_same_result():
    model = make_model()
    sample = inputs()[0]
    with torch.no_grad():
        # The same float32 timesteps into the same computation on the same shapes: bit-identical.
        expected = model(sample, 250).sample
        for timestep in (250.0, torch.tensor(250), torch.tensor([250]), torch.tensor([250, 250]), torch.tensor(250.0)):
            assert torch.equal(model(sample, timestep).sample, expected), timestep
        # Per-sample timesteps act on their own sample. A batch of two runs other kernels than one sample, which
        # round differently: compare with single-sample float64 references, within float32 rounding.
        mixed = model(sample, torch.tensor([250, 900])).sample
        reference = make_model().double()
        for i, timestep in enumerate((250, 900)):
            single = reference(sample[i : i + 1].double(), timestep).sample
            atol = rounding_bound(torch.float32, single.abs().max().item())
            torch.testing.assert_close(mixed[i : i + 1].double(), single, rtol=0, atol=atol)
        # Fractional timesteps are embedded as they are.
        assert not torch.equal(model(sample, 250.5).sample, expected)


# ---------------------------------------------------------------------------------------------------------------------
# Gradients


def test_gradients_reach_every_parameter():
    model = make_model(num_class_embeds=NUM_CLASSES).train()
    sample, timesteps = inputs()
    model(sample, timesteps, torch.tensor([1, NUM_CLASSES])).sample.square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    used_rows = model.class_embedding.weight.grad.abs().sum(dim=1) > 0
    assert used_rows.tolist() == [i in (1, NUM_CLASSES) for i in range(NUM_CLASSES + 1)]


def test_gradient_checkpointing_gives_identical_loss_and_gradients():
    sample, timesteps = inputs()
    labels = torch.tensor([2, NUM_CLASSES])
    results = []
    for checkpointing in (False, True):
        model = make_model(num_class_embeds=NUM_CLASSES).train()  # dropout on: recomputation must replay its RNG
        if checkpointing:
            model.enable_gradient_checkpointing()
            assert model.is_gradient_checkpointing
        calls = []
        model.mid_layer.register_forward_pre_hook(lambda *args: calls.append(1))
        torch.manual_seed(123)
        loss = model(sample, timesteps, labels).sample.square().mean()
        loss.backward()
        assert len(calls) == (2 if checkpointing else 1)  # checkpointed layers run again during backward
        results.append((loss.detach(), {name: p.grad for name, p in model.named_parameters()}))
        if checkpointing:
            model.disable_gradient_checkpointing()
            assert not model.is_gradient_checkpointing
    (loss, grads), (loss_ckpt, grads_ckpt) = results
    assert torch.equal(loss, loss_ckpt)  # the same forward computation
    # The recomputed activations are bit-identical; only the order in which autograd sums the gradient
    # contributions of the layers may differ: float32 rounding of sums, bounded as in `rounding_bound`.
    for name, grad in grads.items():
        atol = rounding_bound(torch.float32, grad.abs().max().item())
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=0, atol=atol, msg=name)


# ---------------------------------------------------------------------------------------------------------------------
# Class conditioning


def test_class_conditioning():
    model = make_model(num_class_embeds=NUM_CLASSES)
    sample = inputs()[0][:1].repeat(NUM_CLASSES + 1, 1, 1, 1)
    labels = torch.arange(NUM_CLASSES + 1)  # the last one is the null class
    with torch.no_grad():
        out = model(sample, 100, labels).sample
        for i in range(NUM_CLASSES + 1):
            for j in range(i):
                assert not torch.allclose(out[i], out[j]), (i, j)
        # Labels of any integer dtype, or a list, are accepted.
        assert torch.equal(model(sample, 100, labels.to(torch.int32)).sample, out)
        assert torch.equal(model(sample, 100, labels.tolist()).sample, out)


# ---------------------------------------------------------------------------------------------------------------------
# Input checks


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"sample_size": 6, "block_out_channels": (8, 8, 8), "layers_per_block": 1, "attention_levels": (False,) * 3},
         r"`sample_size` must be .* divisible by 2 \*\* \(len\(block_out_channels\) - 1\) = 4, but is 6"),
        ({"sample_size": (8, 9)}, r"`sample_size` .* = 2, but is \(8, 9\)"),
        ({"norm_num_groups": 3}, r"`norm_num_groups` must be .* dividing every entry of `block_out_channels` \(8, 16\)"
                                 r", but is 3, which does not divide \[8, 16\]"),
        ({"attention_head_dim": 6}, r"`attention_head_dim` must be .* \[16\], but is 6"),
        ({"attention_levels": (True, True), "attention_head_dim": 16}, r"`attention_head_dim` .* \[8, 16\], but is 16"
                                                                        r", which does not divide \[8\]"),
        ({"layers_per_block": (1,)}, r"`layers_per_block` must be an int >= 1 or .* \(2 levels\), but is \(1,\)"),
        ({"layers_per_block": 0}, r"`layers_per_block` .* but is 0\."),
        ({"attention_levels": (True,)}, r"`attention_levels` must have one bool per level \(2 levels\)"),
        ({"attention_levels": (False, True, True)}, r"`attention_levels` .* \(2 levels\), but is \(False, True, Tr"),
        ({"attention_levels": (0, 1)}, r"`attention_levels` must have one bool per level .* but is \(0, 1\)"),
        ({"layers_per_block": (1, 1, 1)}, r"`layers_per_block` .* \(2 levels\), but is \(1, 1, 1\)"),
        ({"layers_per_block": True}, r"`layers_per_block` .* but is True"),
        ({"block_out_channels": 16}, r"`block_out_channels` must be a non-empty tuple of positive ints, but is 16"),
        ({"attention_head_dim": 8.0}, r"`attention_head_dim` must be a positive int .* but is 8.0"),
        ({"block_out_channels": ()}, r"`block_out_channels` must be a non-empty tuple of positive ints"),
        ({"num_class_embeds": 0}, r"`num_class_embeds` must be None or a positive int, but is 0"),
        ({"dropout": 1.0}, r"`dropout` must be in \[0, 1\), but is 1.0"),
    ],
)
def test_invalid_config_raises(overrides, match):
    with pytest.raises(ValueError, match=match):
        SimpleUNet(**{**TINY, **overrides})


@pytest.mark.parametrize(
    "conditional, call, match",
    [
        (False, lambda m, x: m(x, 1, class_labels=torch.tensor([0, 1])), r"`class_labels` were given, but this model "
                                                                          r"is unconditional"),
        (True, lambda m, x: m(x, 1), rf"`class_labels` are required: .* `num_class_embeds={NUM_CLASSES}`; pass "
                                     rf"integer labels in \[0, {NUM_CLASSES}\]"),
        (True, lambda m, x: m(x, 1, torch.tensor([0, NUM_CLASSES + 1])), rf"must be in \[0, {NUM_CLASSES}\] .* but "
                                                                         rf"range over \[0, {NUM_CLASSES + 1}\]"),
        (True, lambda m, x: m(x, 1, torch.tensor([-1, 0])), r"range over \[-1, 0\]"),
        (True, lambda m, x: m(x, 1, torch.tensor([0.0, 1.0])), r"integer tensor of shape \(2,\).* torch.float32"),
        (True, lambda m, x: m(x, 1, torch.tensor([0, 1, 2])), r"integer tensor of shape \(2,\).* shape \(3,\)"),
        (False, lambda m, x: m(x[:, :2], 1), r"`sample` must have shape \(batch_size, 3, height, width\), but has "
                                             r"shape \(2, 2, 8, 8\)"),
        (False, lambda m, x: m(x[0], 1), r"`sample` must have shape .* but has shape \(3, 8, 8\)"),
        (False, lambda m, x: m(x[..., :7, :], 1), r"height and width must be multiples of .* = 2, but are \(7, 8\)"),
        (False, lambda m, x: m(x, torch.tensor([1, 2, 3])), r"`timestep` must be .* length 1 or batch_size=2, but has "
                                                            r"shape \(3,\)"),
        (False, lambda m, x: m(x, torch.ones(2, 1)), r"`timestep` .* but has shape \(2, 1\)"),
    ],
)
def test_invalid_inputs_raise(conditional, call, match):
    model = make_model(num_class_embeds=NUM_CLASSES if conditional else None)
    with pytest.raises(ValueError, match=match):
        call(model, inputs()[0])


# ---------------------------------------------------------------------------------------------------------------------
# Interoperability


def test_works_as_unet_of_diffusers_ddpm_pipeline():
    model = make_model()
    scheduler = DDPMScheduler(num_train_timesteps=50)
    pipeline = DDPMPipeline(unet=model, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    images = pipeline(batch_size=2, num_inference_steps=3, generator=generator, output_type="np").images
    assert images.shape == (2, 8, 8, 3)

    # The same sampling written out with the scheduler: the pipeline really ran this UNet.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=generator)
    scheduler.set_timesteps(3)
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, t).sample, t, x, generator=generator).prev_sample
    expected = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    # The same float32 operations on the same shapes, in the same order: bit-identical on any CPU.
    np.testing.assert_array_equal(images, expected)
    assert np.abs(expected - 0.5).max() > 0.1  # not a degenerate (all-clamped or constant) image
