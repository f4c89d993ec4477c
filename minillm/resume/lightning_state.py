"""Every edit of Lightning's own loop state in a checkpoint (``checkpoint["loops"]``) and on a running
trainer: the project's only reach into Lightning's private names, so a Lightning upgrade that moves them
breaks here (``tests/test_lightning_private.py`` checks them against a real fit)."""

from __future__ import annotations


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
    progress = ((ckpt.get("loops") or {}).get("fit_loop") or {}).get("epoch_loop.batch_progress") or {}
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
    fit = (ckpt.get("loops") or {}).get("fit_loop")
    if data is None or fit is None:
        return None
    progress = fit.get("epoch_progress", {})
    parts = [progress.get("total"), progress.get("current")]
    ended = all(
        p is not None and p["ready"] == p["started"] == p["processed"] == p["completed"] + 1 for p in parts
    )
    if not ended:
        return None
    loop = fit.get("epoch_loop.state_dict") or {}
    if "_batches_that_stepped" in loop and ckpt["minillm"].get("log_step") is None:
        ckpt["minillm"]["log_step"] = int(loop["_batches_that_stepped"])  # at the end of an epoch: counted
    if int(data["consumed"]) < batches_in_epoch:
        for part in parts:
            part["processed"] -= 1
        return "inside"
    for part in parts:
        part["completed"] = part["processed"]
    # what Lightning resets when an epoch starts: the per-epoch ("current") counters
    for key in (
        "epoch_loop.batch_progress",
        "epoch_loop.scheduler_progress",
        "epoch_loop.automatic_optimization.optim_progress",
        "epoch_loop.manual_optimization.optim_step_progress",
    ):
        counters = fit.get(key) or {}
        for name, value in counters.items():
            if name == "current":
                _zero(value)
            elif isinstance(value, dict):  # the optimizer's step / zero_grad progress
                for sub in value.values():
                    if isinstance(sub, dict) and "current" in sub:
                        _zero(sub["current"])
    if "is_last_batch" in (fit.get("epoch_loop.batch_progress") or {}):
        fit["epoch_loop.batch_progress"]["is_last_batch"] = False
    val = fit.get("epoch_loop.val_loop.batch_progress") or {}
    if "total" in val:
        _zero(val["total"])
    return "next"


def resume_log_step(ckpt: dict) -> int:
    """The logging step training goes on from: metrics logged at or after it are logged again."""
    meta = ckpt.get("minillm") or {}
    if meta.get("log_step") is not None:  # stopped between updates (a signal or fit.stop_at_step)
        return int(meta["log_step"])
    loop = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
    # saved by ModelCheckpoint after a batch's update, before Lightning counted it (Lightning adds 1)
    return int(loop.get("_batches_that_stepped", 0)) + 1
