"""DistiLLM and DistiLLM-2 (Ko et al., ICML 2024 and ICML 2025) in the supervised loop.

- :class:`DistillmModule` (``objective=distillm``): a skew KL (:func:`minillm.objectives.token_kd.token_kd_loss`
  with ``divergence=skew_forward_kl`` or ``skew_reverse_kl``) on gold batches, and the adaptive off-policy
  schedule of the authors' released code: a replay buffer of student generations, and a probability φ of
  student-generated batches that rises by ``threshold_step`` whenever the validation loss has risen by
  ``loss_eps`` or more above its reference. The buffer, φ and the generators are part of the checkpoint.
- :class:`Distillm2Module` (``objective=distillm2``): the contrastive loss
  (:func:`minillm.objectives.distillm2.distillm2_loss`) on a teacher response and a student response per prompt;
  student responses generated once per epoch for every training prompt (the paper's offline data) or per
  batch (``student_responses=batch``: on-policy); each term averaged per token (``normalize=token``) or per
  response (``normalize=sequence``, the released code's).
"""

from __future__ import annotations

import logging
from collections import deque

import torch

from minillm.data.datasets import Example
from minillm.errors import MinillmError
from minillm.objectives.supervised import sft_loss, shift_for_next_token
from minillm.training.supervised import VAL_LOSS
from minillm.training.token_kd import (
    TokenKDModule,
    collate_examples,
    prompts_of,
    sample_student_examples,
)

log = logging.getLogger(__name__)


def schedule_horizon(module) -> int:
    """Optimizer steps the adaptive schedules span: ``objective.schedule_steps``, else the run's
    ``trainer.max_steps``, else Lightning's estimate of the run's steps."""
    steps = module.cfg.objective.get("schedule_steps")
    if steps:
        return int(steps)
    if module.trainer.max_steps and module.trainer.max_steps > 0:
        return int(module.trainer.max_steps)
    return max(1, int(module.trainer.estimated_stepping_batches))


def batch_source(
    r: float, threshold: float, *, step: int, horizon: int, buffer_size: int, capacity: int
) -> str:
    """Where DistiLLM's next training batch comes from: ``"fresh"``, ``"replay"`` or ``"gold"``.

    With r ~ U(0, 1), φ = ``threshold`` and φ_fresh = φ · max(0, 1 − step / horizon) (the fresh share
    falls linearly over the horizon: the released code's default "decreasing" replay ratio):

    - r < φ_fresh, or r < φ while the buffer holds fewer than ``capacity`` examples: fresh student samples;
    - else r < φ (the buffer is full): a batch replayed from the buffer;
    - else: the gold batch.
    """
    fresh_threshold = threshold * max(0.0, 1.0 - step / horizon)
    if r < fresh_threshold or (r < threshold and buffer_size < capacity):
        return "fresh"
    if r < threshold and buffer_size > 0:
        return "replay"
    return "gold"


def threshold_update(
    threshold: float, reference: float | None, loss: float, *, threshold_step: float, loss_eps: float
) -> tuple[float, float | None]:
    """DistiLLM's adaptive φ after a validation with loss ``loss``: (new φ, new reference loss).

    The first validation sets the reference (φ unchanged). After that, when loss ≥ reference + loss_eps,
    φ ← min(1, φ + threshold_step) and the reference becomes this loss; otherwise (a loss that fell, or
    rose by less than loss_eps) nothing changes, the reference included.
    """
    if reference is None:
        return threshold, loss
    if loss >= reference + loss_eps:
        return min(1.0, threshold + threshold_step), loss
    return threshold, reference


