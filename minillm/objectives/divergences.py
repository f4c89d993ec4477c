"""Token-level divergences between a student and a teacher next-token distribution.

Every function here has the same call shape::

    f(student_logits, teacher_logits, mask=None, *, reduction="mean", chunk_size=None, ...)

- ``student_logits``, ``teacher_logits``: (B, T, V) unnormalised scores; q = softmax(student),
  p = softmax(teacher) over the last axis.
- ``mask``: (B, T), bool or 0/1; ``None`` means every position counts. Positions outside the mask
  contribute nothing (their values are ignored; they only need one finite logit per row so the
  backward pass stays finite).
- ``reduction``: ``"mean"`` → scalar mean over masked positions (0 for an all-masked batch, never
  NaN); ``"sum"`` → scalar sum over masked positions; ``"none"`` → (B, T) with zeros outside the mask.
- ``chunk_size``: compute over chunks of that many sequence positions, each under activation
  checkpointing, so only one chunk's float32 (B, chunk, V) intermediates are alive at a time, in the
  forward and in the backward pass. Same values and gradients as the plain call.

All of them return TRUE divergences: the teacher's entropy is included, so identical distributions
give exactly 0. (A cross-entropy −Σ p log q has the same gradient with respect to the student as
KL(p‖q) but a different value; we log the divergence.) Gradients flow into whichever input requires
grad; pass a detached teacher for distillation.

Numerics: the math runs in float32 (bf16 / fp16 inputs are upcast; float64 stays float64), in log
space via ``log_softmax`` and ``logaddexp`` for mixtures. Logits of −inf (masked vocabulary entries)
are allowed: 0·log 0 is taken as 0 without NaN in values or gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from minillm.errors import MinillmError

__all__ = [
    "DIVERGENCES",
    "chunked",
    "forward_kl",
    "jsd",
    "log_mixture",
    "masked_reduce",
    "reverse_kl",
    "skew_forward_kl",
    "skew_reverse_kl",
    "tvd",
]

REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------- helpers


def masked_reduce(values: torch.Tensor, mask: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """Reduce per-position values (B, T) over the positions where ``mask`` is set.

    ``"none"`` returns (B, T) with zeros outside the mask (``torch.where``, so NaN or inf at masked-out
    positions never leaks); ``"sum"`` the scalar sum; ``"mean"`` the sum divided by the number of masked
    positions, or 0 when there are none.
    """
    if reduction not in REDUCTIONS:
        raise MinillmError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if mask is None:
        mask = torch.ones(values.shape, dtype=torch.bool, device=values.device)
    else:
        if mask.shape != values.shape:
            raise MinillmError(f"mask shape {tuple(mask.shape)} does not match values {tuple(values.shape)}")
        mask = mask.bool()
    values = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    if reduction == "none":
        return values
    total = values.sum()
    if reduction == "sum":
        return total
    return total / mask.sum().clamp(min=1).to(values.dtype)


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, float32 otherwise (half precision is upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _log_probs(logits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # −inf → the most negative finite number: exp() is still exactly 0, and 0·(finite) keeps 0·log 0
    # terms at 0 in both the value and the gradient (a true −inf would give 0·inf = NaN).
    return F.log_softmax(logits.to(dtype), dim=-1).clamp(min=torch.finfo(dtype).min)


def log_mixture(log_a: torch.Tensor, log_b: torch.Tensor, weight: float) -> torch.Tensor:
    """log(weight·a + (1 − weight)·b) from log a and log b, exact at weight 0 and 1."""
    if not 0.0 <= weight <= 1.0:
        raise MinillmError(f"mixture weight must lie in [0, 1], got {weight}")
    if weight == 0.0:
        return log_b
    if weight == 1.0:
        return log_a
    return torch.logaddexp(log_a + math.log(weight), log_b + math.log1p(-weight))


def _kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """Σ_v a(v)[log a(v) − log b(v)] over the last axis → (..., )."""
    return (log_a.exp() * (log_a - log_b)).sum(dim=-1)


def _divergence(
    per_position: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None,
    reduction: str,
    chunk_size: int | None,
) -> torch.Tensor:
    """Shared driver: log-probs in the compute dtype → per-position values (B, T) → reduction."""
    if student_logits.shape != teacher_logits.shape:
        raise MinillmError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must have the same shape (B, T, V)"
        )
    if reduction not in REDUCTIONS:
        raise MinillmError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    dtype = _compute_dtype(student_logits, teacher_logits)

    def values(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return per_position(_log_probs(s, dtype), _log_probs(t, dtype))

    if chunk_size is None:
        out = values(student_logits, teacher_logits)
    else:
        if chunk_size < 1:
            raise MinillmError(f"chunk_size must be a positive integer, got {chunk_size}")
        needs_grad = torch.is_grad_enabled() and (
            student_logits.requires_grad or teacher_logits.requires_grad
        )
        pieces = []
        for s, t in zip(
            student_logits.split(chunk_size, dim=1), teacher_logits.split(chunk_size, dim=1), strict=True
        ):
            # Checkpointing keeps only the chunk's inputs for backward and recomputes the rest.
            pieces.append(checkpoint(values, s, t, use_reentrant=False) if needs_grad else values(s, t))
        out = torch.cat(pieces, dim=1)
    return masked_reduce(out, mask, reduction)


# --------------------------------------------------------------------------- divergences


def forward_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Forward KL, KL(p‖q) = Σ_v p(v)[log p(v) − log q(v)] per position (word-level KD).

    Args:
        student_logits: (B, T, V), q = softmax.
        teacher_logits: (B, T, V), p = softmax.
        mask: (B, T) bool or 0/1, or None for every position.
        reduction: "mean" over masked positions (0 if none), "sum", or "none" → (B, T).
        chunk_size: positions per chunk for the memory-bounded variant (same result).

    Returns:
        The true KL, teacher entropy included. Its gradient with respect to the student equals that of
        the cross-entropy −Σ_v p(v) log q(v), which differs from it in value by the teacher entropy.
    """
    return _divergence(
        lambda log_q, log_p: _kl(log_p, log_q), student_logits, teacher_logits, mask, reduction, chunk_size
    )


