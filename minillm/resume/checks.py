"""What a resume checks of a checkpoint: its objective and student shapes, and its config."""

from __future__ import annotations

import logging
from pathlib import Path

from minillm.errors import MinillmError
from minillm.resume.config_diff import (
    LAYOUT_KEYS,
    LIMIT_KEYS,
    config_differences,
    describe_difference,
)
from minillm.resume.model_files import training_differences
from minillm.resume.saved_config import checkpoint_config

log = logging.getLogger(__name__)


def check_checkpoint(ckpt: dict, path: Path, objective: str, module=None) -> None:
    """The checkpoint must come from the same objective and (given ``module``) a student of the same shapes."""
    meta = ckpt.get("minillm") if isinstance(ckpt, dict) else None
    if meta is None:
        raise MinillmError(f"ckpt_path={path}: not a minillm training checkpoint (no 'minillm' state)")
    if meta.get("objective") != objective:
        raise MinillmError(
            f"ckpt_path={path}: checkpoint is from objective={meta.get('objective')}, "
            f"this run is objective={objective}"
        )
    if module is None:
        return
    have = {k: tuple(v.shape) for k, v in module.checkpoint_state_dict().items()}  # LoRA: the adapters
    saved = {k: tuple(v.shape) for k, v in ckpt.get("state_dict", {}).items()}
    if have != saved:
        diff = sorted(set(have.items()) ^ set(saved.items()))
        raise MinillmError(
            f"ckpt_path={path}: checkpoint holds a different student model (first mismatch: {diff[0][0]})"
        )


def check_config(ckpt: dict, path: Path, current: dict, allow_change: bool = False) -> None:
    """Refuse (one line naming the first differing key) a checkpoint trained with a config that differs
    in a key that changes training; with ``allow_change`` say so and go on. Log limit changes."""
    saved = checkpoint_config(ckpt, path)
    if saved is None:
        log.warning("ckpt_path=%s carries no config: only its objective and model shapes are checked", path)
        return
    diffs = training_differences(ckpt, saved, current)
    if diffs and not allow_change:
        raise MinillmError(
            f"ckpt_path={path}: the checkpoint was {describe_difference(diffs[0])}; only keys that bound a "
            f"run (max_steps, max_epochs, max_time, logger, ...) may change on resume "
            f"(resume.allow_config_change=true resumes it anyway)"
        )
    # the optimizer's param groups (lr, betas, weight decay, ...) are restored from the checkpoint whatever the
    # config says; the schedule's function is rebuilt from the config (its base rates come from the checkpoint)
    frozen = [d for d in diffs if d[0].startswith("optim.")]
    if frozen:
        key, old, new = frozen[0]
        raise MinillmError(
            f"ckpt_path={path}: {key}: {old} -> {new} cannot take effect on resume, even with "
            "resume.allow_config_change=true: the optimizer's state (its learning rate, betas and weight decay "
            "included) comes from the checkpoint; start a new run to train with other optimizer settings"
        )
    if diffs:
        log.warning(
            "resume.allow_config_change=true: resuming a checkpoint trained with another config (%s)",
            "; ".join(f"{k}: {a} -> {b}" for k, a, b in diffs),
        )
    bound = config_differences(saved, current, bound=True)
    layout = [d for d in bound if any(d[0] == k or d[0].startswith(k + ".") for k in LAYOUT_KEYS)]
    if layout:
        log.warning(
            "resuming on another layout (%s): weights, optimizer, schedule and step carry over; at another "
            "world size the data position is rescaled to the examples seen and the run is no longer "
            "bit-identical to an uninterrupted one",
            ", ".join(f"{k} {a} -> {b}" for k, a, b in layout),
        )
    limits = [d for d in bound if d[0] in LIMIT_KEYS]
    if limits:
        log.info(
            "the run's limits changed since the checkpoint: %s",
            ", ".join(f"{k} {a} -> {b}" for k, a, b in limits),
        )