class DistillmModule(TokenKDModule):
    """``objective=distillm``: skew KL with DistiLLM's adaptive off-policy schedule.

    Before each batch, r ~ U(0, 1) from a seeded generator picks the source (:func:`batch_source`):

    - fresh: the student samples responses to the batch's prompts; they are trained on and pushed into the
      replay buffer (the oldest leave beyond ``replay_capacity``);
    - replay: a batch of the same size drawn without replacement from the buffer;
    - gold: the batch as it came.

    After each validation, φ and the reference loss follow :func:`threshold_update` (the first
    validation sets the reference; the released code measures it on the init before training). Logs
    ``train/fresh``, ``train/replayed`` (1 for such a batch), ``train/sgo_threshold`` (φ) and
    ``train/replay_size``.
    """

    def __init__(self, student, cfg, tokenizer, teacher=None, datamodule=None):
        super().__init__(
            student,
            cfg,
            tokenizer,
            teacher=teacher,
            datamodule=datamodule,
        )
        obj = cfg.objective
        self.capacity = int(obj.replay_capacity)
        self.threshold = float(obj.init_threshold)
        self.threshold_step = float(obj.threshold_step)
        self.loss_eps = float(obj.loss_eps)
        self.reference_loss: float | None = None
        self.buffer: deque[Example] = deque(maxlen=self.capacity)
        self.replay_gen = torch.Generator().manual_seed(cfg.seed + 7)
        self._val_sum, self._val_count = 0.0, 0

    def draw_on_policy(self) -> bool:  # the schedule below decides, not a fixed λ
        return False

    def training_step(self, batch, batch_idx):
        source = batch_source(
            float(torch.rand((), generator=self.mix_gen)),
            self.threshold,
            step=self.global_step,
            horizon=schedule_horizon(self),
            buffer_size=len(self.buffer),
            capacity=self.capacity,
        )
        fresh, replayed = source == "fresh", source == "replay"
        if fresh:
            examples = sample_student_examples(
                self.student,
                prompts_of(batch),
                batch["index"].tolist(),
                self.sampling,
                generator=self.sample_gen,
            )
            self.buffer.extend(examples)
            batch = collate_examples(examples, self.tokenizer, self.device)
        elif replayed:
            size = min(len(batch["input_ids"]), len(self.buffer))
            picked = torch.randperm(len(self.buffer), generator=self.replay_gen)[:size].tolist()
            batch = collate_examples([self.buffer[i] for i in picked], self.tokenizer, self.device)
        self.log("train/fresh", float(fresh))
        self.log("train/replayed", float(replayed))
        self.log("train/sgo_threshold", self.threshold)
        self.log("train/replay_size", float(len(self.buffer)))
        return super(TokenKDModule, self).training_step(batch, batch_idx)

    # ---------------------------------------------------------------- the adaptive threshold
    def on_validation_epoch_start(self):
        self._val_sum, self._val_count = 0.0, 0

    def validation_step(self, batch, batch_idx):
        logits = self(batch["input_ids"], batch["attention_mask"])
        loss = sft_loss(logits, batch["labels"])
        n = len(batch["input_ids"])
        self.log(VAL_LOSS, loss, prog_bar=True, batch_size=n, sync_dist=True)  # ddp: the mean over ranks
        self._val_sum += float(loss) * n
        self._val_count += n

    def on_validation_epoch_end(self):
        super().on_validation_epoch_end()
        if self.trainer.sanity_checking:
            return
        # every rank's share of the validation set (ddp): all ranks move φ alike
        total, count = self._val_sum, float(self._val_count)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            both = torch.tensor([total, count], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(both)
            total, count = both.tolist()
        if not count:
            return
        loss = total / count
        before = self.threshold
        self.threshold, self.reference_loss = threshold_update(
            self.threshold,
            self.reference_loss,
            loss,
            threshold_step=self.threshold_step,
            loss_eps=self.loss_eps,
        )
        if self.threshold != before:
            log.info(
                "val/loss %.4f rose by >= %g: student-generated batches now φ = %.2f",
                loss,
                self.loss_eps,
                self.threshold,
            )

    # ---------------------------------------------------------------- checkpoint
    def extra_state(self) -> dict:
        return {
            **super().extra_state(),
            "replay_gen": self.replay_gen.get_state(),
            "threshold": self.threshold,
            "reference_loss": self.reference_loss,
            "buffer": [[e.prompt_ids, e.response_ids, e.index] for e in self.buffer],
        }

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.replay_gen.set_state(state["replay_gen"])
        self.threshold = float(state["threshold"])
        self.reference_loss = state["reference_loss"]
        self.buffer = deque((Example(p, r, i) for p, r, i in state["buffer"]), maxlen=self.capacity)


class Distillm2Module(TokenKDModule):
    """``objective=distillm2``: DistiLLM-2's contrastive loss on one teacher and one student response per
    prompt.

    The training batch holds the teacher's responses (``objective.train_on_teacher_samples``: the cached
    teacher samples, as SeqKD; false: the gold responses stand in for them). The student's responses to
    the same prompts are sampled at the start of every epoch for all training prompts with the student of
    that moment (``student_responses=epoch``, the paper's offline generation) or before every batch
    (``student_responses=batch``). Both models score both responses; the loss is skew forward KL on the
    teacher's responses plus skew reverse KL on the student's (``objective.alpha``), logged separately.
    """

    def __init__(self, student, cfg, tokenizer, teacher=None, datamodule=None):
        super().__init__(
            student,
            cfg,
            tokenizer,
            teacher=teacher,
            datamodule=datamodule,
        )
        self.mode = str(cfg.objective.student_responses)
        if self.mode not in ("epoch", "batch"):
            raise MinillmError(f"objective.student_responses={self.mode!r}; choose one of ['batch', 'epoch']")
        self.datamodule_ref = datamodule
        self.responses: dict[int, list[int]] = {}  # record index -> the student's response (epoch mode)
        self.responses_epoch: int | None = None

    def draw_on_policy(self) -> bool:
        return False

    def on_train_epoch_start(self):
        if self.mode != "epoch" or self.responses_epoch == self.current_epoch:
            return  # per batch, or this epoch's responses came back with a resumed checkpoint
        examples = self.datamodule_ref.examples["train"]
        log.info("DistiLLM-2: sampling the student's responses to %d training prompts", len(examples))
        size = int(self.cfg.objective.batch_size)
        self.responses = {}
        for start in range(0, len(examples), size):
            chunk = examples[start : start + size]
            sampled = sample_student_examples(
                self.student,
                [e.prompt_ids for e in chunk],
                [e.index for e in chunk],
                self.sampling,
                generator=self.sample_gen,
            )
            self.responses.update({e.index: e.response_ids for e in sampled})
        self.responses_epoch = self.current_epoch

    def _student_side(self, batch) -> dict[str, torch.Tensor]:
        if self.mode == "batch":
            return self.student_batch(batch)
        examples = [
            Example(p, self.responses[i], i)
            for p, i in zip(prompts_of(batch), batch["index"].tolist(), strict=True)
        ]
        return collate_examples(examples, self.tokenizer, self.device)

    def _scored(self, batch):
        """(student logits, teacher logits, mask) at the response positions of a batch, shifted."""
        logits = self(batch["input_ids"], batch["attention_mask"])
        teacher = self.teacher.logits(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        s_logits, _, mask = shift_for_next_token(logits, batch["labels"])
        return s_logits, teacher[:, :-1], mask

    def training_step(self, batch, batch_idx):
        student_side = self._student_side(batch)
        loss, logs = self.loss_fn(self._scored(batch), self._scored(student_side))
        if not torch.isfinite(loss):
            self.skip_nonfinite("loss")
            self.log("train/skipped_updates", 1.0)
            return None
        for key, value in logs.items():
            self.log(f"train/{key}", value)
        self.bad_steps = 0
        self.log("train/student_length", student_side["labels"][:, 1:].ne(-100).sum(1).float().mean())
        self.log("train/skipped_updates", 0.0)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def extra_state(self) -> dict:
        return {
            **super().extra_state(),
            "responses_epoch": self.responses_epoch,
            "responses": [[i, r] for i, r in self.responses.items()],
        }

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.responses_epoch = state.get("responses_epoch")
        self.responses = {int(i): list(r) for i, r in state.get("responses") or []}
