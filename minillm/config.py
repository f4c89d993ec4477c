"""Checks of the composed config, before any model is loaded: each error names the config key. A key's type,
range and choices are its schema's (minillm/schema/); here are the rules between keys."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from omegaconf import DictConfig

from minillm.errors import MinillmError

log = logging.getLogger(__name__)


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if node is None or part not in node:
            return None
        node = node[part]
    return node


# Keys that lived under ``objective`` and were mirrored into other groups; each now has one home there (an
# objective yaml sets its own values in those groups). An old name is refused with its new one.
MOVED_KEYS = {
    "objective.lr": "optim.lr",
    "objective.warmup_steps": "scheduler.num_warmup_steps",
    "objective.monitor": "select.monitor",
    "objective.monitor_mode": "select.mode",
    "objective.val_check_interval": "trainer.val_check_interval",
    "objective.log_every_n_steps": "trainer.log_every_n_steps",
}


def moved_key_error(key: str) -> str | None:
    """``objective.lr moved: use optim.lr`` for a key that moved, else None."""
    new = MOVED_KEYS.get(key)
    return f"{key} moved: use {new}" if new else None


def check_moved_keys(cfg) -> None:
    """An old key name set anywhere (``+objective.lr=…``, an arm or experiment file) is refused, naming its
    new home; Hydra itself refuses ``objective.lr=…`` without the ``+`` (minillm.cli.hydra_error_line)."""
    for key in MOVED_KEYS:
        if _get(cfg, key) is not None:
            raise MinillmError(moved_key_error(key))


def validate_config(cfg) -> None:
    """Raise MinillmError naming the first bad key; warn about slow but legal choices. Each key's type, range
    and choices are its schema's (minillm/schema/, checked by composition and ``check_schema``); what is
    left here are the rules between keys, each once."""
    from minillm.schema.check import check_schema
    from minillm.schema.rules import _integer

    check_moved_keys(cfg)
    check_schema(cfg)
    seed = cfg.get("seed")
    if seed is not None and not (_integer(seed) and 0 <= seed < 2**32):
        raise MinillmError(f"seed={seed}: must be an integer in [0, 2**32) (numpy's seeds)")
    check_precision(cfg)
    if isinstance(cfg.get("objective"), DictConfig):
        from minillm.training.options import check_round_choices

        check_round_choices(cfg.objective)  # objective.variant, objective.alpha_schedule
    check_models(cfg)
    from minillm.rollout.vllm_engine import check_sampler

    check_sampler(cfg)  # sampler=vllm: the engine installed, and able to sample these models here
    check_divergence(cfg)
    check_targets(cfg)
    check_logger(cfg)
    check_inert_keys(cfg)
    out = Path(cfg.output_dir)
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("/"))
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise MinillmError(f"hydra.run.dir={out}: output directory cannot be written")


def check_precision(cfg) -> None:
    """Refuse an accelerator this machine does not have and a precision Lightning would silently replace; warn
    where a reduced precision asked for runs far slower than fp32 on this CPU."""
    import torch

    from minillm.training.precision import bf16_supported, device_type

    accelerator = str(_get(cfg, "trainer.accelerator"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise MinillmError(
            f"trainer.accelerator={accelerator}: no CUDA device is available here; use trainer=cpu"
        )
    cpu = device_type(cfg) == "cpu"  # trainer.accelerator=auto without a GPU too
    if cpu and str(_get(cfg, "trainer.precision")) in ("16-mixed", "16"):
        # Lightning runs it as bf16-mixed on CPU, while the teacher's weights and the evaluation would follow fp16
        raise MinillmError(
            f"trainer.precision={_get(cfg, 'trainer.precision')} on CPU: Lightning has no fp16 mixed precision on "
            "CPU and would train in bf16-mixed, the teacher and the evaluation in fp16; ask for "
            "trainer.precision=bf16-mixed, or auto"
        )
    cpu_bf16 = cpu and bf16_supported("cpu")
    if cpu and "bf16" in str(_get(cfg, "trainer.precision")) and not cpu_bf16:
        log.warning(
            "trainer.precision=%s on CPU: this CPU has no bf16 instructions (AVX512-BF16 / AMX) and runs it "
            "far slower than fp32; trainer.precision=auto chooses by measuring",
            cfg.trainer.precision,
        )
    teacher_dtype = _get(cfg, "fit.teacher_dtype")
    if cpu and (teacher_dtype == "fp16" or (teacher_dtype == "bf16" and not cpu_bf16)):
        log.warning(
            "fit.teacher_dtype=%s on CPU: reduced-precision matmuls are far slower than fp32 here",
            teacher_dtype,
        )


def check_models(cfg) -> None:
    """A model preset names its model one way: teacher=none has none, and a path is not also an arch."""
    if _get(cfg, "teacher.name") == "none" and (_get(cfg, "teacher.path") or _get(cfg, "teacher.arch")):
        key = "teacher.path" if _get(cfg, "teacher.path") else "teacher.arch"
        raise MinillmError(
            f"{key} is set while teacher=none (no teacher): use teacher=hf teacher.path=..., or drop {key}"
        )
    for model in ("teacher", "student"):
        path, arch = _get(cfg, f"{model}.path"), _get(cfg, f"{model}.arch")
        if path and arch:
            raise MinillmError(
                f"{model}.path={path} and {model}.arch are both set: the path is loaded and {model}.arch is "
                f"ignored; load a model with {model}=hf {model}.path=..., or build one with {model}.path=null"
            )


def check_logger(cfg) -> None:
    """A W&B-only logger key set to another value than its default is refused without logger=wandb."""
    from minillm.schema.check import default_of
    from minillm.schema.runtime import WANDB_ONLY

    logger = cfg.get("logger")
    if not isinstance(logger, DictConfig) or logger.get("wandb", True):
        return
    for name in WANDB_ONLY:
        key = f"logger.{name}"
        if name in logger and logger[name] != default_of(cfg, key):
            raise MinillmError(
                f"{key}={logger[name]} is read only by logger=wandb, and this logger (logger.wandb=false) "
                f"ignores it: add logger=wandb, or drop {key}"
            )


# The divergences' parameters and their ranges (objective=token_kd, gkd, distillm): key -> (low, high, open).
_DIVERGENCE_RANGES = {
    ("jsd", "beta"): (0.0, 1.0, False),
    ("skew_forward_kl", "alpha"): (0.0, 1.0, False),
    ("skew_reverse_kl", "alpha"): (0.0, 1.0, False),
    ("ab_divergence", "alpha"): (-math.inf, math.inf, True),
    ("ab_divergence", "beta"): (-math.inf, math.inf, True),
    ("akl", "mu"): (0.0, 1.0, True),
}


def _number(cfg, key: str):
    value = _get(cfg, key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise MinillmError(f"{key}={value!r}: must be a number")
    return value


def check_divergence(cfg) -> None:
    """The divergence of token_kd, gkd and distillm, and the parameters it takes (alpha, beta, mu) with their
    ranges; its top-k; TAID's t_start <= t_end."""
    divergence = _get(cfg, "objective.divergence")
    if divergence is not None:
        from minillm.objectives.token_kd import DIVERGENCE_PARAMS

        if divergence not in DIVERGENCE_PARAMS:
            raise MinillmError(
                f"objective.divergence={divergence!r}; choose one of {sorted(DIVERGENCE_PARAMS)}"
            )
        for name in ("alpha", "beta", "mu"):
            value = _number(cfg, f"objective.{name}")
            if value is None:
                continue
            if name not in DIVERGENCE_PARAMS[divergence]:
                takes = " and ".join(DIVERGENCE_PARAMS[divergence]) or "no parameter"
                raise MinillmError(
                    f"objective.{name}={value}: divergence={divergence} takes {takes}; set objective.{name}=null"
                )
            low, high, open_ = _DIVERGENCE_RANGES[(divergence, name)]
            inside = low < value < high if open_ else low <= value <= high
            if not inside or not math.isfinite(value):
                where = f"({low}, {high})" if open_ else f"[{low}, {high}]"
                where = "a finite number" if math.isinf(low) else f"in {where}"
                raise MinillmError(f"objective.{name}={value}: {divergence}'s {name} must be {where}")
        top_k = _get(cfg, "objective.teacher_top_k")
        if top_k is not None and divergence == "akl":
            raise MinillmError(
                f"objective.teacher_top_k={top_k}: divergence=akl needs the full distributions (top-k works "
                "with every other divergence)"
            )
    t_start, t_end = _get(cfg, "objective.t_start"), _get(cfg, "objective.t_end")
    if t_start is not None and t_end is not None and t_start > t_end:
        raise MinillmError(f"objective.t_start={t_start}: must not exceed objective.t_end={t_end}")


