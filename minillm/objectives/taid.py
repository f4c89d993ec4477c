"""TAID (Shing et al., ICLR 2025): the forward KL to a target interpolated between student and teacher
(:func:`taid_loss`, the target's entropy :func:`taid_target_entropy`) and the adaptive schedule of the
interpolation t (:class:`TaidState`, :func:`taid_update`).

Pure functions over tensors (and floats for the schedule); shapes, masks, reductions, dtypes and chunking
follow :mod:`minillm.objectives.divergences`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from minillm.errors import MinillmError
from minillm.objectives.divergences import _divergence, _kl

__all__ = ["TaidState", "taid_loss", "taid_target_entropy", "taid_update"]


def _check_unit(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise MinillmError(f"taid {name} must lie in [0, 1], got {value!r}")
    return float(value)


def _taid_log_target(log_q: torch.Tensor, log_p: torch.Tensor, t: float) -> torch.Tensor:
    """log p_t from the student's and the teacher's log-probs (..., V); no gradient reaches the student."""
    if t == 1.0:
        return log_p
    if t == 0.0:
        return log_q.detach()
    target = F.log_softmax((1.0 - t) * log_q.detach() + t * log_p, dim=-1)
    return target.clamp(min=torch.finfo(target.dtype).min)


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

    The interpolation is in logit space, as in the paper and its code (SakanaAI/TAID,
    ``src/distil_losses/taid.py``). It is computed on the log-softmax outputs rather than the raw logits:
    softmax ignores a per-row shift, so p_t is the same distribution, and −inf logits stay harmless. The
    student enters the target only through a detached copy, so the gradient is that of the cross-entropy
    −Σ p_t log q (what the reference computes); the value is the true KL, the cross-entropy less H(p_t)
    (:func:`taid_target_entropy`). t = 1 is exactly
    :func:`~minillm.objectives.divergences.forward_kl`; t = 0 is 0 (the target is the student itself).

    Args:
        student_logits, teacher_logits: (B, T, V).
        mask: (B, T) bool or 0/1, or None for every position.
        t: interpolation in [0, 1] (from :func:`taid_update`).
        reduction, chunk_size: as in :func:`~minillm.objectives.divergences.forward_kl`.
    """
    t = _check_unit("t", t)
    return _divergence(
        lambda log_q, log_p: _kl(_taid_log_target(log_q, log_p, t), log_q),
        student_logits,
        teacher_logits,
        mask,
        reduction,
        chunk_size,
    )


def taid_target_entropy(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    t: float,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """The entropy of TAID's target, H(p_t) = −Σ_v p_t(v) log p_t(v), per position (no gradient).

    :func:`taid_loss` plus this is the cross-entropy −Σ p_t log q, the value TAID's reference code feeds
    its schedule (:func:`taid_update`). Shapes, masking, reductions and chunking as in :func:`taid_loss`.
    """
    t = _check_unit("t", t)

    def per_position(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
        target = _taid_log_target(log_q, log_p, t)
        return -(target.exp() * target).sum(dim=-1)

    with torch.no_grad():
        return _divergence(per_position, student_logits, teacher_logits, mask, reduction, chunk_size)


class TaidState(NamedTuple):
    """TAID's schedule state between steps: the interpolation t, the momentum m, the previous loss."""

    t: float
    momentum: float = 0.0
    prev_loss: float | None = None


def _sigmoid(x: float) -> float:
    """The logistic function in the form that cannot overflow for a large |x|."""
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


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
    eps: float = 1e-15,
) -> TaidState:
    """TAID's adaptive update of t after a training step (a pure function of floats).

    Paper: Shing et al., ICLR 2025, the adaptive interpolation update; checked against the authors' code
    (SakanaAI/TAID, ``TAID.update_t``). After the step taken at global step n (0-based: the optimizer
    steps completed before it) with schedule signal J_n:

        the first call (no J_{n−1}) only stores J_n: t and m stay as they are;
        δ_n = (J_{n−1} − J_n) / (J_{n−1} + ε)          relative decrease of the signal
        m_n = β·m_{n−1} + (1 − β)·δ_n                   momentum
        t_linear = t_start + (t_end − t_start)·n / N    the linear floor
        t_{n+1} = min(t_end, max(t_linear, t_n + α·sigmoid(m_n)·(1 − t_n)))

    so t never decreases, never falls below the linear schedule, and moves faster while the signal is
    falling quickly. As in the reference: the first step leaves t, the floor uses the 0-based n (so the
    floor alone reaches t_end only at n = N, after a run's last step, n = N − 1), ε = 1e-15, and the
    defaults are its own (t_start 0.4, t_end 1, α 5e-4, β 0.99). J is what the caller passes: the
    reference passes the cross-entropy −Σ p_t log q (:func:`taid_loss` + :func:`taid_target_entropy`), as
    :class:`~minillm.training.taid.TaidModule` does. The reference's N is Lightning's
    ``estimated_stepping_batches``; the module's is ``schedule_horizon``.

    Args:
        state: :class:`TaidState` before the update (start with ``TaidState(t_start)``).
        loss: J_n, the schedule signal of the step just taken (a float).
        step: n in [0, total_steps], the optimizer steps completed before that step; total_steps: N.

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
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= total_steps:
        raise MinillmError(f"taid step must be an integer in [0, total_steps={total_steps}], got {step!r}")
    loss = float(loss)
    if not math.isfinite(loss):
        raise MinillmError(f"taid loss must be finite, got {loss}")
    if state.prev_loss is None:
        return TaidState(state.t, state.momentum, loss)
    delta = (state.prev_loss - loss) / (state.prev_loss + eps)
    momentum = beta * state.momentum + (1.0 - beta) * delta
    t_linear = t_start + (t_end - t_start) * step / total_steps
    t_next = min(t_end, max(t_linear, state.t + alpha * _sigmoid(momentum) * (1.0 - state.t)))
    return TaidState(t_next, momentum, loss)
