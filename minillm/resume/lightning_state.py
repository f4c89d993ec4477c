"""Every reach into Lightning's own loop state: the ``checkpoint["loops"]`` a resume edits, and the logging-step
counter and module attributes a running fit reads and sets. These are Lightning's private names (2.6: the
fit loop's ``state_dict`` layout, ``_TrainingEpochLoop._batches_that_stepped``, ``LightningModule._trainer``);
nothing else in the project touches them (and ``ModelCheckpoint``'s ``_should_save_on_train_epoch_end``), so a Lightning upgrade that moves them breaks here, and
``tests/test_lightning_private.py`` checks each one against a real fit.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint as _LightningModelCheckpoint

# The paths this module reads and writes under ``checkpoint["loops"]``.
LOOPS = "loops"
FIT_LOOP = "fit_loop"
# The fit loop's epochs, "total" and "current": ready, started, processed, completed.
EPOCH_PROGRESS = "epoch_progress"
EPOCH_LOOP_STATE = "epoch_loop.state_dict"
LOGGING_STEP = "_batches_that_stepped"  # the epoch loop's logging-step counter (its state_dict and attribute)
BATCH_PROGRESS = "epoch_loop.batch_progress"
VAL_BATCH_PROGRESS = "epoch_loop.val_loop.batch_progress"
OPTIM_PROGRESS = (
    "epoch_loop.automatic_optimization.optim_progress"  # "optimizer": its step and zero_grad trackers
)
# What Lightning resets when an epoch starts (``_TrainingEpochLoop.reset``): the per-epoch ("current") counters.
PER_EPOCH_PROGRESS = (
    BATCH_PROGRESS,
    "epoch_loop.scheduler_progress",
    OPTIM_PROGRESS,
    "epoch_loop.manual_optimization.optim_step_progress",
)


def attached_trainer(module):
    """The Trainer a LightningModule is attached to, or None (``module.trainer`` raises when there is none)."""
    return module._trainer


def logging_step(trainer) -> int:
    """Lightning's logging-step counter: the updates logged so far (what ``log_every_n_steps`` counts)."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def set_logging_step(trainer, step: int) -> None:
    trainer.fit_loop.epoch_loop._batches_that_stepped = step


def fit_loop_state(ckpt: dict) -> dict | None:
    """A checkpoint's ``loops.fit_loop`` (None when it has none)."""
    return (ckpt.get(LOOPS) or {}).get(FIT_LOOP)


def _epoch_loop_state(ckpt: dict, default=None):
    return ckpt.get(LOOPS, {}).get(FIT_LOOP, {}).get(EPOCH_LOOP_STATE, default)


def store_stop_log_step(checkpoint: dict, log_step: int) -> None:
    """A checkpoint saved between updates (a stop): Lightning's restart adds one to its logging-step counter
    (it expects checkpoints written after a batch), so store one less and the steps line up."""
    loop = _epoch_loop_state(checkpoint)
    if loop is not None:
        loop[LOGGING_STEP] = log_step - 1


def resume_log_step(ckpt: dict) -> int:
    """The logging step training goes on from: metrics logged at or after it are logged again."""
    meta = ckpt.get("minillm") or {}
    if meta.get("log_step") is not None:  # stopped between updates (a signal or fit.stop_at_step)
        return int(meta["log_step"])
    loop = _epoch_loop_state(ckpt, {})
    # saved by ModelCheckpoint after a batch's update, before Lightning counted it (Lightning adds 1)
    return int(loop.get(LOGGING_STEP, 0)) + 1


