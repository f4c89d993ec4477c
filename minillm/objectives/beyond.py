"""Losses of methods published since MiniLLM that build on the token-level divergences.

- :func:`distillm2_loss`: DistiLLM-2's contrastive pair of skew KLs (Ko et al., ICML 2025).
- :func:`taid_loss` and :func:`taid_update`: TAID's interpolated target and its adaptive schedule
  (Shing et al., ICLR 2025).

Pure functions over tensors (and floats for the schedule); shapes, masks, reductions, dtypes and chunking
follow :mod:`minillm.objectives.divergences`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from minillm.errors import MinillmError
from minillm.objectives.divergences import _divergence, _kl, skew_forward_kl, skew_reverse_kl

__all__ = ["TaidState", "distillm2_loss", "taid_loss", "taid_update"]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
"""(student_logits (B, T, V), teacher_logits (B, T, V), mask (B, T) or None)."""


# --------------------------------------------------------------------------- DistiLLM-2


def distillm2_loss(
    teacher_responses: Batch,
    student_responses: Batch,
    *,
    alpha: float = 0.1,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DistiLLM-2's contrastive loss: skew forward KL on teacher responses + skew reverse KL on student ones.

    Paper: Ko et al., "DistiLLM-2: A Contrastive Approach Boosts the Distillation of LLMs", ICML 2025,
    the DistiLLM-2 objective: SKL^{(α)} = KL(p ‖ α·p + (1−α)·q) on teacher-generated responses pulls the
    student up where the teacher puts mass, and SRKL^{(α)} = KL(q ‖ α·q + (1−α)·p) on student-generated
    responses pushes it down where it puts mass the teacher does not (both from DistiLLM,
    :func:`~minillm.objectives.divergences.skew_forward_kl` / ``skew_reverse_kl``).

    Args:
        teacher_responses: (student_logits, teacher_logits, mask) of both models teacher-forced on
            teacher-generated responses: logits (B, T, V), mask (B, T) over the response positions.
        student_responses: the same on student-generated responses (its own B, T).
        alpha: skew α in [0, 1], shared by both terms (0.1 as in DistiLLM).
        chunk_size: as in :func:`~minillm.objectives.divergences.forward_kl`.

    Returns:
        (loss, logs): loss = SKL + SRKL, each the mean over its own masked positions (a set with no
        masked position contributes 0); logs ``skew_forward_kl`` and ``skew_reverse_kl``, detached.
    """
    terms = {}
    for name, fn, batch in (
        ("skew_forward_kl", skew_forward_kl, teacher_responses),
        ("skew_reverse_kl", skew_reverse_kl, student_responses),
    ):
        if not isinstance(batch, tuple | list) or len(batch) != 3:
            raise MinillmError(f"distillm2 {name} batch must be (student_logits, teacher_logits, mask)")
        terms[name] = fn(*batch, alpha=alpha, reduction="mean", chunk_size=chunk_size)
    loss = terms["skew_forward_kl"] + terms["skew_reverse_kl"]
    return loss, {name: value.detach() for name, value in terms.items()}


# --------------------------------------------------------------------------- TAID


