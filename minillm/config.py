"""Checks of the composed config, before any model is loaded: each error names the config key."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from minillm.errors import MinillmError

log = logging.getLogger(__name__)


def _positive_int(cfg, key: str) -> None:
    value = _get(cfg, key)
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise MinillmError(f"{key}={value!r}: must be a positive integer")


def _in_range(cfg, key: str, low: float, high: float) -> None:
    value = _get(cfg, key)
    if value is None:
        return
    if not isinstance(value, int | float) or not low <= value <= high:
        raise MinillmError(f"{key}={value!r}: must be in [{low}, {high}]")


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if node is None or part not in node:
            return None
        node = node[part]
    return node


def validate_config(cfg) -> None:
    """Raise MinillmError naming the first bad key; warn about slow but legal choices."""
    for key in (
        "data.batch_size",
        "data.eval_batch_size",
        "data.max_prompt_len",
        "data.max_response_len",
        "eval.batch_size",
        "eval.max_new_tokens",
        "objective.num_rollouts",
        "objective.mini_batch_size",
        "objective.ppo_epochs",
        "objective.max_new_tokens",
        "tokenizer.vocab_size",
    ):
        _positive_int(cfg, key)
    for key in ("objective.kd_ratio", "objective.teacher_mix_alpha", "objective.alpha_end"):
        _in_range(cfg, key, 0.0, 1.0)
    clip = _get(cfg, "objective.clip_eps")
    if clip is not None and (not isinstance(clip, int | float) or clip <= 0):
        raise MinillmError(f"objective.clip_eps={clip!r}: must be > 0")
    if cfg.data.template not in ("short", "alpaca"):
        raise MinillmError(f"data.template={cfg.data.template!r}; choose one of ['alpaca', 'short']")
    if cfg.select.mode not in ("min", "max"):
        raise MinillmError(f"select.mode={cfg.select.mode!r}; choose one of ['max', 'min']")
    if cfg.optim.schedule not in ("cosine", "constant"):
        raise MinillmError(f"optim.schedule={cfg.optim.schedule!r}; choose one of ['constant', 'cosine']")
    if not cfg.eval.seeds:
        raise MinillmError("eval.seeds: give at least one sampling seed")
    if cfg.trainer.accelerator == "cpu" and "bf16" in str(cfg.trainer.precision):
        log.warning(
            "trainer.precision=%s on CPU: this CPU has no bf16 instructions and runs ~30x slower",
            cfg.trainer.precision,
        )
    teacher_dtype = _get(cfg, "trainer.teacher_dtype")
    if teacher_dtype is not None and teacher_dtype not in ("fp32", "bf16", "fp16"):
        raise MinillmError(
            f"trainer.teacher_dtype={teacher_dtype!r}; choose one of ['bf16', 'fp16', 'fp32'] or null"
        )
    if cfg.trainer.accelerator == "cpu" and teacher_dtype in ("bf16", "fp16"):
        log.warning(
            "trainer.teacher_dtype=%s on CPU: reduced-precision matmuls are far slower than fp32 here",
            teacher_dtype,
        )
    variant = _get(cfg, "objective.variant")
    if variant is not None and variant not in ("code", "paper"):
        raise MinillmError(f"objective.variant={variant!r}; choose one of ['code', 'paper']")
    schedule = _get(cfg, "objective.alpha_schedule")
    if schedule is not None and schedule not in ("constant", "cosine", "linear"):
        raise MinillmError(
            f"objective.alpha_schedule={schedule!r}; choose one of ['constant', 'cosine', 'linear']"
        )
    stop = _get(cfg, "trainer.stop_at_step")
    if stop is not None and (not isinstance(stop, int) or stop < 0):
        raise MinillmError(f"trainer.stop_at_step={stop!r}: must be a step number >= 0 or null")
    _positive_int(cfg, "trainer.max_bad_steps")
    _positive_int(cfg, "objective.alpha_steps")
    _positive_int(cfg, "objective.chunk_size")
    budget = _get(cfg, "objective.teacher_cache_mb")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int | float) or budget < 0):
        raise MinillmError(f"objective.teacher_cache_mb={budget!r}: must be a size in MiB >= 0, or null")
    out = Path(cfg.output_dir)
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("/"))
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise MinillmError(f"hydra.run.dir={out}: output directory cannot be written")
