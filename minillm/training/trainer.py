"""The objective's LightningModule and the lightning.Trainer, built from the config, and fitting."""

from __future__ import annotations

import contextlib
import re
import time

import lightning as L
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from minillm.errors import MinillmError, RunInterrupted
from minillm.instantiate import instantiate_node
from minillm.models.loading import objective_needs_teacher
from minillm.resume.checkpoint_io import AtomicCheckpointIO
from minillm.safe_load import checkpoint_types_allowed


def module_class(cfg):
    """The LightningModule class ``objective.module._target_`` names (its ``train_data`` says what the
    datamodule's training batches hold)."""
    target = cfg.objective.get("module", {}).get("_target_")
    try:
        return get_class(str(target))
    except Exception:
        raise MinillmError(
            f"objective.module._target_={target!r}: not an importable LightningModule class "
            "(e.g. minillm.training.supervised.SupervisedModule)"
        ) from None


def build_module(cfg, student, teacher, tokenizer, dm) -> L.LightningModule:
    """``objective.module`` completed with the models, the tokenizer and the data (the teacher only when
    the objective trains against it)."""
    return instantiate(cfg.objective.module)(
        student,
        cfg,
        tokenizer,
        teacher=teacher if objective_needs_teacher(cfg) else None,
        datamodule=dm,
    )


def make_trainer(cfg, loggers, extra_callbacks=()) -> tuple[L.Trainer, ModelCheckpoint]:
    """``trainer`` (lightning.Trainer's arguments, whole) with the ``callbacks`` node's callbacks, the
    loggers and the atomic checkpoint writer; returns it with the ModelCheckpoint that selects the run's
    student (the one monitoring ``select.monitor``)."""
    callbacks = []
    for name, node in cfg.callbacks.items():
        callbacks.append(instantiate_node(node, f"callbacks.{name}"))
    callbacks.extend(extra_callbacks)
    selecting = [
        c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor == str(cfg.select.monitor)
    ]
    if not selecting:
        raise MinillmError(
            f"callbacks: no ModelCheckpoint monitors select.monitor={cfg.select.monitor} "
            "(the run selects its student with it)"
        )
    trainer = instantiate(cfg.trainer, _convert_="all")(
        logger=loggers,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(cfg.output_dir),
    )
    return trainer, selecting[0]


def lightning_config_error(err: Exception, cfg) -> Exception:
    """Lightning's complaints about a trainer setting, as one line naming the config key; anything else
    is returned unchanged (a real bug keeps its traceback)."""
    text = " ".join(str(err).split())
    if "val_check_interval" in text:
        batches = re.search(r"training batches \((\d+)\)", text)
        limit = f" ({batches.group(1)} per epoch here)" if batches else ""
        return MinillmError(
            f"trainer.val_check_interval={cfg.trainer.val_check_interval}: must not exceed the training "
            f"batches per epoch{limit}; use a smaller number or a fraction of an epoch such as 0.5"
        )
    if "could not find the monitored key" in text:
        logged = re.search(r"returned metrics: (\[.*?\])", text)
        return MinillmError(
            f"select.monitor={cfg.select.monitor}: this run never logs that metric"
            + (f" (it logs {logged.group(1)})" if logged else "")
        )
    return err


def fit(cfg, trainer: L.Trainer, module, dm, ckpt_path, loggers) -> float:
    """``trainer.fit`` (resuming from ``ckpt_path`` when set); returns the seconds it took. A stop the
    user asked for closes the loggers as aborted; Lightning's complaints about a setting name its key."""
    started = time.perf_counter()
    try:
        # weights_only: AtomicCheckpointIO loads with our allowlist; a strategy that loads the file itself
        # (FSDP2's ModelParallelStrategy) gets the allowlist for the duration of fit
        with checkpoint_types_allowed() if ckpt_path else contextlib.nullcontext():
            trainer.fit(
                module, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True
            )
    except RunInterrupted:
        for lg in loggers:
            lg.save()
            lg.finalize("aborted")
        raise
    except (ValueError, MisconfigurationException) as err:
        raise lightning_config_error(err, cfg) from None
    return time.perf_counter() - started
