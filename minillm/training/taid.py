"""TAID (Shing et al., ICLR 2025) in the supervised loop (``objective=taid``).

Forward KL from a target that moves from the student towards the teacher,
p_t = softmax((1 − t)·stopgrad(logit_q) + t·logit_p) (:func:`minillm.objectives.taid.taid_loss`), on gold
batches; after every update t follows TAID's adaptive schedule (:func:`minillm.objectives.taid.taid_update`:
never below the linear ramp from ``t_start`` to ``t_end`` over the schedule's horizon, faster while the
cross-entropy to p_t falls quickly). The schedule's state is part of the checkpoint.

Checked against the authors' code (SakanaAI/TAID, ``src/distil_losses/taid.py`` and ``src/model.py``). As
there: the loss of a step uses the t from before it; the schedule is fed the cross-entropy −Σ p_t log q
(KL(p_t ‖ q) + H(p_t)); the first step only stores it (t stays at ``t_start``); the floor after the step
taken at global step n is ``t_start + (t_end − t_start)·n / N``; every training batch (micro-batch under
gradient accumulation) updates t. Differences: N is ``schedule_horizon`` (``objective.schedule_steps``, else
``trainer.max_steps``, else Lightning's estimate; the reference always takes the estimate); a step with a
non-finite loss is skipped and leaves the schedule alone; the logged ``train/taid_kl`` is the true KL.
"""

from __future__ import annotations

import torch

from minillm.errors import MinillmError
from minillm.objectives.supervised import shift_for_next_token
from minillm.objectives.taid import TaidState, taid_target_entropy, taid_update
from minillm.training.distillm import schedule_horizon
from minillm.training.supervised import SupervisedModule


class TaidModule(SupervisedModule):
    """``objective=taid``. Logs ``train/taid_t`` (the t of the step), ``train/taid_kl`` (the loss,
    KL(p_t ‖ q) per response token) and ``train/taid_ce`` (the schedule's signal, −Σ p_t log q per
    response token)."""

    train_data = "sft"

    def __init__(self, student, cfg, tokenizer, teacher=None, datamodule=None):
        super().__init__(student, cfg, tokenizer, teacher=teacher, datamodule=datamodule)
        if teacher is None:
            raise MinillmError(f"objective={cfg.objective.name} needs a teacher: set teacher.path")
        obj = cfg.objective
        self.schedule = {
            "t_start": float(obj.t_start),
            "t_end": float(obj.t_end),
            "alpha": float(obj.t_alpha),
            "beta": float(obj.t_momentum),
        }
        self.state = TaidState(self.schedule["t_start"])

    def training_step(self, batch, batch_idx):
        logits = self(batch["input_ids"], batch["attention_mask"])
        teacher = self.teacher.logits(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        s_logits, _, mask = shift_for_next_token(logits, batch["labels"])
        t = self.state.t
        loss = self.loss_fn(s_logits, teacher[:, :-1], mask, t=t)
        if not torch.isfinite(loss):
            self.skip_nonfinite("loss")
            self.log("train/skipped_updates", 1.0)
            return None  # t is not moved by a skipped update
        entropy = taid_target_entropy(s_logits, teacher[:, :-1], mask, t=t, chunk_size=self.chunk_size)
        cross_entropy = loss.detach() + entropy
        horizon = schedule_horizon(self)
        self.state = taid_update(
            self.state,
            float(cross_entropy),
            step=min(self.global_step, horizon),
            total_steps=horizon,
            **self.schedule,
        )
        self.bad_steps = 0
        self.log("train/taid_t", t)
        self.log("train/taid_kl", loss.detach())
        self.log("train/taid_ce", cross_entropy)
        self.log("train/skipped_updates", 0.0)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def extra_state(self) -> dict:
        return {"taid": [self.state.t, self.state.momentum, self.state.prev_loss]}

    def load_extra_state(self, state: dict) -> None:
        t, momentum, prev_loss = state["taid"]
        self.state = TaidState(float(t), float(momentum), None if prev_loss is None else float(prev_loss))
