"""DistiLLM-2's loss (Ko et al., ICML 2025): a contrastive pair of skew KLs, the skew forward KL on teacher
responses and the skew reverse KL on student responses (:func:`distillm2_loss`), normalised per token or per
sequence (:func:`sequence_mean`).

Pure functions over tensors; shapes, masks, reductions, dtypes and chunking follow
:mod:`minillm.objectives.divergences`.
"""

from __future__ import annotations

import torch

from minillm.errors import MinillmError
from minillm.objectives.divergences import skew_forward_kl, skew_reverse_kl

__all__ = ["NORMALIZATIONS", "distillm2_loss", "sequence_mean"]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
"""(student_logits (B, T, V), teacher_logits (B, T, V), mask (B, T) or None)."""


NORMALIZATIONS = ("token", "sequence")


def sequence_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The mean over sequences of each sequence's mean over its masked positions.

    Args:
        values: (B, T) per-position values (zeros outside the mask, as ``reduction="none"`` gives).
        mask: (B, T) bool or 0/1, or None for every position.

    Returns:
        A scalar: (1/|S|) Σ_{b∈S} Σ_t m_bt·v_bt / Σ_t m_bt over the sequences S with at least one masked
        position (a sequence with none is left out, not counted as 0); 0 when no sequence has one.
    """
    mask = torch.ones_like(values, dtype=torch.bool) if mask is None else mask.bool()
    counts = mask.sum(dim=1)
    sums = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum(dim=1)
    present = counts > 0
    per_sequence = sums / counts.clamp(min=1).to(values.dtype)
    per_sequence = torch.where(present, per_sequence, torch.zeros_like(per_sequence))
    return per_sequence.sum() / present.sum().clamp(min=1).to(values.dtype)


def distillm2_loss(
    teacher_responses: Batch,
    student_responses: Batch,
    *,
    alpha: float = 0.1,
    normalize: str = "token",
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DistiLLM-2's contrastive loss: skew forward KL on teacher responses + skew reverse KL on student ones.

    Paper: Ko et al., "DistiLLM-2: A Contrastive Approach Boosts the Distillation of LLMs", ICML 2025,
    the DistiLLM-2 objective: SKL^{(α)} = KL(p ‖ α·p + (1−α)·q) on teacher-generated responses pulls the
    student up where the teacher puts mass, and SRKL^{(α)} = KL(q ‖ α·q + (1−α)·p) on student-generated
    responses pushes it down where it puts mass the teacher does not (both from DistiLLM,
    :func:`~minillm.objectives.divergences.skew_forward_kl` / ``skew_reverse_kl``). Here the student's q
    inside the reverse term's mixture keeps its gradient; the released code (``distillm_trainer.py``,
    ``get_batch_logps``) detaches it there.

    Normalisation (``normalize``), how each term's per-token values become one number:

    - ``"token"``: the mean over all masked positions of its set, so every token weighs the same and a
      long response counts more (as every other token-level objective here);
    - ``"sequence"``: :func:`sequence_mean`, each response's own per-token mean, then the mean over the
      responses, so every response weighs the same (the released code: ``average_log_prob=True``, then
      the batch mean of the per-pair sum).

    Args:
        teacher_responses: (student_logits, teacher_logits, mask) of both models teacher-forced on
            teacher-generated responses: logits (B, T, V), mask (B, T) over the response positions.
        student_responses: the same on student-generated responses (its own B, T).
        alpha: skew α in [0, 1], shared by both terms (0.1 as in DistiLLM).
        normalize: ``"token"`` or ``"sequence"`` (above).
        chunk_size: as in :func:`~minillm.objectives.divergences.forward_kl`.

    Returns:
        (loss, logs): loss = SKL + SRKL, each normalised as above (a set with no masked position
        contributes 0); logs ``skew_forward_kl`` and ``skew_reverse_kl``, detached.
    """
    if normalize not in NORMALIZATIONS:
        raise MinillmError(f"distillm2 normalize={normalize!r}; choose one of {list(NORMALIZATIONS)}")
    terms = {}
    for name, fn, batch in (
        ("skew_forward_kl", skew_forward_kl, teacher_responses),
        ("skew_reverse_kl", skew_reverse_kl, student_responses),
    ):
        if not isinstance(batch, tuple | list) or len(batch) != 3:
            raise MinillmError(f"distillm2 {name} batch must be (student_logits, teacher_logits, mask)")
        if normalize == "token":
            terms[name] = fn(*batch, alpha=alpha, reduction="mean", chunk_size=chunk_size)
        else:
            per_position = fn(*batch, alpha=alpha, reduction="none", chunk_size=chunk_size)
            terms[name] = sequence_mean(per_position, batch[2])
    loss = terms["skew_forward_kl"] + terms["skew_reverse_kl"]
    return loss, {name: value.detach() for name, value in terms.items()}
