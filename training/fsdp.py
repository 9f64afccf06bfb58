# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""Training under FSDP2 (`torch.distributed.fsdp.fully_shard`, through Accelerate): what changes when no process holds
the full weights.

Under FSDP every parameter (and every EMA copy of one, since `EMAModel` is built from the prepared parameters) is a
`DTensor` of which each process holds one shard. Sampling and exporting need the full weights: `full_state_dict`
gathers them, a collective that every process calls. Checkpoints keep Accelerate's sharded model and optimizer state
(`torch.distributed.checkpoint`) and the EMA weights gathered into a `SimpleUNet` folder, which `shard_ema_like` cuts
back into the shards of the running processes on resume, whatever their number.

Accelerate (1.15) takes FSDP only on accelerators: with an FSDP config on a machine without one, it sets up the gloo
processes and would wrap the model in DDP, silently. FSDP2 itself runs on CPUs with gloo, so `use_fsdp_on_cpus` turns
Accelerate's FSDP path on for such processes: that is how sharded training and resume are tested here.
"""

import os

import torch
from accelerate import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch.distributed.tensor import DTensor, distribute_tensor


def use_fsdp_on_cpus(accelerator) -> None:
    """With an FSDP config (`ACCELERATE_USE_FSDP`) on processes that Accelerate set up on CPUs (gloo), switches the
    accelerator to FSDP, with the plugin read from the config as Accelerate does on accelerators."""
    if accelerator.distributed_type == DistributedType.MULTI_CPU and os.environ.get("ACCELERATE_USE_FSDP") == "true":
        # Both shared states: AcceleratorState copies PartialState's fields whenever it is instantiated.
        PartialState().distributed_type = accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()


def is_sharded(tensors) -> bool:
    """Whether any of `tensors` (a model's parameters, an EMA's shadow parameters) is sharded."""
    return any(isinstance(t, DTensor) for t in tensors)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's shard of `tensor` (`tensor` itself if it is not sharded)."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole of `tensor`, gathered from every process if it is sharded (a collective)."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_state_dict(model: torch.nn.Module, ema=None) -> dict:
    """The full `state_dict` of `model`, with the EMA weights in place of the parameters if `ema` is given, to load into
    an unsharded copy (`load_state_dict` copies it). Call it on every process: sharded tensors are gathered (every
    process gets the whole state)."""
    state = {name: full(tensor) for name, tensor in model.state_dict().items()}
    if ema is not None:
        for (name, _), shadow in zip(model.named_parameters(), ema.shadow_params):
            state[name] = full(shadow)
    return state


def gathered_ema(ema):
    """`ema` if it is not sharded, else an unsharded copy (its `save_pretrained` writes the full EMA model): a
    collective."""
    if not is_sharded(ema.shadow_params):
        return ema
    state = ema.state_dict()
    state["shadow_params"] = [full(p) for p in state["shadow_params"]]  # new tensors, gathered
    copy = type(ema)(state["shadow_params"], model_cls=ema.model_cls, model_config=ema.model_config)
    copy.load_state_dict(state)
    return copy


def shard_ema_like(ema, parameters) -> None:
    """Cuts the full EMA weights of `ema` (as loaded from a checkpoint) into shards like `parameters`. Every process
    holds the full weights, so each keeps its own shard without communication."""
    ema.shadow_params = [
        distribute_tensor(shadow, p.device_mesh, p.placements, src_data_rank=None) if isinstance(p, DTensor) else shadow
        for shadow, p in zip(ema.shadow_params, parameters)
    ]