def _check_unit(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise MinillmError(f"taid {name} must lie in [0, 1], got {value!r}")
    return float(value)


def taid_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    t: float,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """TAID's loss: forward KL from the time-interpolated target p_t to the student, KL(p_t ‖ q).

    Paper: Shing et al., "TAID: Temporally Adaptive Interpolated Distillation for Efficient Knowledge
    Transfer in Language Models", ICLR 2025, the interpolated distribution and the TAID objective:

        p_t = softmax((1 − t)·stopgrad(logit_q) + t·logit_p),   J = KL(p_t ‖ q).

    The interpolation is in logit space, as in the paper. It is computed on the log-softmax outputs
    rather than the raw logits: softmax ignores a per-row shift, so p_t is the same distribution, and
    −inf logits stay harmless. The student enters the target only through a detached copy, so the
    gradient is that of the cross-entropy −Σ p_t log q; the value is the true KL. t = 1 is exactly
    :func:`~minillm.objectives.divergences.forward_kl`; t = 0 is 0 (the target is the student itself).

    Args:
        student_logits, teacher_logits: (B, T, V).
        mask: (B, T) bool or 0/1, or None for every position.
        t: interpolation in [0, 1] (from :func:`taid_update`).
        reduction, chunk_size: as in :func:`~minillm.objectives.divergences.forward_kl`.
    """
    t = _check_unit("t", t)

    def per_position(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
        if t == 1.0:
            target = log_p
        elif t == 0.0:
            target = log_q.detach()
        else:
            target = F.log_softmax((1.0 - t) * log_q.detach() + t * log_p, dim=-1)
            target = target.clamp(min=torch.finfo(target.dtype).min)
        return _kl(target, log_q)

    return _divergence(per_position, student_logits, teacher_logits, mask, reduction, chunk_size)


class TaidState(NamedTuple):
    """TAID's schedule state between steps: the interpolation t, the momentum m, the previous loss."""

    t: float
    momentum: float = 0.0
    prev_loss: float | None = None


def taid_update(
    state: TaidState,
    loss: float,
    *,
    step: int,
    total_steps: int,
    t_start: float = 0.4,
    t_end: float = 1.0,
    alpha: float = 5e-4,
    beta: float = 0.99,
    eps: float = 1e-8,
) -> TaidState:
    """TAID's adaptive update of t after a training step (a pure function of floats).

    Paper: Shing et al., ICLR 2025, the adaptive interpolation update (its training algorithm). As
    implemented here, after step n (1-based) with loss J_n:

        δ_n = (J_{n−1} − J_n) / (J_{n−1} + ε)          relative decrease of the loss (0 at the first step)
        m_n = β·m_{n−1} + (1 − β)·δ_n                   momentum
        t_linear = t_start + (t_end − t_start)·n / N    the linear floor
        t_{n+1} = min(t_end, max(t_linear, t_n + α·sigmoid(m_n)·(1 − t_n)))

    so t never decreases, never falls below the linear schedule, reaches t_end by step N, and moves
    faster while the loss is falling quickly. This is written from the paper's description and its
    default values (t_start 0.4, t_end 1, α 5e-4, β 0.99) as remembered, not checked against its text
    or code; treat the exact form and defaults as to be confirmed.

    Args:
        state: :class:`TaidState` before the update (start with ``TaidState(t_start)``).
        loss: J_n, the TAID loss of the step just taken (a float).
        step: n, 1-based index of that step; total_steps: N.

    Returns:
        The new state (t_{n+1}, m_n, J_n).
    """
    t_start, t_end = _check_unit("t_start", t_start), _check_unit("t_end", t_end)
    if t_start > t_end:
        raise MinillmError(f"taid t_start ({t_start}) must not exceed t_end ({t_end})")
    _check_unit("t", state.t)
    if not 0.0 <= beta < 1.0:
        raise MinillmError(f"taid beta (momentum) must lie in [0, 1), got {beta}")
    if not alpha >= 0.0:
        raise MinillmError(f"taid alpha (step size) must be >= 0, got {alpha}")
    if not eps > 0.0:
        raise MinillmError(f"taid eps must be > 0, got {eps}")
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise MinillmError(f"taid total_steps must be a positive integer, got {total_steps!r}")
    if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= total_steps:
        raise MinillmError(f"taid step must be an integer in [1, total_steps={total_steps}], got {step!r}")
    loss = float(loss)
    if not math.isfinite(loss):
        raise MinillmError(f"taid loss must be finite, got {loss}")
    delta = 0.0 if state.prev_loss is None else (state.prev_loss - loss) / (state.prev_loss + eps)
    momentum = beta * state.momentum + (1.0 - beta) * delta
    t_linear = t_start + (t_end - t_start) * step / total_steps
    # The logistic function in the form that cannot overflow for a large |m|.
    sigmoid = (
        1.0 / (1.0 + math.exp(-momentum))
        if momentum >= 0
        else math.exp(momentum) / (1.0 + math.exp(momentum))
    )
    t_next = min(t_end, max(t_linear, state.t + alpha * sigmoid * (1.0 - state.t)))
    return TaidState(t_next, momentum, loss)
