"""The LightningModule: a trainable student, a frozen teacher, and an objective.

The module wires the pure loss functions of ``minillm.objectives`` to the models; it computes no
loss itself. The teacher is held outside the module's registered children, so it never receives
gradients, never enters the optimizer and is never written into a checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from minillm.errors import MinillmError
from minillm.objectives.supervised import sft_loss
from minillm.resume import (
    RunInterrupted,
    fix_epoch_end_checkpoint,
    rng_state,
    set_rng_state,
    stop_callback,
)
from minillm.training.optim import is_constant, make_optimizer, make_scheduler

log = logging.getLogger(__name__)


class FrozenTeacher:
    """Holds the teacher without registering it as a submodule (so checkpoints hold only the student)."""

    def __init__(self, model):
        self.model = model

    def to(self, device):
        if self.model is not None:
            self.model.to(device)
        return self

    @torch.no_grad()
    def logits(self, **inputs) -> torch.Tensor:
        return self.model(**inputs).logits


SAMPLED_METRICS = ("val/rougeL", "val/valid_rate", "val/length")  # from validation generations


def check_sampled_monitor(cfg, val_examples, val_records) -> None:
    """Refuse, before training, a ``select.monitor`` on sampled validation metrics that no validation
    will log (Lightning would stop at the first validation with a traceback)."""
    monitor = str(cfg.select.monitor)
    if monitor not in SAMPLED_METRICS:
        return
    if not val_examples:
        raise MinillmError(
            f"select.monitor={monitor}: needs validation generations, but eval.val_samples="
            f"{cfg.eval.val_samples} and {len(val_examples)} valid prompts are sampled; set eval.val_samples > 0"
        )
    if monitor == "val/valid_rate" and not any(val_records[e.index].get("check") for e in val_examples):
        raise MinillmError(
            f"select.monitor=val/valid_rate: none of the first {len(val_examples)} valid prompts "
            "(eval.val_samples) has a validity checker ('check'), so val/valid_rate is never logged"
        )


class DistillModule(L.LightningModule):
    """Supervised objectives on teacher-forced data: ``sft`` / ``seqkd`` (CE) and ``forward_kld`` (KD).

    Validation: ``val/loss`` (cross-entropy on gold responses) each validation run, and ``val/rougeL``
    and ``val/valid_rate`` from sampled responses to the first ``eval.val_samples`` valid prompts.
    """

    train_data = "sft"  # what the datamodule's training batches hold: tokenized prompt + response

    def __init__(
        self, student, cfg, tokenizer, teacher=None, datamodule=None, val_examples=None, val_records=None
    ):
        super().__init__()
        self.student = student
        self.teacher = FrozenTeacher(teacher)
        self.cfg = cfg
        self.tokenizer = tokenizer
        # a fixed slice (the first eval.val_samples valid prompts) sampled with a fixed seed at every
        # validation, so the val/rougeL and val/valid_rate curves move only with the weights
        self.val_examples = list(val_examples or [])[: cfg.eval.val_samples or 0]
        self.val_records = val_records
        if val_examples is not None:  # built with validation data (a run): the monitor must be loggable
            check_sampled_monitor(cfg, self.val_examples, val_records)
        # the objective's loss: a pure function (student logits, labels, teacher logits) -> (loss, logs)
        self.loss_fn = instantiate(cfg.objective.loss, _convert_="all") if "loss" in cfg.objective else None
        # positions per chunk of the full-vocabulary divergences (bounded memory, same numbers); None: one pass
        self.chunk_size = cfg.objective.get("chunk_size")
        self.max_bad_steps = int(OmegaConf.select(cfg, "fit.max_bad_steps", default=5) or 5)
        self.bad_steps = 0  # consecutive updates skipped for non-finite values
        self._in_batch = False  # between on_train_batch_start and on_train_batch_end
        self._resume_state: dict | None = None
        self._stop_log_step: int | None = None
        self._schedule_steps: int | None = None  # optimizer steps the schedules span (configure_optimizers)
        self._config: dict | None = None  # the resolved config, as plain containers, for the checkpoint
        self._resume_log_step: int | None = None  # set at the first batch after a resume

    def on_fit_start(self):
        self.teacher.to(self.device)
        self.student.train()  # from_pretrained returns eval mode; Lightning keeps the mode it finds

    # ---------------------------------------------------------------- resume, stop, non-finite
    def _sampler(self):
        dm = self.trainer.datamodule if self._trainer is not None else None
        return getattr(dm, "train_sampler", None)

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
        checkpoint["minillm"] = {
            "objective": str(self.cfg.objective.name),
            # plain dicts / lists / scalars: readable with torch.load(weights_only=True); a resume compares it
            "config": self._config,
            "schedule_steps": self._schedule_steps,
            "rng": rng_state(),
            "data": data,
            "bad_steps": self.bad_steps,
            "log_step": self._stop_log_step,
            **self.extra_state(),
        }
        if self._stop_log_step is not None:
            # Saved between updates, where Lightning's restart adds one to its logging-step counter
            # (it expects checkpoints written after a batch); pre-compensate so the steps line up.
            loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict")
            if loop is not None:
                loop["_batches_that_stepped"] = self._stop_log_step - 1

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("minillm")
        if state is None:
            return
        self._resume_state = state
        dm = self.trainer.datamodule if self._trainer is not None else None
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
        state, self._resume_state = self._resume_state, None
        if state is None:
            return
        # after Lightning's own restore and on_fit_start, so nothing overwrites these afterwards
        set_rng_state(state["rng"])
        self.bad_steps = int(state.get("bad_steps", 0))
        self.load_extra_state(state)
        self._resume_log_step = state.get("log_step")
        log.info("resumed at step %d with the saved RNG, data position and state", self.global_step)
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
            self.trainer.fit_loop.epoch_loop._batches_that_stepped = self._resume_log_step
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
        self._stop_log_step = self.trainer.fit_loop.epoch_loop._batches_that_stepped
        try:
            self.trainer.save_checkpoint(str(path), weights_only=False)  # the whole state, to resume
        finally:
            self._stop_log_step = None
        return path

    def stop_if_requested(self) -> None:
        stop = stop_callback(self.trainer)
        if stop is not None and stop.should_stop(self.global_step):
            path = self.save_stop_checkpoint()
            raise RunInterrupted(path, self.global_step, stop.requested)

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

    def forward(self, input_ids, attention_mask):
        return self.student(input_ids=input_ids, attention_mask=attention_mask).logits

    def training_step(self, batch, batch_idx):
        logits = self(batch["input_ids"], batch["attention_mask"])
        scored = {}

        def teacher_logits() -> torch.Tensor:  # one teacher pass, only if the loss asks for it
            if "logits" not in scored:
                scored["logits"] = self.teacher.logits(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                )
            return scored["logits"]

        loss, logs = self.loss_fn(logits, batch["labels"], teacher_logits)
        if not torch.isfinite(loss):
            bad_teacher = "logits" in scored and not torch.isfinite(scored["logits"]).all()
            self.skip_nonfinite("teacher logits or loss" if bad_teacher else "loss")
            self.log("train/skipped_updates", 1.0)
            return None  # Lightning skips backward and the optimizer step
        for key, value in logs.items():
            self.log(f"train/{key}", value)
        self.bad_steps = 0
        self.log("train/skipped_updates", 0.0)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch["input_ids"], batch["attention_mask"])
        self.log(
            "val/loss", sft_loss(logits, batch["labels"]), prog_bar=True, batch_size=len(batch["input_ids"])
        )

    def on_validation_epoch_end(self):
        if not self.val_examples or self.trainer.sanity_checking:
            return
        from minillm.evaluation.sampled import evaluate_model

        e = self.cfg.eval
        res = evaluate_model(
            self.student,
            self.tokenizer,
            self.val_examples,
            self.val_records,
            seeds=(0,),
            batch_size=e.batch_size,
            max_new_tokens=e.max_new_tokens,
            temperature=e.temperature,
            top_k=e.top_k,
            top_p=e.top_p,
            name="val",
            progress=False,
        )
        self.log("val/rougeL", res["rougeL"], prog_bar=True)
        if res["valid_rate"] is not None:
            self.log("val/valid_rate", res["valid_rate"])
        self.log("val/length", res["length"])

    def configure_optimizers(self):
        optimizer = make_optimizer(self.student.parameters(), self.cfg.optim)
        self._schedule_steps = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = make_scheduler(optimizer, self.cfg.scheduler, self._schedule_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clip the global gradient norm to ``grad_clip`` (the on-policy module clips the same way)."""
        clip = gradient_clip_val if gradient_clip_val is not None else self.cfg.get("grad_clip")
        if clip:
            self.clip_gradients(
                optimizer, gradient_clip_val=clip, gradient_clip_algorithm=gradient_clip_algorithm or "norm"
            )
