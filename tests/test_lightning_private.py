"""What ``minillm.resume.lightning_state`` relies on in Lightning's private state, against the installed
Lightning: tiny fits (Lightning's BoringModel, CPU, three batches an epoch) write real checkpoints, and each
test checks a path the module reads or writes, or a behaviour of Lightning's restart that its edits
correct. A Lightning upgrade that renames a key, moves the logging-step counter or changes how a restart
counts fails here, not in a resumed run that silently trains the wrong batches.
"""

from __future__ import annotations

import logging
import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.demos.boring_classes import BoringModel

from minillm.resume import lightning_state as ls

BATCHES = 3  # training batches an epoch


class Stop(Exception):
    """Ends a fit from a hook, as a stop between updates does (``RunInterrupted``)."""


class Recorder(BoringModel):
    """BoringModel that records each training batch as ``(epoch, batch_idx)`` and Lightning's logging step
    at each batch's start; with ``stop_at`` it saves ``stop_path`` before that step's batch and stops,
    storing the logging step as ``ResumableMixin`` does."""

    def __init__(self, stop_at: int | None = None, stop_path=None):
        super().__init__()
        self.trained: list[tuple[int, int]] = []
        self.logging_steps: list[int] = []
        self.trainers_seen: list = []
        self.stop_at, self.stop_path, self.stop_log_step = stop_at, stop_path, None

    def on_train_batch_start(self, batch, batch_idx):
        self.trainers_seen.append(ls.attached_trainer(self))
        self.logging_steps.append(ls.logging_step(self.trainer))
        if self.stop_at is not None and self.global_step == self.stop_at:
            self.stop_log_step = ls.logging_step(self.trainer)
            self.trainer.save_checkpoint(self.stop_path)
            raise Stop

    def on_save_checkpoint(self, checkpoint):
        if self.stop_log_step is not None:
            ls.store_stop_log_step(checkpoint, self.stop_log_step)

    def training_step(self, batch, batch_idx):
        self.trained.append((self.current_epoch, batch_idx))
        return super().training_step(batch, batch_idx)


