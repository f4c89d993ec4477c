"""The optimizer and learning-rate schedule, built from the ``optim`` and ``scheduler`` config nodes.

Both nodes are ``_partial_`` Hydra targets completed here: the optimizer with the student's parameter
groups, the schedule with the run's number of optimizer steps (known only once the trainer is set up).
"""

from __future__ import annotations

import inspect

import torch
from omegaconf import DictConfig

from minillm.instantiate import check_call, instantiate_node

# AdamW's betas left under an SGD _target_, say: how to mend the node
_HINT = " (remove a key with ~{key}.NAME, add one with +{key}.NAME=VALUE)"


def parameter_groups(params, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (not on norms and biases); frozen parameters are left out."""
    params = [p for p in params if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def make_optimizer(params, optim_cfg: DictConfig) -> torch.optim.Optimizer:
    """``optim`` (a ``_partial_`` optimizer class, e.g. torch.optim.AdamW) over :func:`parameter_groups`."""
    factory = instantiate_node(optim_cfg, "optim")
    kwargs = dict(getattr(factory, "keywords", {}))
    if isinstance(kwargs.get("betas"), list):
        kwargs["betas"] = tuple(kwargs["betas"])
    groups = parameter_groups(params, float(kwargs.pop("weight_decay", 0.0) or 0.0))
    check_call(factory.func, "optim", groups, hint=_HINT.format(key="optim"), **kwargs)
    return factory.func(groups, **kwargs)


def make_scheduler(optimizer, scheduler_cfg: DictConfig, num_training_steps: int):
    """``scheduler`` (a ``_partial_`` function of the optimizer, e.g. one of transformers' warm-up
    schedules) over ``num_training_steps`` steps, when it takes that argument."""
    factory = instantiate_node(scheduler_cfg, "scheduler")
    extra = {"num_training_steps": num_training_steps}
    if "num_training_steps" not in inspect.signature(factory.func).parameters:
        extra = {}
    args, kwargs = (optimizer, *factory.args), {**factory.keywords, **extra}
    check_call(factory.func, "scheduler", *args, hint=_HINT.format(key="scheduler"), **kwargs)
    return factory.func(*args, **kwargs)


def is_constant(scheduler_cfg: DictConfig) -> bool:
    """True when the schedule keeps the learning rate constant after its warm-up."""
    return "constant" in str(scheduler_cfg.get("_target_", "")).rsplit(".", 1)[-1]
