# Copyright 2025 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""A compact noise-prediction UNet in the style of DDPM (Ho et al., 2020) and ADM (Dhariwal & Nichol, 2021).

Self-contained on purpose: it imports only torch and diffusers, so `save_pretrained` can copy this file into a
checkpoint folder that loads with `trust_remote_code=True`.

Built to train fast for its parameter count: the default puts its depth at the low resolutions, where parameters cost
few FLOPs; the upsamplers are 2x2 transposed convs; the timestep embedding goes through its SiLU once per forward;
attention uses one qkv projection and `F.scaled_dot_product_attention` on head views with a contiguous last dim (which
selects its fused kernels, also on CPU); shortcut convs exist only where the channel count changes.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn


_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class SimpleUNetOutput(BaseOutput):
    """
    The output of [`SimpleUNet`].

    Args:
        sample (`torch.Tensor` of shape `(batch_size, out_channels, height, width)`):
            The model prediction (the noise `eps` for an epsilon-prediction diffusion model).
    """

    sample: torch.Tensor


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding `[cos(t f_i), sin(t f_i)]`, `f_i = max_period^(-i / (dim // 2))` (Vaswani et al., 2017),
    of possibly fractional timesteps; zero-padded to `dim` when odd. Always float32: `t f_i` reaches ~1000 radians."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) / half * torch.arange(half, dtype=torch.float32, device=timesteps.device))
    args = timesteps.float()[:, None] * freqs[None]
    return F.pad(torch.cat([torch.cos(args), torch.sin(args)], dim=-1), (0, dim % 2))


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-Conv twice, the timestep embedding entering as an adaptive GroupNorm scale and shift
    (`GN(h) * (1 + scale) + shift`, ADM), dropout before the second conv, and a 1x1 shortcut conv only when the
    channel count changes. The second conv starts at zero, so every block starts as the identity (DDPM, ADM)."""

    def __init__(
        self, in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float, dropout: float
    ):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, 2 * out_channels)
        # No affine parameters: the per-channel scale and shift come from `time_emb_proj` (its bias is the constant).
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps, affine=False)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        # `temb` is SiLU(embedding), computed once per forward for all blocks.
        h = self.conv1(F.silu(self.norm1(hidden_states)))
        scale, shift = self.time_emb_proj(temb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm2(h), 1 + scale))
        h = self.conv2(self.dropout(h))
        if self.conv_shortcut is not None:
            hidden_states = self.conv_shortcut(hidden_states)
        return hidden_states + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the `height * width` positions with a residual connection,
    `x + W_o softmax(q k^T / sqrt(head_dim)) v`, where `q, k, v` come from one linear map of `GroupNorm(x)`.
    The output projection starts at zero, so the block starts as the identity."""

    def __init__(self, channels: int, head_dim: int, groups: int, eps: float):
        super().__init__()
        self.heads = channels // head_dim
        self.norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_qkv = nn.Linear(channels, 3 * channels)
        self.to_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = hidden_states.shape
        tokens = self.norm(hidden_states).flatten(2).transpose(1, 2)  # (batch, height * width, channels)
        q, k, v = self.to_qkv(tokens).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (batch, heads, height * width, head_dim)
        out = self.to_out(out.transpose(1, 2).flatten(2))
        return hidden_states + out.transpose(1, 2).reshape(batch, channels, height, width)