class SaveAt(Callback):
    """Saves a checkpoint where the project's ModelCheckpoint does: at an epoch's end, or after a batch."""

    def __init__(self, path, after_step: int | None = None):
        self.path, self.after_step = path, after_step

    def on_train_epoch_end(self, trainer, pl_module):
        if self.after_step is None:
            trainer.save_checkpoint(self.path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.after_step is not None and trainer.global_step == self.after_step:
            trainer.save_checkpoint(self.path)


def fit(module, ckpt_path=None, **trainer_args) -> L.Trainer:
    trainer = L.Trainer(
        **{
            "accelerator": "cpu",
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "limit_train_batches": BATCHES,
            "limit_val_batches": 0,
            "num_sanity_val_steps": 0,
            **trainer_args,
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BoringModel's loader has no workers and is not resumable
        try:
            trainer.fit(module, ckpt_path=None if ckpt_path is None else str(ckpt_path))
        except Stop:
            pass
    return trainer


@pytest.fixture(autouse=True)
def _quiet_lightning():
    logger = logging.getLogger("lightning")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def read(path) -> dict:
    return torch.load(path, weights_only=False)  # written by this test


def with_data(ckpt: dict, consumed: int, global_batch: int | None = None) -> dict:
    """The data position the project's modules write beside Lightning's state."""
    ckpt["minillm"] = {"data": {"consumed": consumed, "epoch": 0, "global_batch": global_batch}}
    return ckpt


@pytest.fixture(scope="module")
def epoch_end(tmp_path_factory):
    """A checkpoint written at the end of a run's only epoch (max_steps = the epoch's batches), after the
    epoch's validation."""
    path = tmp_path_factory.mktemp("epoch_end") / "last.ckpt"
    fit(Recorder(), max_steps=BATCHES, limit_val_batches=1, callbacks=[SaveAt(path)])
    return path


def test_a_real_checkpoint_holds_every_loop_path_the_module_reads_and_writes(epoch_end):
    fit_state = ls.fit_loop_state(read(epoch_end))
    assert fit_state is not None, f"checkpoint[{ls.LOOPS!r}][{ls.FIT_LOOP!r}] is gone"
    for key in (ls.EPOCH_PROGRESS, ls.EPOCH_LOOP_STATE, ls.VAL_BATCH_PROGRESS, *ls.PER_EPOCH_PROGRESS):
        assert key in fit_state, f"the fit loop's state has no {key!r}: {sorted(fit_state)}"
    for part in ("total", "current"):
        assert set(fit_state[ls.EPOCH_PROGRESS][part]) == {"ready", "started", "processed", "completed"}
        assert {"ready", "started", "processed", "completed"} <= set(fit_state[ls.BATCH_PROGRESS][part])
    assert "is_last_batch" in fit_state[ls.BATCH_PROGRESS]
    assert fit_state[ls.VAL_BATCH_PROGRESS]["total"]["completed"] == 1  # the epoch's one validation batch
    assert fit_state[ls.EPOCH_LOOP_STATE][ls.LOGGING_STEP] == BATCHES
    optimizer = fit_state[ls.OPTIM_PROGRESS]["optimizer"]
    for tracker in ("step", "zero_grad"):
        assert {"current", "total"} <= set(optimizer[tracker])


def test_the_per_epoch_counters_are_all_zero_once_an_epoch_end_checkpoint_moves_to_the_next_epoch(epoch_end):
    ckpt = with_data(read(epoch_end), BATCHES)
    assert ls.fix_epoch_end_checkpoint(ckpt, BATCHES) == "next"
    fit_state = ls.fit_loop_state(ckpt)
    currents = [fit_state[k]["current"] for k in ls.PER_EPOCH_PROGRESS if "current" in fit_state[k]]
    optimizer = fit_state[ls.OPTIM_PROGRESS]["optimizer"]
    currents += [optimizer["step"]["current"], optimizer["zero_grad"]["current"]]
    assert len(currents) == len(ls.PER_EPOCH_PROGRESS) + 1  # the optimizer's progress holds two trackers
    assert all(value == 0 for counters in currents for value in counters.values())
    assert set(fit_state[ls.VAL_BATCH_PROGRESS]["total"].values()) == {0}  # validation counts per epoch
    assert fit_state[ls.BATCH_PROGRESS]["is_last_batch"] is False
    assert fit_state[ls.BATCH_PROGRESS]["total"]["completed"] == BATCHES  # totals stay
    assert all(p["completed"] == p["processed"] == 1 for p in fit_state[ls.EPOCH_PROGRESS].values())


def test_an_epoch_end_checkpoint_goes_on_in_the_next_epoch_only_once_rewritten(epoch_end, tmp_path):
    fixed = with_data(read(epoch_end), BATCHES)
    assert ls.fix_epoch_end_checkpoint(fixed, BATCHES) == "next"
    assert fixed["minillm"]["log_step"] == BATCHES
    torch.save(fixed, tmp_path / "fixed.ckpt")
    resumed = Recorder()
    fit(resumed, tmp_path / "fixed.ckpt", max_steps=2 * BATCHES)
    assert resumed.trained == [(1, b) for b in range(BATCHES)]
    assert resumed.logging_steps == list(range(BATCHES, 2 * BATCHES))
    # Lightning's own restart of the file as written goes wrong (the reason for the rewrite): when it
    # no longer does, the rewrite may be undoing a fix of Lightning's
    as_written = Recorder()
    fit(as_written, epoch_end, max_steps=2 * BATCHES)
    assert as_written.trained != resumed.trained


def test_a_checkpoint_cut_inside_its_epoch_goes_on_inside_it(tmp_path):
    cut = tmp_path / "cut.ckpt"
    fit(Recorder(), max_steps=2, callbacks=[SaveAt(cut)])  # the limit ends the epoch after 2 of 3 batches
    fixed = with_data(read(cut), 2)
    assert ls.fix_epoch_end_checkpoint(fixed, BATCHES) == "inside"
    assert fixed["minillm"]["log_step"] == 2
    torch.save(fixed, tmp_path / "fixed.ckpt")
    resumed = Recorder()
    fit(resumed, tmp_path / "fixed.ckpt", max_steps=BATCHES, max_epochs=1)
    assert resumed.trained == [(0, 2)]
    as_written = Recorder()
    fit(as_written, cut, max_steps=BATCHES, max_epochs=1)
    assert as_written.trained == []  # Lightning counts the cut epoch as done


def test_a_checkpoint_written_after_a_batch_inside_the_epoch_is_left_alone(tmp_path):
    path = tmp_path / "mid.ckpt"
    fit(Recorder(), max_steps=BATCHES, callbacks=[SaveAt(path, after_step=2)])
    ckpt = with_data(read(path), 2)
    before = repr(ckpt)
    assert ls.fix_epoch_end_checkpoint(ckpt, BATCHES) is None
    assert repr(ckpt) == before
    # saved after the second update, before Lightning counted it: training goes on at logging step 2
    assert ls.fit_loop_state(ckpt)[ls.EPOCH_LOOP_STATE][ls.LOGGING_STEP] == 1
    assert ls.resume_log_step(ckpt) == 2
    resumed = Recorder()
    fit(resumed, path, max_steps=BATCHES)
    assert resumed.trained == [(0, 2)] and resumed.logging_steps == [2]


def test_a_rescaled_data_position_moves_the_batch_lightning_resumes_at(tmp_path):
    path = tmp_path / "mid.ckpt"
    fit(Recorder(), max_steps=BATCHES, callbacks=[SaveAt(path, after_step=2)])
    ckpt = with_data(read(path), 2, global_batch=4)
    assert ls.rescale_data_position(ckpt, 8) == (2, 1)  # 2 batches of 4 examples: 1 batch of 8
    torch.save(ckpt, tmp_path / "rescaled.ckpt")
    resumed = Recorder()
    fit(resumed, tmp_path / "rescaled.ckpt", max_steps=BATCHES + 1)
    assert resumed.trained[:2] == [(0, 1), (0, 2)]


def test_a_stop_between_updates_resumes_at_the_logging_step_it_stopped_at(tmp_path):
    """The module stores one less (``store_stop_log_step``): Lightning's restart of a checkpoint saved
    before a batch adds one to its counter."""
    path = tmp_path / "stop.ckpt"
    stopped = Recorder(stop_at=2, stop_path=path)
    fit(stopped, max_steps=BATCHES)
    assert stopped.trained == [(0, 0), (0, 1)] and stopped.stop_log_step == 2
    assert ls.fit_loop_state(read(path))[ls.EPOCH_LOOP_STATE][ls.LOGGING_STEP] == 1
    resumed = Recorder()
    fit(resumed, path, max_steps=BATCHES)
    assert resumed.trained == [(0, 2)]
    assert resumed.logging_steps == [2]


def test_the_trainer_and_its_logging_step_are_where_the_module_reads_and_sets_them():
    module = Recorder()
    assert ls.attached_trainer(module) is None
    trainer = fit(module, max_steps=2)
    assert module.trainers_seen == [trainer, trainer]
    assert module.logging_steps == [0, 1] and ls.logging_step(trainer) == 2
    ls.set_logging_step(trainer, 7)
    assert ls.logging_step(trainer) == 7
    # the attribute is what the checkpoint saves, at the path the module reads
    assert trainer.fit_loop.state_dict()[ls.EPOCH_LOOP_STATE][ls.LOGGING_STEP] == 7
