"""Exposure bias as the paper measures it (MiniLLM Sec. 3.3 / Fig. 6, after Arora et al. 2022): ExAccErr.

Notation: p teacher, q student, l = 1, 2, … the response step.

- Per-step error on a prefix y_<l: ε_l = KL(p‖q) = Σ_v p(v|y_<l, x)·log(p(v|y_<l, x) / q(v|y_<l, x)).
- R(l) = Σ_{l'≤l} ē_S(l'), with ē_S(l') the mean ε_{l'} over the STUDENT-sampled responses still going
  at step l' (the accumulated regret of the student on its own prefixes);
- E(l) = Σ_{l'≤l} ē_T(l'), the same on TEACHER-sampled prefixes (the error it would accumulate with no
  exposure bias; the paper's l·ε(l));
- ExAccErr(l) = (R(l) − E(l)) / E(l) × 100: the excess error, in %, caused by conditioning on the
  student's own prefixes rather than the teacher's.

A row that has ended (emitted EOS) stops counting: ē(l) averages over the rows alive at step l, and the
number of such rows is reported per step. Both models' full distributions come from one teacher-forced
pass over each sampled batch (``Rollout.full_input``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from minillm.data.datasets import Example, collate_prompts
from minillm.objectives.divergences import forward_kl
from minillm.rollout.options import SamplingOptions
from minillm.rollout.sampler import Rollout, generate, response_logits


@torch.no_grad()
def step_errors(student, teacher, rollout: Rollout) -> Tensor:
    """Per-step error ε_l = KL(p‖q) at every response position of ``rollout``: (B, T), 0 where it ended."""
    s_logits = response_logits(student, rollout)
    t_logits = response_logits(teacher, rollout)
    return forward_kl(s_logits, t_logits, rollout.response_mask, reduction="none")


class StepErrorTotals:
    """Running per-step sums of ε and counts of live rows, over batches of different lengths."""

    def __init__(self, max_steps: int):
        self.sums = torch.zeros(max_steps, dtype=torch.float64)
        self.rows = torch.zeros(max_steps, dtype=torch.long)
        self.n_samples = 0

    def add(self, errors: Tensor, mask: Tensor) -> None:
        """``errors`` (B, T) per-step errors, ``mask`` (B, T) 1 while the row is going."""
        t = errors.shape[1]
        self.sums[:t] += (errors.double() * mask).sum(0).cpu()
        self.rows[:t] += mask.long().sum(0).cpu()
        self.n_samples += errors.shape[0]

    def means(self) -> Tensor:
        """ē(l): mean error over the rows alive at each step (0 where none is)."""
        return self.sums / self.rows.clamp(min=1)


def exaccerr_curve(student: StepErrorTotals, teacher: StepErrorTotals, *, min_alive: float = 0.1) -> dict:
    """ExAccErr(l) from the two sets of per-step totals.

    The curve runs while both sets have a live row; ``reliable_steps`` is the last l at which at least
    ``min_alive`` of each set's samples are still going, and the scalar summaries use l ≤ that only:
    ``exaccerr_mean`` (the mean of ExAccErr(l), the area under the curve over its length) and
    ``exaccerr_final`` (its value at ``reliable_steps``). Where E(l) = 0: ExAccErr is 0 if R(l) = 0 too
    (no error at all, as for a student identical to the teacher), else undefined (None).
    """
    alive = (student.rows > 0) & (teacher.rows > 0)
    length = int(alive.long().cumprod(0).sum())
    regret = student.means()[:length].cumsum(0)
    base = teacher.means()[:length].cumsum(0)
    curve: list[float | None] = []
    for r, e in zip(regret.tolist(), base.tolist(), strict=True):
        if e > 0:
            curve.append(100.0 * (r - e) / e)
        else:
            curve.append(0.0 if r == 0 else None)
    need_s = max(1, math.ceil(min_alive * student.n_samples))
    need_t = max(1, math.ceil(min_alive * teacher.n_samples))
    ok = (student.rows[:length] >= need_s) & (teacher.rows[:length] >= need_t)
    reliable = int(ok.long().cumprod(0).sum())
    kept = [v for v in curve[:reliable] if v is not None]
    return {
        "steps": list(range(1, length + 1)),
        "exaccerr": curve,
        "regret": regret.tolist(),
        "teacher_error": base.tolist(),
        "student_step_error": student.means()[:length].tolist(),
        "teacher_step_error": teacher.means()[:length].tolist(),
        "student_rows": student.rows[:length].tolist(),
        "teacher_rows": teacher.rows[:length].tolist(),
        "reliable_steps": reliable,
        "exaccerr_mean": sum(kept) / len(kept) if kept else None,
        "exaccerr_final": curve[reliable - 1] if reliable else None,
    }


@torch.no_grad()
def sample_step_errors(
    sampler,
    student,
    teacher,
    examples: list[Example],
    *,
    pad_token_id: int,
    eos_token_id: int | None,
    samples_per_prompt: int,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
) -> StepErrorTotals:
    """Sample ``samples_per_prompt`` responses per prompt from ``sampler`` (temperature 1, no top-k/p),
    then accumulate the per-step errors ε_l between ``teacher`` and ``student`` on those prefixes."""
    device = next(student.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    rows = [e for e in examples for _ in range(samples_per_prompt)]
    totals = StepErrorTotals(max_new_tokens)
    sampling = SamplingOptions(
        max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, pad_token_id=pad_token_id
    )
    for start in range(0, len(rows), batch_size):
        batch = collate_prompts(rows[start : start + batch_size], pad_token_id)
        rollout = generate(
            sampler,
            batch["input_ids"].to(device),
            batch["attention_mask"].to(device),
            sampling,
            generator=generator,
        )
        totals.add(step_errors(student, teacher, rollout), rollout.response_mask)
    return totals


def exposure_bias(
    student,
    teacher,
    examples: list[Example],
    *,
    pad_token_id: int,
    eos_token_id: int,
    samples_per_prompt: int = 10,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    seed: int = 0,
    ignore_eos: bool = False,
    min_alive: float = 0.1,
) -> dict:
    """ExAccErr(l) of ``student`` against ``teacher`` on the prompts of ``examples``.

    Each prompt is answered ``samples_per_prompt`` times by the student and by the teacher (the same
    seed for both). ``ignore_eos`` makes every row run to ``max_new_tokens`` (a full-length curve, as in
    studies of exposure bias on fixed-length continuations). Returns :func:`exaccerr_curve`'s dict plus
    the settings.
    """
    models = (student, teacher)
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        common = dict(
            pad_token_id=pad_token_id,
            eos_token_id=None if ignore_eos else eos_token_id,
            samples_per_prompt=samples_per_prompt,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            seed=seed,
        )
        on_student = sample_step_errors(student, student, teacher, examples, **common)
        on_teacher = sample_step_errors(teacher, student, teacher, examples, **common)
    finally:
        for m, mode in zip(models, was_training, strict=True):
            m.train(mode)
    result = exaccerr_curve(on_student, on_teacher, min_alive=min_alive)
    result.update(
        n_prompts=len(examples),
        samples_per_prompt=samples_per_prompt,
        max_new_tokens=max_new_tokens,
        ignore_eos=ignore_eos,
        min_alive=min_alive,
    )
    return result