def check_targets(cfg) -> None:
    """Every ``_target_`` the run will instantiate names something importable (else one line naming the
    key, before any model is loaded)."""
    from minillm.instantiate import locate_target

    nodes = [
        "task",
        "data.records",
        "optim",
        "scheduler",
        "logger",
        "trainer",
        "objective.module",
        "objective.loss",
    ]
    nodes += [f"callbacks.{name}" for name in (_get(cfg, "callbacks") or {})]
    for key in nodes:
        node = _get(cfg, key)
        if isinstance(node, DictConfig) and "_target_" in node:
            locate_target(node, key)


def _inert_reason(cfg, key: str) -> str | None:
    """Why a key the chosen configs do read has no effect with the other keys' values, or None."""
    if key in ("objective.alpha_end", "objective.alpha_steps"):
        if _get(cfg, "objective.alpha_schedule") in (None, "constant"):
            return "objective.alpha_schedule=constant keeps α at objective.teacher_mix_alpha"
    if key.startswith("data.pretrain.") or key in ("objective.pt_kd_ratio", "objective.pt_batch_size"):
        if not float(_get(cfg, "objective.pt_coef") or 0.0) > 0:
            return f"objective.pt_coef={_get(cfg, 'objective.pt_coef') or 0} leaves L_PT (and its corpus) out"
    if key == "fit.compile_updates":
        module = str((_get(cfg, "objective.module") or {}).get("_target_", ""))
        if not module.endswith("OnPolicyModule"):
            return (
                f"objective={_get(cfg, 'objective.name')} does not train through the on-policy round, whose "
                "updates it compiles (objective=reverse_kld, onpolicy_rkl)"
            )
    if key == "objective.compile_decode":
        decode = str(_get(cfg, "sampler.decode") or "eager")
        alpha = float(_get(cfg, "objective.teacher_mix_alpha") or 0.0)
        constant = _get(cfg, "objective.alpha_schedule") in (None, "constant")
        # at α = 0 the teacher scores the responses through its compiled model after decoding
        if decode != "eager" and constant and alpha > 0:
            return (
                f"sampler.decode={decode} decodes through its own static-cache steps, not the compiled models"
            )
    if key == "fit.teacher_dtype" and _get(cfg, "teacher.name") == "none":
        return "teacher=none loads no teacher"
    if key in ("data.valid_size", "data.test_size") and _get(cfg, "data.path"):
        if Path(str(_get(cfg, "data.path"))).is_dir():
            split = key.split(".")[1].split("_")[0]
            return (
                f"data.path is a folder, whose {split}.jsonl is the {split} split (data.n_{split} caps it); "
                "the sizes cut a single file"
            )
    return None