def _zero(counters: dict) -> None:
    for key, value in counters.items():
        if isinstance(value, dict):
            _zero(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            counters[key] = 0


def rescale_data_position(ckpt: dict, global_batch: int) -> tuple[int, int] | None:
    """Move a checkpoint's data position to another global batch size (another world size, or another
    per-rank batch): the batches already trained on in the epoch, ``consumed`` of ``data["global_batch"]``
    examples each, become ``consumed × old // new`` batches of ``global_batch`` (a partial batch is trained
    again, never skipped), and Lightning's in-epoch batch counters move by the same amount. Returns
    ``(old consumed, new consumed)``, or None when nothing changes (same size, or a checkpoint that does
    not say its size)."""
    data = (ckpt.get("minillm") or {}).get("data")
    if data is None or data.get("global_batch") in (None, global_batch):
        return None
    old = int(data["consumed"])
    new = old * int(data["global_batch"]) // int(global_batch)
    data["consumed"], data["global_batch"] = new, int(global_batch)
    progress = (fit_loop_state(ckpt) or {}).get(BATCH_PROGRESS) or {}
    for part in ("total", "current"):
        for key, value in (progress.get(part) or {}).items():
            progress[part][key] = max(0, int(value) + new - old)
    return old, new


def fix_epoch_end_checkpoint(ckpt: dict, batches_in_epoch: int) -> str | None:
    """Make a checkpoint written at the end of a run's last epoch resumable past it, to a larger limit.

    Such a checkpoint is written in ``on_train_epoch_end``, where Lightning has counted the epoch as
    processed but not yet completed, and resuming it goes wrong in two ways:

    - the run stopped at ``trainer.max_steps`` / ``max_time`` *inside* the epoch (the data position,
      ``checkpoint["minillm"]["data"]``, has batches left): with ``max_epochs=1`` the continued run ends at
      once, and a larger ``max_epochs`` counts the cut epoch as a whole one. Rewritten to the loop state
      of a checkpoint taken at that step inside the epoch: ``"inside"``.
    - the epoch ran to its end and ``trainer.max_steps`` is set: Lightning restores it as a restart at the
      end of an epoch, whose counters say the epoch's batches are all done, and trains nothing in the next
      epoch. Rewritten to the loop state at the start of the next epoch: ``"next"``.

    Lightning's restart may or may not count one more logging step (it depends on whether it takes the
    restored batch for one that validated), so the logging step training goes on from is also written to
    ``checkpoint["minillm"]["log_step"]``, which the module sets at its first batch.
    Returns which, or None when the checkpoint was not written at the end of an epoch.
    """
    data = (ckpt.get("minillm") or {}).get("data")
    fit = fit_loop_state(ckpt)
    if data is None or fit is None:
        return None
    epochs = _epoch_counters(fit)
    if not _written_at_epoch_end(epochs):
        return None
    _keep_log_step(ckpt, fit)
    if int(data["consumed"]) < batches_in_epoch:
        _reopen_epoch(epochs)
        return "inside"
    _start_next_epoch(fit, epochs)
    return "next"


def _epoch_counters(fit: dict) -> list[dict | None]:
    """The fit loop's epoch counters, ``[total, current]`` (None where missing)."""
    progress = fit.get(EPOCH_PROGRESS, {})
    return [progress.get("total"), progress.get("current")]


def _written_at_epoch_end(epochs: list[dict | None]) -> bool:
    """In ``on_train_epoch_end``: the epoch counted as processed, not yet completed."""
    return all(
        p is not None and p["ready"] == p["started"] == p["processed"] == p["completed"] + 1 for p in epochs
    )


def _keep_log_step(ckpt: dict, fit: dict) -> None:
    """Write the logging step to ``checkpoint["minillm"]["log_step"]`` (unless a stop already did)."""
    loop = fit.get(EPOCH_LOOP_STATE) or {}
    if LOGGING_STEP in loop and ckpt["minillm"].get("log_step") is None:
        ckpt["minillm"]["log_step"] = int(loop[LOGGING_STEP])  # at the end of an epoch: counted


def _reopen_epoch(epochs: list[dict]) -> None:
    """The loop state of a checkpoint inside the epoch: not yet processed."""
    for part in epochs:
        part["processed"] -= 1


def _start_next_epoch(fit: dict, epochs: list[dict]) -> None:
    """The loop state of a checkpoint at the start of the next epoch: this one completed, and what
    Lightning resets when an epoch starts reset."""
    for part in epochs:
        part["completed"] = part["processed"]
    for key in PER_EPOCH_PROGRESS:
        _zero_current(fit.get(key) or {})
    if "is_last_batch" in (fit.get(BATCH_PROGRESS) or {}):
        fit[BATCH_PROGRESS]["is_last_batch"] = False
    val = fit.get(VAL_BATCH_PROGRESS) or {}
    if "total" in val:  # validation's batches are counted per epoch
        _zero(val["total"])


def _zero_current(progress: dict) -> None:
    """Zero a progress tracker's ``current`` counters: its own, or (an optimizer's progress, which holds
    the step and zero_grad trackers) each of its trackers'."""
    for name, value in progress.items():
        if name == "current":
            _zero(value)
        elif isinstance(value, dict):
            for sub in value.values():
                if isinstance(sub, dict) and "current" in sub:
                    _zero(sub["current"])


class ModelCheckpoint(_LightningModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` (conf/callbacks/default.yaml's best and last), except that
    ``trainer.val_check_interval=1`` (an int: a validation after every training batch, as ``debug=smoke`` sets)
    saves after each validation, as any other number of batches does. Lightning compares the interval with 1.0
    (once per epoch) and took the int 1 for it, saving only at the epoch's end: the best checkpoint then chose
    among epoch ends, not validations, and kept the worst of six validations in a smoke run. The class keeps
    Lightning's name, so its state in a checkpoint is found under the same key."""

    def _should_save_on_train_epoch_end(self, trainer) -> bool:
        interval = trainer.val_check_interval
        if self._save_on_train_epoch_end is None and type(interval) is int and sum_val_batches(trainer) > 0:
            return False
        return super()._should_save_on_train_epoch_end(trainer)


def sum_val_batches(trainer) -> float:
    """Validation batches the trainer runs (a list per dataloader, or one number)."""
    batches = trainer.num_val_batches
    return sum(batches) if isinstance(batches, list) else batches
