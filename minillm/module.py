"""The LightningModule: a trainable student, a frozen teacher, and an objective.

The module wires the pure loss functions of ``minillm.objectives`` to the models; it computes no
loss itself. The teacher is held outside the module's registered children, so it never receives
gradients, never enters the optimizer and is never written into a checkpoint.
"""

from __future__ import annotations

import math

import lightning as L
import torch

from minillm.objectives.supervised import sft_loss, word_kd_loss


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


def build_optimizer(params, optim_cfg):
    """AdamW; weight decay only on matrices (not on norms and biases)."""
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": optim_cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=optim_cfg.lr, betas=tuple(optim_cfg.betas))


def lr_lambda(optim_cfg, total_steps: int):
    """Linear warm-up, then constant or cosine decay to ``min_lr_ratio``."""
    warmup = max(0, int(optim_cfg.warmup_steps))
    floor = float(optim_cfg.get("min_lr_ratio", 0.0))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if optim_cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class DistillModule(L.LightningModule):
    """Supervised objectives on teacher-forced data: ``sft`` / ``seqkd`` (CE) and ``forward_kld`` (KD).

    Validation: ``val/loss`` (cross-entropy on gold responses) each validation run, and ``val/rougeL``
    and ``val/valid_rate`` from sampled responses to the first ``eval.val_samples`` valid prompts.
    """

    def __init__(self, student, cfg, tokenizer, teacher=None, val_examples=None, val_records=None):
        super().__init__()
        self.student = student
        self.teacher = FrozenTeacher(teacher)
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.val_examples = list(val_examples or [])[: cfg.eval.val_samples or 0]
        self.val_records = val_records
        self.kd_ratio = float(cfg.objective.get("kd_ratio", 0.0) or 0.0)

    def on_fit_start(self):
        self.teacher.to(self.device)
        self.student.train()  # from_pretrained returns eval mode; Lightning keeps the mode it finds

    def forward(self, input_ids, attention_mask):
        return self.student(input_ids=input_ids, attention_mask=attention_mask).logits

    def training_step(self, batch, batch_idx):
        logits = self(batch["input_ids"], batch["attention_mask"])
        if self.kd_ratio > 0:
            t_logits = self.teacher.logits(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            )
            loss, terms = word_kd_loss(logits, t_logits, batch["labels"], kd_ratio=self.kd_ratio)
            self.log("train/ce_loss", terms["ce"])
            self.log("train/kd_kl", terms["kl"])
        else:
            loss = sft_loss(logits, batch["labels"])
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
        from minillm.evaluation.evaluate import evaluate_model

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
        optimizer = build_optimizer(self.student.parameters(), self.cfg.optim)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(self.cfg.optim, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
