"""Token-level distillation with any divergence of :mod:`minillm.objectives.divergences` (``objective=token_kd``).

One loss for GKD, DistiLLM and plain token-level KD on whatever responses the batch holds (gold, teacher
samples or student samples: the training module decides), optionally against the teacher's top-k
log-probs plus a tail bucket only (what a teacher served over an API returns).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from minillm.errors import MinillmError
from minillm.objectives.divergences import DIVERGENCES, TOPK_DIVERGENCES, topk_divergence, topk_with_tail
from minillm.objectives.supervised import shift_for_next_token

__all__ = ["DIVERGENCE_PARAMS", "check_divergence", "token_kd_loss"]

_NOT_PARAMS = {"student_logits", "teacher_logits", "mask", "reduction", "chunk_size"}

DIVERGENCE_PARAMS: dict[str, tuple[str, ...]] = {
    name: tuple(p for p in inspect.signature(fn).parameters if p not in _NOT_PARAMS)
    for name, fn in DIVERGENCES.items()
}
"""The parameters each divergence takes: ``jsd`` β, the skews α, ``ab_divergence`` α and β, ``akl`` μ."""


def check_divergence(divergence: str, params: dict[str, float], teacher_top_k: int | None = None) -> None:
    """Raise MinillmError unless ``divergence`` is known, takes every parameter in ``params`` and (with
    ``teacher_top_k``) can be computed on top-k buckets."""
    if divergence not in DIVERGENCES:
        raise MinillmError(f"divergence={divergence!r}; choose one of {sorted(DIVERGENCES)}")
    for name in params:
        if name not in DIVERGENCE_PARAMS[divergence]:
            takes = ", ".join(DIVERGENCE_PARAMS[divergence]) or "no parameter"
            raise MinillmError(f"{name}: divergence={divergence} takes {takes}, not {name}")
    if teacher_top_k is not None and divergence not in TOPK_DIVERGENCES:
        raise MinillmError(
            f"teacher_top_k={teacher_top_k}: divergence={divergence} needs the full distributions; top-k "
            f"works with {sorted(TOPK_DIVERGENCES)}"
        )


def token_kd_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | Callable[[], torch.Tensor],
    *,
    divergence: str = "forward_kl",
    alpha: float | None = None,
    beta: float | None = None,
    mu: float | None = None,
    teacher_top_k: int | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean over response tokens of a token-level divergence between teacher p and student q.

    Args:
        student_logits: (B, L, V) over the whole teacher-forced sequence (prompt + response); position t
            predicts token t+1 (the shift happens here, as in :func:`~minillm.objectives.supervised.sft_loss`).
        labels: (B, L) token ids, −100 on prompt and padding: the positions that count.
        teacher_logits: (B, L, V), or a function returning them (called once).
        divergence: a name of :data:`~minillm.objectives.divergences.DIVERGENCES` (forward_kl, reverse_kl,
            jsd, skew_forward_kl, skew_reverse_kl, tvd, ab_divergence, akl).
        alpha, beta, mu: the divergence's parameters (None: its default; one it does not take is refused):
            ``jsd`` β; ``skew_*`` α; ``ab_divergence`` α and β; ``akl`` μ.
        teacher_top_k: None for the full vocabulary; k to keep only the teacher's k most likely tokens per
            position and one bucket with the rest of its mass (:func:`topk_divergence`; k = V gives the
            full value).
        chunk_size: positions per chunk of the full-vocabulary computation (same numbers, less memory).

    Returns:
        (loss, logs): the loss is the divergence itself (a true divergence, 0 for identical
        distributions), 0 for a batch with no response token; logs ``divergence``, detached.
    """
    params = {k: v for k, v in (("alpha", alpha), ("beta", beta), ("mu", mu)) if v is not None}
    check_divergence(divergence, params, teacher_top_k)
    s_logits, _, mask = shift_for_next_token(student_logits, labels)
    if callable(teacher_logits):
        teacher_logits = teacher_logits()
    t_logits = teacher_logits[:, :-1].detach()
    if teacher_top_k is None:
        value = DIVERGENCES[divergence](
            s_logits, t_logits, mask, reduction="mean", chunk_size=chunk_size, **params
        )
    else:
        top = topk_with_tail(t_logits, teacher_top_k)
        value = topk_divergence(
            s_logits, top, mask, divergence=divergence, reduction="mean", chunk_size=chunk_size, **params
        )
    return value, {"divergence": value.detach()}