class UNetLayer(nn.Module):
    """One layer of the UNet at a fixed resolution: a [`ResnetBlock`], then an [`AttentionBlock`] if enabled."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        attention: bool,
        head_dim: int,
        groups: int,
        eps: float,
        dropout: float,
    ):
        super().__init__()
        self.resnet = ResnetBlock(in_channels, out_channels, temb_channels, groups, eps, dropout)
        self.attention = AttentionBlock(out_channels, head_dim, groups, eps) if attention else None

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        hidden_states = self.resnet(hidden_states, temb)
        if self.attention is not None:
            hidden_states = self.attention(hidden_states)
        return hidden_states


class SimpleUNet(ModelMixin, ConfigMixin):
    r"""
    A noise-prediction UNet for DDPM-style diffusion models: a sinusoidal timestep embedding and MLP, residual blocks
    conditioned on the timestep (and optionally a class label) through adaptive GroupNorm, multi-head self-attention at
    the chosen resolutions, and skip connections from every down-path output into the up path.

    Level `i` works at resolution `sample_size / 2**i` with `block_out_channels[i]` channels. The down path has
    `layers_per_block[i]` layers (a residual block, followed by self-attention where `attention_levels[i]`) at level
    `i` and a stride-2 conv to the next level; the middle is resnet-attention-resnet at the lowest resolution; the up
    path has `layers_per_block[i] + 1` layers at level `i`, each concatenating one skip to its input, and a 2x2
    stride-2 transposed conv to the next level's channels.

    The default (25.6M parameters) is for 32x32 RGB images and puts its depth at 8x8 and 4x4, where parameters are
    cheap in FLOPs: a training step takes about 1/1.5 of the time of a [`UNet2DModel`] with the same channels and
    attention levels and about the same parameter count (float32 on CPU).

    This model inherits from [`ModelMixin`]. Check the superclass documentation for the generic methods implemented
    for all models (such as downloading or saving).

    Parameters:
        sample_size (`int` or `tuple[int, int]`, *optional*, defaults to `32`):
            Height and width of the input/output sample. Must be a multiple of `2 ** (len(block_out_channels) - 1)`.
        in_channels (`int`, *optional*, defaults to `3`):
            Number of channels of the input sample.
        out_channels (`int`, *optional*, defaults to `3`):
            Number of channels of the output.
        block_out_channels (`tuple[int]`, *optional*, defaults to `(64, 128, 256, 256)`):
            Channels of each resolution level, from the full resolution down.
        layers_per_block (`int` or `tuple[int]`, *optional*):
            Layers per level in the down path (the up path has one more per level): one int for all levels, or one int
            per level. Defaults to 1 in the first `len(block_out_channels) // 2` levels and 2 in the others: `(1, 1, 2,
            2)` for four levels, `(1, 2)` for two.
        attention_levels (`tuple[bool]`, *optional*):
            Which levels have self-attention after every residual block; one bool per level. The middle block always
            has it. Defaults to every level but the first: `(False, True, True, True)` for four levels.
        attention_head_dim (`int`, *optional*):
            Channels per attention head; must divide the channels of every level with attention and of the last level.
            Defaults to the largest divisor of 64 that does: 64 for the default channels, 32 for `(16, 32)`.
        norm_num_groups (`int`, *optional*, defaults to `32`):
            Number of groups of every GroupNorm; must divide every entry of `block_out_channels`.
        norm_eps (`float`, *optional*, defaults to `1e-5`):
            Epsilon of every GroupNorm.
        dropout (`float`, *optional*, defaults to `0.1`):
            Dropout probability inside the residual blocks.
        num_class_embeds (`int`, *optional*, defaults to `None`):
            Number of classes for class conditioning. The class embedding has `num_class_embeds + 1` rows: label
            `num_class_embeds` is the "null" class of classifier-free guidance. `None` for an unconditional model.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int | tuple[int, int] = 32,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (64, 128, 256, 256),
        layers_per_block: int | tuple[int, ...] | None = None,
        attention_levels: tuple[bool, ...] | None = None,
        attention_head_dim: int | None = None,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        dropout: float = 0.1,
        num_class_embeds: int | None = None,
    ):
        super().__init__()
        if not isinstance(block_out_channels, (list, tuple)) or not block_out_channels or not all(
            _is_int(c) and c >= 1 for c in block_out_channels
        ):
            raise ValueError(
                f"`block_out_channels` must be a non-empty tuple of positive ints, but is {block_out_channels}."
            )
        # The defaults of the per-level options fit the number of levels given; the config stores what is used.
        num_levels = len(block_out_channels)
        if layers_per_block is None:
            layers_per_block = tuple(1 if level < num_levels // 2 else 2 for level in range(num_levels))
        if attention_levels is None:
            attention_levels = (False,) + (True,) * (num_levels - 1)

        per_level = (layers_per_block,) * num_levels if _is_int(layers_per_block) else layers_per_block
        if (
            not isinstance(per_level, (list, tuple))
            or len(per_level) != num_levels
            or not all(_is_int(n) and n >= 1 for n in per_level)
        ):
            raise ValueError(
                f"`layers_per_block` must be an int >= 1 or a tuple of one such int per level ({num_levels} levels), "
                f"but is {layers_per_block}."
            )
        if (
            not isinstance(attention_levels, (list, tuple))
            or len(attention_levels) != num_levels
            or not all(isinstance(a, bool) for a in attention_levels)
        ):
            raise ValueError(
                f"`attention_levels` must have one bool per level ({num_levels} levels), but is {attention_levels}."
            )
        factor = 2 ** (num_levels - 1)
        sizes = (sample_size,) * 2 if isinstance(sample_size, int) else tuple(sample_size)
        if len(sizes) != 2 or any(not isinstance(s, int) or s < 1 or s % factor for s in sizes):
            raise ValueError(
                f"`sample_size` must be a positive int, or a (height, width) pair of them, divisible by "
                f"2 ** (len(block_out_channels) - 1) = {factor}, but is {sample_size}."
            )
        bad_groups = [c for c in block_out_channels if norm_num_groups < 1 or c % norm_num_groups]
        if bad_groups:
            raise ValueError(
                f"`norm_num_groups` must be a positive int dividing every entry of `block_out_channels` "
                f"{tuple(block_out_channels)}, but is {norm_num_groups}, which does not divide {bad_groups}."
            )
        attention_channels = {c for c, a in zip(block_out_channels, attention_levels) if a}
        attention_channels = sorted(attention_channels | {block_out_channels[-1]})
        if attention_head_dim is None:
            attention_head_dim = math.gcd(64, *attention_channels)
        self.register_to_config(
            layers_per_block=layers_per_block, attention_levels=attention_levels, attention_head_dim=attention_head_dim
        )
        valid_head_dim = _is_int(attention_head_dim) and attention_head_dim >= 1
        bad_heads = [c for c in attention_channels if not valid_head_dim or c % attention_head_dim]
        if bad_heads:
            raise ValueError(
                f"`attention_head_dim` must be a positive int dividing the channels of every level with attention and "
                f"of the last level {attention_channels}, but is {attention_head_dim}, which does not divide "
                f"{bad_heads}."
            )
        if num_class_embeds is not None and (not isinstance(num_class_embeds, int) or num_class_embeds < 1):
            raise ValueError(f"`num_class_embeds` must be None or a positive int, but is {num_class_embeds}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), but is {dropout}.")

        temb_channels = 4 * block_out_channels[0]
        layer_args = {
            "temb_channels": temb_channels,
            "head_dim": attention_head_dim,
            "groups": norm_num_groups,
            "eps": norm_eps,
            "dropout": dropout,
        }

        self.time_embedding = nn.Sequential(
            nn.Linear(block_out_channels[0], temb_channels), nn.SiLU(), nn.Linear(temb_channels, temb_channels)
        )
        # Row `num_class_embeds` is the null class of classifier-free guidance.
        self.class_embedding = None
        if num_class_embeds is not None:
            self.class_embedding = nn.Embedding(num_class_embeds + 1, temb_channels)

        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        channels = block_out_channels[0]
        skip_channels = [channels]
        self.down_layers = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        for level, level_channels in enumerate(block_out_channels):
            layers = nn.ModuleList()
            for _ in range(per_level[level]):
                layers.append(UNetLayer(channels, level_channels, attention=attention_levels[level], **layer_args))
                channels = level_channels
                skip_channels.append(channels)
            self.down_layers.append(layers)
            if level < num_levels - 1:
                self.downsamplers.append(nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1))
                skip_channels.append(channels)

        self.mid_layer = UNetLayer(channels, channels, attention=True, **layer_args)
        self.mid_resnet = ResnetBlock(channels, channels, temb_channels, norm_num_groups, norm_eps, dropout)

        self.up_layers = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for level in reversed(range(num_levels)):
            level_channels = block_out_channels[level]
            layers = nn.ModuleList()
            for _ in range(per_level[level] + 1):
                in_with_skip = channels + skip_channels.pop()
                layers.append(UNetLayer(in_with_skip, level_channels, attention=attention_levels[level], **layer_args))
                channels = level_channels
            self.up_layers.append(layers)
            if level > 0:
                # The "up-conv 2x2" of the original U-Net, to the next level's channels: a learned sub-pixel upsampling
                # at 1/9 of the FLOPs of nearest-neighbour upsampling + 3x3 conv at the higher resolution.
                self.upsamplers.append(nn.ConvTranspose2d(channels, block_out_channels[level - 1], 2, stride=2))
                channels = block_out_channels[level - 1]

        self.conv_norm_out = nn.GroupNorm(norm_num_groups, channels, eps=norm_eps)
        self.conv_out = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

        self.gradient_checkpointing = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """[`ModelMixin.from_pretrained`] for safetensors weights only: pickle weights (`.bin`), which can run code
        when loaded, are refused even where they are the only weights. Then every tensor is copied out of the
        memory-mapped safetensors file into freshly allocated memory. The mapped tensors sit at unaligned addresses,
        where CPU kernels round differently: without the copy a loaded model is not bit-identical to the model that
        was saved."""
        how_to_convert = (
            "Convert a pickle checkpoint you trust with `safetensors.torch.save_file(torch.load(bin_path, "
            "weights_only=True), bin_path.replace('.bin', '.safetensors'))`."
        )
        if kwargs.get("use_safetensors") is False or kwargs.get("use_flashpack"):
            raise ValueError(
                "SimpleUNet loads safetensors weights only: leave `use_safetensors` at None or True and "
                f"`use_flashpack` at False, not {kwargs.get('use_safetensors')!r} and {kwargs.get('use_flashpack')!r}."
                " "
                + how_to_convert
            )
        try:
            model = super().from_pretrained(pretrained_model_name_or_path, **{**kwargs, "use_safetensors": True})
        except OSError as error:
            if ".safetensors" not in str(error):
                raise
            subfolder = kwargs.get("subfolder")
            location = f"{pretrained_model_name_or_path}/{subfolder}" if subfolder else pretrained_model_name_or_path
            raise ValueError(
                f"SimpleUNet loads safetensors weights only, and {location} has no safetensors weights file; pickle "
                f"weights (.bin) are refused. {how_to_convert}"
            ) from error
        with torch.no_grad():
            for tensor in list(model.parameters()) + list(model.buffers()):
                if tensor.device.type == "cpu":
                    tensor.data = tensor.data.clone()
        return model

    def _check_inputs(self, sample: torch.Tensor, class_labels: torch.Tensor | None) -> None:
        in_channels, num_class_embeds = self.config.in_channels, self.config.num_class_embeds
        factor = 2 ** (len(self.config.block_out_channels) - 1)
        if sample.ndim != 4 or sample.shape[1] != in_channels:
            raise ValueError(
                f"`sample` must have shape (batch_size, {in_channels}, height, width), but has shape "
                f"{tuple(sample.shape)}."
            )
        if sample.shape[2] % factor or sample.shape[3] % factor:
            raise ValueError(
                f"`sample` height and width must be multiples of 2 ** (len(block_out_channels) - 1) = {factor}, but "
                f"are {tuple(sample.shape[2:])}."
            )
        if num_class_embeds is None:
            if class_labels is not None:
                raise ValueError(
                    "`class_labels` were given, but this model is unconditional (`num_class_embeds=None`): pass None."
                )
            return
        if class_labels is None:
            raise ValueError(
                f"`class_labels` are required: this model is class-conditional with "
                f"`num_class_embeds={num_class_embeds}`; pass integer labels in [0, {num_class_embeds}] "
                f"({num_class_embeds} is the null class)."
            )
        if class_labels.dtype not in _INTEGER_DTYPES or class_labels.shape != (sample.shape[0],):
            raise ValueError(
                f"`class_labels` must be an integer tensor of shape ({sample.shape[0]},), one label per sample, but "
                f"has dtype {class_labels.dtype} and shape {tuple(class_labels.shape)}."
            )
        low, high = torch.aminmax(class_labels)
        if low < 0 or high > num_class_embeds:
            raise ValueError(
                f"`class_labels` must be in [0, {num_class_embeds}] ({num_class_embeds} is the null class), but range "
                f"over [{int(low)}, {int(high)}]."
            )

    def _run(self, module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(module, *args)
        return module(*args)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> SimpleUNetOutput | tuple[torch.Tensor]:
        r"""
        The [`SimpleUNet`] forward method.

        Args:
            sample (`torch.Tensor`):
                The noisy input of shape `(batch_size, in_channels, height, width)`.
            timestep (`torch.Tensor` or `float` or `int`):
                The diffusion timestep: a number, a 0-d tensor, or a 1-d tensor of length 1 or `batch_size`.
            class_labels (`torch.Tensor`, *optional*, defaults to `None`):
                Integer labels of shape `(batch_size,)` in `[0, num_class_embeds]`, label `num_class_embeds` being the
                null class. Required if and only if the model was built with `num_class_embeds`.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`SimpleUNetOutput`] instead of a plain tuple.

        Returns:
            [`SimpleUNetOutput`] or `tuple`:
                If `return_dict` is `True`, a [`SimpleUNetOutput`] is returned, otherwise a tuple whose first element
                is the sample tensor.
        """
        if class_labels is not None:
            class_labels = torch.as_tensor(class_labels, device=sample.device)
        self._check_inputs(sample, class_labels)
        batch = sample.shape[0]
        timesteps = torch.as_tensor(timestep, device=sample.device)
        if timesteps.ndim > 1 or (timesteps.ndim == 1 and timesteps.shape[0] not in (1, batch)):
            raise ValueError(
                f"`timestep` must be a number, a 0-d tensor, or a 1-d tensor of length 1 or batch_size={batch}, but "
                f"has shape {tuple(timesteps.shape)}."
            )

        # Timestep (and class) embedding; the SiLU that every block applies to it is done once here.
        t_emb = timestep_embedding(timesteps.expand(batch), self.config.block_out_channels[0]).to(sample.dtype)
        emb = self.time_embedding(t_emb)
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(class_labels.long())
        emb = F.silu(emb)

        hidden_states = self.conv_in(sample)
        skips = [hidden_states]
        for level, layers in enumerate(self.down_layers):
            for layer in layers:
                hidden_states = self._run(layer, hidden_states, emb)
                skips.append(hidden_states)
            if level < len(self.downsamplers):
                hidden_states = self.downsamplers[level](hidden_states)
                skips.append(hidden_states)

        hidden_states = self._run(self.mid_layer, hidden_states, emb)
        hidden_states = self._run(self.mid_resnet, hidden_states, emb)

        for level, layers in enumerate(self.up_layers):
            for layer in layers:
                hidden_states = self._run(layer, torch.cat([hidden_states, skips.pop()], dim=1), emb)
            if level < len(self.upsamplers):
                hidden_states = self.upsamplers[level](hidden_states)

        sample = self.conv_out(F.silu(self.conv_norm_out(hidden_states)))
        if not return_dict:
            return (sample,)
        return SimpleUNetOutput(sample=sample)
