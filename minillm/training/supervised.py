"""The supervised LightningModule (sft, forward_kld, seqkd, hinton_kd; the base of the on-policy and
token-level modules): a trainable student, a frozen teacher, a loss named by ``objective.loss``.

The module wires the pure loss functions of ``minillm.objectives`` to the models; it computes no
loss itself. The teacher is held outside the module's registered children, so it never receives
gradients, never enters the optimizer and is never written into a checkpoint.
"""

from __future__ import annotations

import logging

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from minillm.objectives.supervised import sft_loss
from minillm.resume.lightning_state import attached_trainer
from minillm.training.optim import make_optimizer, make_scheduler
from minillm.training.resumable import ResumableMixin

log = logging.getLogger(__name__)
VAL_LOSS = "val/loss"  # what every module logs at validation (select.monitor's default)


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


class SupervisedModule(ResumableMixin, L.LightningModule):
    """Supervised objectives on teacher-forced data: ``objective.loss`` on each batch (``sft`` / ``seqkd``:
    CE; ``forward_kld``: word-level KD; ``hinton_kd``: KD at a temperature).

    Validation: ``val/loss`` (cross-entropy on gold responses) each validation run; ``val/rougeL`` and
    ``val/valid_rate`` from sampled responses come from the evaluation callback (``SampledValidation``).
    """

    train_data = "sft"  # what the datamodule's training batches hold: tokenized prompt + response

    @classmethod
    def logged_metrics(cls, cfg) -> tuple[str, ...]:
        """The validation metrics this module logs itself (``select.monitor`` candidates)."""
        return (VAL_LOSS,)

    def __init__(self, student, cfg, tokenizer, teacher=None, datamodule=None):
        super().__init__()
        self.student = student
        self.teacher = FrozenTeacher(teacher)
        self.cfg = cfg
        self.tokenizer = tokenizer
        # the objective's loss: a pure function (student logits, labels, teacher logits) -> (loss, logs)
        self.loss_fn = instantiate(cfg.objective.loss, _convert_="all") if "loss" in cfg.objective else None
        # positions per chunk of the full-vocabulary divergences (bounded memory, same numbers); None: one pass
        self.chunk_size = cfg.objective.get("chunk_size")
        self.init_resume_state(cfg)

    def configure_model(self) -> None:
        """Under ``strategy=fsdp`` (Lightning's ModelParallelStrategy), shard the student and the frozen
        teacher over the data-parallel ranks (FSDP2 per decoder layer); otherwise nothing."""
        from lightning.pytorch.strategies import ModelParallelStrategy

        if attached_trainer(self) is None or not isinstance(self.trainer.strategy, ModelParallelStrategy):
            return
        from minillm.models.sharding import is_sharded, shard

        mesh = self.device_mesh["data_parallel"]
        offload = bool(OmegaConf.select(self.cfg, "fit.cpu_offload", default=False))
        for model in (self.student, self.teacher.model):
            if model is not None and not is_sharded(model):
                shard(model, mesh, cpu_offload=offload)

    def on_fit_start(self):
        self.teacher.to(self.device)
        self.student.train()  # from_pretrained returns eval mode; Lightning keeps the mode it finds

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
        self.log(  # ddp: the mean over ranks (each validates a share), so every rank selects alike
            VAL_LOSS,
            sft_loss(logits, batch["labels"]),
            prog_bar=True,
            batch_size=len(batch["input_ids"]),
            sync_dist=True,
        )

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
