"""Exact resume, graceful stop and non-finite skipping, as a mixin of the training modules.

What a checkpoint carries beside Lightning's own state (``checkpoint["minillm"]``): the resolved config
(a resume compares it), the RNG states, the data position, the schedules' horizon, the count of skipped
updates and whatever the module adds (``extra_state``: the MiniLLM round in progress). A stop requested
by a signal or ``fit.stop_at_step`` writes ``last.ckpt`` between updates and ends the run; so do
``fit.max_bad_steps`` non-finite updates in a row.

With a LoRA student (``student.lora.r``) the checkpoint's ``state_dict`` holds only the trainable tensors,
the adapters: the frozen weights are the student's as loaded, and loading fills them in from the model.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from minillm.errors import MinillmError, RunInterrupted
from minillm.models.lora import is_lora
from minillm.resume.lightning_state import (
    attached_trainer,
    fix_epoch_end_checkpoint,
    logging_step,
    rescale_data_position,
    set_logging_step,
    store_stop_log_step,
)
from minillm.resume.model_files import model_digests
from minillm.resume.rng import rng_state, set_rng_state
from minillm.resume.signals import stop_callback
from minillm.training.optim import is_constant

log = logging.getLogger(__name__)


class ResumableMixin:
    """Mixed into a LightningModule that has ``cfg`` and ``student``; call :meth:`init_resume_state` in
    ``__init__``."""

    def init_resume_state(self, cfg) -> None:
        # LoRA: checkpoints lack the frozen weights. Our load_state_dict fills them in and checks the keys
        # itself; Lightning's FSDP2 strategy loads through torch.distributed and needs strict off to skip them.
        self.strict_loading = not is_lora(self.student)
        self.max_bad_steps = int(OmegaConf.select(cfg, "fit.max_bad_steps", default=5) or 5)
        self.bad_steps = 0  # consecutive updates skipped for non-finite values
        self.seconds_before = 0.0  # training seconds of the runs this one resumed (the checkpoint's total)
        self._train_started: float | None = None
        self._in_batch = False  # between on_train_batch_start and on_train_batch_end
        self._resume_state: dict | None = None
        self._stop_log_step: int | None = None
        self._schedule_steps: int | None = None  # optimizer steps the schedules span (configure_optimizers)
        self._config: dict | None = None  # the resolved config, as plain containers, for the checkpoint
        self._model_digests: dict[str, str] = {}  # set with _config
        self._resume_log_step: int | None = None  # set at the first batch after a resume

    def _world(self) -> tuple[int, int]:
        """(this process's rank, the number of data-parallel processes)."""
        trainer = attached_trainer(self)
        return (int(trainer.global_rank), int(trainer.world_size)) if trainer is not None else (0, 1)

    def rank_generators(self) -> list[torch.Generator]:
        """The generators that must differ between ranks (the ones that sample responses); a rank that a
        resume at a larger world size adds re-seeds them. Generators that decide what every rank does
        together (on-policy or not, fresh or replayed) are the same on all ranks and are not listed."""
        return []

    def rank_seed(self, offset: int) -> int:
        """``seed + offset`` on rank 0, a seed of its own on every other rank."""
        return int(self.cfg.seed) + offset + 1_000_003 * self._world()[0]

    def _rank_states(self) -> list[dict] | None:
        """Every rank's random state and extra state, gathered on every rank (a collective: all ranks save
        together, as Lightning's checkpointing does); None in one process."""
        world = self._world()[1]
        if world == 1 or not torch.distributed.is_initialized():
            return None
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, {"rng": rng_state(), **self.extra_state()})
        return gathered

    def _sampler(self):
        dm = self.trainer.datamodule if attached_trainer(self) is not None else None
        return getattr(dm, "train_sampler", None)

    def _trained_keys(self) -> set[str] | None:
        """The state-dict keys of the trainable tensors when the student is a LoRA one (else None)."""
        if not is_lora(self.student):
            return None
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def checkpoint_state_dict(self, state_dict: dict | None = None) -> dict:
        """What a checkpoint holds of the module's ``state_dict`` (or of ``state_dict``): all of it, or with a
        LoRA student only the adapters."""
        state = self.state_dict() if state_dict is None else state_dict
        keep = self._trained_keys()
        return state if keep is None else {k: v for k, v in state.items() if k in keep}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``; with a LoRA student the checkpoint's adapters must be exactly this
        student's, and the frozen weights are kept as loaded."""
        keep = self._trained_keys()
        if keep is not None:
            own = self.state_dict()
            missing, extra = sorted(keep - state_dict.keys()), sorted(state_dict.keys() - own.keys())
            if missing or extra:
                first = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
                raise MinillmError(
                    f"the checkpoint's LoRA adapters do not fit this student ({first}): student.lora and the "
                    "student must be those of the run that wrote it"
                )
            state_dict = {**own, **state_dict}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def extra_state(self) -> dict:
        """What a subclass adds to the checkpoint's ``minillm`` state (generators, a round in progress)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        sampler = self._sampler()
        data = sampler.state_dict() if sampler is not None else None
        if data is not None and self._in_batch and not self.batch_in_progress():
            data["consumed"] += 1  # saved at the end of this batch, after its update
        if self._config is None:
            from omegaconf import OmegaConf

            self._config = OmegaConf.to_container(self.cfg, resolve=True)
            self._model_digests = model_digests(self._config)  # hashed once per run
        checkpoint["state_dict"] = self.checkpoint_state_dict(checkpoint["state_dict"])
        checkpoint["minillm"] = {
            "objective": str(self.cfg.objective.name),
            # plain dicts / lists / scalars: readable with torch.load(weights_only=True); a resume compares it
            "config": self._config,
            "models": self._model_digests,  # the files of student/teacher/tokenizer.path: a resume compares them
            "schedule_steps": self._schedule_steps,
            "rng": rng_state(),
            "data": data,
            "bad_steps": self.bad_steps,
            "log_step": self._stop_log_step,
            # wall seconds of training so far, over every resumed segment (results.json's train_seconds)
            "train_seconds": self.seconds_before
            + (time.perf_counter() - self._train_started if self._train_started is not None else 0.0),
            **self.extra_state(),  # rank 0's (and a one-process run's)
            "world_size": self._world()[1],
            "ranks": self._rank_states(),  # data-parallel: each rank's RNG and extra state, in rank order
        }
        if self._stop_log_step is not None:  # saved between updates: Lightning's restart counts one more
            store_stop_log_step(checkpoint, self._stop_log_step)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("minillm")
        if state is None:
            return
        self._resume_state = state
        dm = self.trainer.datamodule if attached_trainer(self) is not None else None
        if dm is not None and state.get("data") is not None and hasattr(dm, "train_global_batch"):
            moved = rescale_data_position(checkpoint, dm.train_global_batch(self._world()[1]))
            if moved is not None and moved[0] != moved[1]:
                log.warning(
                    "the checkpoint's global batch differs from this run's: %d batches of this epoch done "
                    "become %d (by examples seen; a partial batch is trained again)",
                    *moved,
                )
        if dm is not None and state.get("data") is not None and hasattr(dm, "train_batches_in_epoch"):
            # written at the end of the run's last epoch: training goes on past it, to this run's limits
            where = fix_epoch_end_checkpoint(
                checkpoint, dm.train_batches_in_epoch(int(state["data"]["epoch"]))
            )
            if where == "inside":
                log.info(
                    "the checkpoint's epoch was cut short by the run's limit: training goes on inside it"
                )
        if dm is not None and state.get("data") is not None:
            if getattr(dm, "train_sampler", None) is not None:
                dm.train_sampler.load_state_dict(state["data"])
            else:
                dm.pending_sampler_state = state["data"]

    def on_train_start(self):
        self._train_started = time.perf_counter()
        state, self._resume_state = self._resume_state, None
        if state is None:
            return
        self.seconds_before = float(state.get("train_seconds") or 0.0)
        # after Lightning's own restore and on_fit_start, so nothing overwrites these afterwards
        rank, world = self._world()
        ranks = state.get("ranks") or [state]  # each rank's own state; one process: the top level
        saved_world = int(state.get("world_size") or len(ranks))
        if saved_world != world and any(r.get("round") is not None for r in ranks):
            raise MinillmError(
                f"the checkpoint was written inside a MiniLLM round by {saved_world} process(es); this run has "
                f"{world}: resume it at {saved_world} (the round's rollouts are per rank), or from a checkpoint "
                "written between rounds (checkpoints/best.ckpt, or last.ckpt of a run that ended)"
            )
        own = ranks[rank] if rank < len(ranks) else ranks[0]
        set_rng_state(own["rng"])
        self.bad_steps = int(state.get("bad_steps", 0))
        self.load_extra_state(own)
        if rank >= len(ranks):  # a rank the checkpoint did not have: its own samples from here on
            step = int(self.global_step)
            torch.manual_seed(self.rank_seed(step))
            for i, generator in enumerate(self.rank_generators()):
                generator.manual_seed(self.rank_seed(step + 1 + i))
        if saved_world != world and rank == 0:
            log.warning("the checkpoint was written by %d process(es), this run has %d", saved_world, world)
        self._resume_log_step = state.get("log_step")
        log.info("resumed at step %d with the saved RNG, data position and state", self.global_step)
        max_steps = int(self.trainer.max_steps or -1)
        if 0 <= max_steps <= self.global_step:
            log.warning(
                "the checkpoint is at step %d, this run's trainer.max_steps=%d: nothing to train (raise "
                "trainer.max_steps to go on); the student is evaluated as it is",
                self.global_step,
                max_steps,
            )
        saved = state.get("schedule_steps")
        if saved is not None and saved != self._schedule_steps:
            log.warning(
                "the schedule's horizon changed: the checkpoint's schedules spanned %d optimizer steps, "
                "this run's span %d (scheduler: %s%s)",
                saved,
                self._schedule_steps,
                self.cfg.scheduler.get("_target_"),
                ", constant after its warm-up: the learning rate is unchanged"
                if is_constant(self.cfg.scheduler)
                else "",
            )

    def on_train_batch_start(self, batch, batch_idx):
        if self._resume_log_step is not None:
            # the logging step the checkpoint goes on from, whatever Lightning's restart counted
            set_logging_step(self.trainer, self._resume_log_step)
            self._resume_log_step = None
        if not self.batch_in_progress():
            self.stop_if_requested()
        self._in_batch = True

    def on_train_batch_end(self, outputs, batch, batch_idx):
        sampler = self._sampler()
        if sampler is not None:
            sampler.consumed += 1
        self._in_batch = False

    def batch_in_progress(self) -> bool:
        """True while a resumed MiniLLM round still has updates to run (the batch is redone)."""
        return False

    def save_stop_checkpoint(self) -> Path:
        """Write ``last.ckpt`` now (atomically) and return its path."""
        callback = self.trainer.checkpoint_callback
        folder = Path(callback.dirpath) if callback is not None and callback.dirpath else Path(".")
        path = folder / "last.ckpt"
        self._stop_log_step = logging_step(self.trainer)
        try:
            self.trainer.save_checkpoint(str(path), weights_only=False)  # the whole state, to resume
        finally:
            self._stop_log_step = None
        return path

    def stop_if_requested(self) -> None:
        stop = stop_callback(self.trainer)
        should = stop is not None and stop.should_stop(self.global_step)
        if self._world()[1] > 1:  # a signal may reach one rank first: all stop together, at the same update
            should = self.trainer.strategy.reduce_boolean_decision(should, all=False)
        if should:
            path = self.save_stop_checkpoint()
            raise RunInterrupted(path, self.global_step, stop.requested)

    def out_of_time(self) -> bool:
        """Whether ``trainer.max_time`` is spent. Lightning's Timer checks it between training batches only;
        a module whose batch holds several updates (a MiniLLM round) asks here between them. Under DDP rank
        zero decides for all (as the Timer does), so every rank stops at the same update."""
        from lightning.pytorch.callbacks import Timer

        timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)
        remaining = None if timer is None else timer.time_remaining()
        if remaining is None:
            return False
        spent = remaining <= 0
        return bool(self.trainer.strategy.broadcast(spent)) if self._world()[1] > 1 else spent

    def skip_nonfinite(self, what: str) -> None:
        """Count a skipped update; after ``fit.max_bad_steps`` in a row, save and stop."""
        self.bad_steps += 1
        log.warning("non-finite %s at step %d: update skipped", what, self.global_step)
        if self.bad_steps >= self.max_bad_steps:
            path = self.save_stop_checkpoint()
            raise MinillmError(
                f"{self.bad_steps} consecutive updates with non-finite {what} at step {self.global_step} "
                f"(fit.max_bad_steps={self.max_bad_steps}); checkpoint saved to {path}"
            )