def reverse_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Reverse KL, KL(q‖p) = Σ_v q(v)[log q(v) − log p(v)] per position (mode-seeking).

    This is MiniLLM's single-step term (paper Eq. 5) when evaluated on the student's own prefixes.
    Shapes, masking and reductions as in :func:`forward_kl`. Returns the true KL (student entropy
    included); it is 0 for identical distributions.
    """
    return _divergence(
        lambda log_q, log_p: _kl(log_q, log_p), student_logits, teacher_logits, mask, reduction, chunk_size
    )


def jsd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    beta: float = 0.5,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Generalised Jensen–Shannon divergence (GKD): β·KL(p‖m) + (1−β)·KL(q‖m), m = β·p + (1−β)·q.

    The end points are defined by continuity of JSD(β)/β and JSD(β)/(1−β): ``beta=0`` returns exactly
    KL(p‖q) (forward side) and ``beta=1`` exactly KL(q‖p) (reverse side). β = 0.5 is the symmetric JSD
    (bounded by log 2). Shapes, masking and reductions as in :func:`forward_kl`.
    """
    if not 0.0 <= beta <= 1.0:
        raise MinillmError(f"jsd beta must lie in [0, 1], got {beta}")
    if beta == 0.0:
        return forward_kl(student_logits, teacher_logits, mask, reduction=reduction, chunk_size=chunk_size)
    if beta == 1.0:
        return reverse_kl(student_logits, teacher_logits, mask, reduction=reduction, chunk_size=chunk_size)

    def per_position(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
        log_m = log_mixture(log_p, log_q, beta)
        return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)

    return _divergence(per_position, student_logits, teacher_logits, mask, reduction, chunk_size)


def skew_forward_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    alpha: float = 0.1,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Skew forward KL (DistiLLM): KL(p ‖ α·p + (1−α)·q).

    ``alpha=0`` is the plain forward KL; ``alpha=1`` is 0. Shapes, masking and reductions as in
    :func:`forward_kl`.
    """
    if not 0.0 <= alpha <= 1.0:
        raise MinillmError(f"skew_forward_kl alpha must lie in [0, 1], got {alpha}")
    return _divergence(
        lambda log_q, log_p: _kl(log_p, log_mixture(log_p, log_q, alpha)),
        student_logits,
        teacher_logits,
        mask,
        reduction,
        chunk_size,
    )


def skew_reverse_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    alpha: float = 0.1,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Skew reverse KL (DistiLLM): KL(q ‖ α·q + (1−α)·p).

    ``alpha=0`` is the plain reverse KL; ``alpha=1`` is 0. Shapes, masking and reductions as in
    :func:`forward_kl`.
    """
    if not 0.0 <= alpha <= 1.0:
        raise MinillmError(f"skew_reverse_kl alpha must lie in [0, 1], got {alpha}")
    return _divergence(
        lambda log_q, log_p: _kl(log_q, log_mixture(log_q, log_p, alpha)),
        student_logits,
        teacher_logits,
        mask,
        reduction,
        chunk_size,
    )


def tvd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Total variation distance, ½·Σ_v |p(v) − q(v)| per position, in [0, 1].

    Shapes, masking and reductions as in :func:`forward_kl`.
    """
    return _divergence(
        lambda log_q, log_p: 0.5 * (log_p.exp() - log_q.exp()).abs().sum(dim=-1),
        student_logits,
        teacher_logits,
        mask,
        reduction,
        chunk_size,
    )


DIVERGENCES: dict[str, Callable[..., torch.Tensor]] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": jsd,
    "skew_forward_kl": skew_forward_kl,
    "skew_reverse_kl": skew_reverse_kl,
    "tvd": tvd,
}


def chunked(fn: Callable[..., torch.Tensor], chunk_size: int) -> Callable[..., torch.Tensor]:
    """``fn`` with ``chunk_size`` bound: the memory-bounded variant of any divergence above."""
    if chunk_size < 1:
        raise MinillmError(f"chunk_size must be a positive integer, got {chunk_size}")
    return partial(fn, chunk_size=chunk_size)
