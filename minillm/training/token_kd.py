"""Token-level distillation on a chosen data source (``objective=token_kd``, ``objective=gkd``).

A batch is the datamodule's prompt + response batch (gold responses, or the teacher's cached samples with
``objective.train_on_teacher_samples``); with probability λ (``objective.on_policy_fraction``) its
responses are replaced by the student's own samples to the same prompts before the update (GKD's mix;
λ = 1 is purely on-policy). The loss is :func:`minillm.objectives.token_kd.token_kd_loss`, or any loss with
the supervised signature ``(student_logits, labels, teacher_logits) -> (loss, logs)``.
"""

from __future__ import annotations

import logging

import torch

from minillm.data.datasets import IGNORE_INDEX, Example, collate_sft
from minillm.errors import MinillmError
from minillm.rollout import vllm_engine
from minillm.rollout.generate import left_pad
from minillm.rollout.options import SamplingOptions
from minillm.rollout.sampler import generate
from minillm.training.supervised import SupervisedModule

log = logging.getLogger(__name__)


def prompts_of(batch: dict[str, torch.Tensor]) -> list[list[int]]:
    """The prompt token ids of each row of a right-padded prompt + response batch (labels −100 on the
    prompt), as lists."""
    prompts = []
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), strict=True):
        start = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
        prompts.append(ids[:start])
    return prompts


@torch.no_grad()
def sample_student_examples(
    student,
    prompts: list[list[int]],
    indices: list[int],
    sampling: SamplingOptions,
    *,
    generator: torch.Generator,
) -> list[Example]:
    """The student's sampled response to each prompt under ``sampling`` (EOS kept when it stopped), as
    examples (``sampling.top_p`` < 1: sampled from the nucleus of that mass)."""
    engine = vllm_engine.current()
    if engine is not None:  # sampler=vllm: only the tokens are read, so no pass of the student rescores them
        responses = engine.sample_ids(student, prompts, sampling, generator=generator)
        return [Example(p, r, i) for p, r, i in zip(prompts, responses, indices, strict=True)]
    device = next(student.parameters()).device
    prompt_ids, prompt_mask = left_pad(prompts, sampling.pad_token_id)
    rollout = generate(student, prompt_ids.to(device), prompt_mask.to(device), sampling, generator=generator)
    responses = [
        [t for t, m in zip(ids, mask, strict=True) if m]
        for ids, mask in zip(rollout.response_ids.tolist(), rollout.response_mask.tolist(), strict=True)
    ]
    return [Example(p, r, i) for p, r, i in zip(prompts, responses, indices, strict=True)]


def collate_examples(examples: list[Example], tokenizer, device) -> dict[str, torch.Tensor]:
    """A training batch (as the datamodule's ``collate_sft``) on ``device``."""
    batch = collate_sft(examples, tokenizer.pad_token_id)
    return {k: v.to(device) for k, v in batch.items()}


class TokenKDModule(SupervisedModule):
    """``objective=token_kd`` / ``gkd``: a token-level divergence on gold, teacher or student responses.

    Each training batch is on-policy with probability λ = ``objective.on_policy_fraction`` (a draw from
    its own seeded generator, carried through checkpoints): its responses are then the student's samples
    to the batch's prompts (``objective.temperature``, up to ``objective.max_new_tokens`` tokens).
    Logs ``train/on_policy`` (1 for an on-policy batch) beside the loss terms.
    """

    train_data = "sft"

    def __init__(self, student, cfg, tokenizer, teacher=None, datamodule=None):
        super().__init__(student, cfg, tokenizer, teacher=teacher, datamodule=datamodule)
        if teacher is None:
            raise MinillmError(f"objective={cfg.objective.name} needs a teacher: set teacher.path")
        obj = cfg.objective
        top_k = obj.get("teacher_top_k")
        if top_k is not None and top_k > len(tokenizer):
            raise MinillmError(
                f"objective.teacher_top_k={top_k}: larger than the vocabulary ({len(tokenizer)} tokens)"
            )
        self.on_policy_fraction = float(obj.get("on_policy_fraction", 0.0) or 0.0)
        # objective.temperature and top_p (only objective=distillm2 has that key; 1: no nucleus cut); no top-k
        self.sampling = SamplingOptions.from_config(
            obj,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            max_new_tokens=obj.get("max_new_tokens") or cfg.eval.max_new_tokens,
        )
        self.mix_gen = torch.Generator().manual_seed(cfg.seed + 5)  # the on-policy draws
        self.sample_gen: torch.Generator | None = None  # the student's sampling (on the model's device)

    def on_fit_start(self):
        super().on_fit_start()
        self.sample_gen = torch.Generator(device=self.device).manual_seed(self.rank_seed(6))  # per rank

    def rank_generators(self) -> list[torch.Generator]:
        return [self.sample_gen]

    def draw_on_policy(self) -> bool:
        """One Bernoulli(λ) draw: is the next batch on-policy? (No draw at λ = 0 or 1.)"""
        if self.on_policy_fraction <= 0.0:
            return False
        if self.on_policy_fraction >= 1.0:
            return True
        return bool(torch.rand((), generator=self.mix_gen) < self.on_policy_fraction)

    def student_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch's prompts with the student's sampled responses instead of the batch's own."""
        examples = sample_student_examples(
            self.student,
            prompts_of(batch),
            batch["index"].tolist(),
            self.sampling,
            generator=self.sample_gen,
        )
        self.student.train()  # generate() restores the mode it found; make sure updates train
        return collate_examples(examples, self.tokenizer, self.device)

    def training_step(self, batch, batch_idx):
        on_policy = self.draw_on_policy()
        if on_policy:
            batch = self.student_batch(batch)
        self.log("train/on_policy", float(on_policy))
        return super().training_step(batch, batch_idx)

    def extra_state(self) -> dict:
        return {
            "mix_gen": self.mix_gen.get_state(),
            "sample_gen": None if self.sample_gen is None else self.sample_gen.get_state(),
        }

    def load_extra_state(self, state: dict) -> None:
        self.mix_gen.set_state(state["mix_gen"])
        if state.get("sample_gen") is not None:
            self.sample_gen.set_state(state["sample_gen"])