def _where(key: str, value) -> str:
    """``set on the command line`` when Hydra's record of this run's overrides names ``key``, else its value."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        for override in HydraConfig.get().overrides.task:
            if override.lstrip("+").split("=", 1)[0] == key:
                return "set on the command line"
    return f"{value!r} in this config"


def check_inert_keys(cfg) -> None:
    """A key that another key's value makes inert: ``data.pretrain.path`` without ``data.pretrain.source=file``
    is refused (the file would be silently replaced by the bundled corpus); the others, set to another value
    than their schema's default, are a warning, since a sweep may set them for every job, its control included
    (``objective.pt_coef=0,1 objective.pt_kd_ratio=0.2``)."""
    from minillm.schema.check import default_of

    path = _get(cfg, "data.pretrain.path")
    if path is not None and _get(cfg, "data.pretrain.source") != "file":
        raise MinillmError(
            f"data.pretrain.path ({_where('data.pretrain.path', path)}) is read only with "
            f"data.pretrain.source=file, and data.pretrain.source={_get(cfg, 'data.pretrain.source')}: add "
            "data.pretrain.source=file, or drop data.pretrain.path"
        )
    keys = [
        "objective.alpha_end",
        "objective.alpha_steps",
        "objective.pt_kd_ratio",
        "objective.pt_batch_size",
        "fit.compile_updates",
        "objective.compile_decode",
        "fit.teacher_dtype",
        "data.valid_size",
        "data.test_size",
    ]
    pretrain = _get(cfg, "data.pretrain")
    keys += [f"data.pretrain.{name}" for name in (pretrain or {})]
    for key in keys:
        value = _get(cfg, key)
        try:
            default = default_of(cfg, key)
        except KeyError:
            continue
        if value == default:
            continue
        if key.startswith("data.pretrain.") and _where(key, value) != "set on the command line":
            continue  # a preset's size of the corpus (debug=smoke's max_chars), for whichever objective runs
        reason = _inert_reason(cfg, key)
        if reason:
            log.warning("%s (%s) has no effect in this run: %s", key, _where(key, value), reason)
