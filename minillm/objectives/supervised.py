"""Token-level losses on gold (or teacher-generated) responses: SFT cross-entropy and word-level KD.

Both take logits over the whole teacher-forced sequence (B, L, V) and labels (B, L) with -100 on
prompt and padding; the shift by one (position t predicts token t+1) happens here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from minillm.errors import MinillmError
from minillm.objectives.divergences import forward_kl

# The label of positions that carry no loss (prompt, padding): PyTorch's cross-entropy convention, and
# the value minillm.data.datasets writes (tests/test_architecture.py checks that the two agree).
IGNORE_INDEX = -100


def shift_for_next_token(logits: torch.Tensor, labels: torch.Tensor):
    """Logits at t predict labels at t+1: returns (logits[:, :-1], labels[:, 1:], mask)."""
    targets = labels[:, 1:]
    return logits[:, :-1], targets, targets != IGNORE_INDEX


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over response tokens (EOS included); 0 for a batch with no response token."""
    logits, targets, mask = shift_for_next_token(logits, labels)
    if not mask.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[mask].float(), targets[mask])


def word_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    kd_ratio: float,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The paper's KD baseline: (1 − kd_ratio)·CE + kd_ratio·KL(p‖q) over response tokens.

    KL(p‖q) is the true forward KL (teacher entropy included): its gradient w.r.t. the student is
    that of the teacher–student cross-entropy, but the logged value is the divergence itself.
    ``chunk_size`` computes the KL over that many positions at a time (same value and gradient, bounded
    memory; see :mod:`minillm.objectives.divergences`). Returns the loss and its terms (``ce``, ``kl``),
    detached, for logging.
    """
    s_logits, targets, mask = shift_for_next_token(student_logits, labels)
    ce = sft_loss(student_logits, labels)
    kl = forward_kl(s_logits, teacher_logits[:, :-1], mask, reduction="mean", chunk_size=chunk_size)
    loss = (1.0 - kd_ratio) * ce + kd_ratio * kl
    return loss, {"ce": ce.detach(), "kl": kl.detach()}


def supervised_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | Callable[[], torch.Tensor] | None = None,
    *,
    kd_ratio: float = 0.0,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The supervised objectives' loss (``objective.loss`` of sft, forward_kld and seqkd).

    ``kd_ratio`` = 0: :func:`sft_loss`, no teacher needed; > 0: :func:`word_kd_loss`. ``teacher_logits`` is
    a (B, T, V) tensor or a function returning it, called only when the KD term needs it (so SFT costs
    no teacher pass). Returns the loss and the terms to log (``ce_loss``, ``kd_kl``; none for SFT).
    """
    if not kd_ratio:
        return sft_loss(student_logits, labels), {}
    if callable(teacher_logits):
        teacher_logits = teacher_logits()
    if teacher_logits is None:
        raise MinillmError(f"objective.kd_ratio={kd_ratio}: the KD term needs a teacher (set teacher.path)")
    loss, terms = word_kd_loss(
        student_logits, teacher_logits, labels, kd_ratio=kd_ratio, chunk_size=chunk_size
    )
    return loss, {"ce_loss": terms["ce"], "kd_kl": terms["kl"]}


def temperature_kd_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | Callable[[], torch.Tensor],
    *,
    kd_ratio: float = 0.5,
    temperature: float = 2.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Hinton et al. (2015), "Distilling the Knowledge in a Neural Network": word-level KD at temperature τ,
    (1 − kd_ratio)·CE + kd_ratio·τ²·KL(softmax(t/τ) ‖ softmax(s/τ)) over response tokens (τ² keeps the soft
    term's gradient on the scale of the hard one). τ = 1 is :func:`word_kd_loss`.

    Shapes as :func:`supervised_loss`; ``teacher_logits`` may be a function returning them. Logs ``ce_loss``
    and ``kd_kl`` (the true KL between the softened distributions, before the τ² factor).
    """
    if temperature <= 0:
        raise MinillmError(f"objective.temperature={temperature}: must be > 0")
    if callable(teacher_logits):
        teacher_logits = teacher_logits()
    s_logits, _, mask = shift_for_next_token(student_logits, labels)
    ce = sft_loss(student_logits, labels)
    kl = forward_kl(s_logits / temperature, teacher_logits[:, :-1] / temperature, mask, reduction="mean")
    loss = (1.0 - kd_ratio) * ce + kd_ratio * temperature**2 * kl
    return loss, {"ce_loss": ce.detach(), "kd_kl": kl.detach()}
