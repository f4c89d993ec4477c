"""FSDP2 sharding of a Hugging Face decoder (``strategy=fsdp``: Lightning's ModelParallelStrategy)."""

from __future__ import annotations

import torch
from torch import nn


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated decoder blocks of a Hugging Face causal LM (Llama/Qwen/Mistral ``model.layers``,
    GPT-2 ``transformer.h``, OPT ``model.decoder.layers``; a peft wrapper is looked through): the largest
    ``nn.ModuleList`` in the model."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    return list(max(lists, key=len)) if lists else []


def shard(
    model: nn.Module, mesh, *, cpu_offload: bool = False, reshard_after_forward: bool = True
) -> nn.Module:
    """``fully_shard`` each decoder layer, then the whole model, over ``mesh`` (the data-parallel mesh):
    each rank holds 1/N of every parameter (bytes per parameter / N) and gathers one layer at a time.
    ``cpu_offload`` keeps the shards in CPU memory between uses. Works for frozen models (the teacher) too:
    they are gathered for their forward passes and never hold gradients."""
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    kwargs = dict(mesh=mesh, reshard_after_forward=reshard_after_forward)
    if cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    for layer in decoder_layers(model):
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


@torch.no_grad()
def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full (gathered) state dict of a sharded model, on every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return {k: v.detach().cpu() for k, v in state.items()}
