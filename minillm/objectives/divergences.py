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

import inspect
import math
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from minillm.errors import MinillmError

__all__ = [
    "DIVERGENCES",
    "TOPK_DIVERGENCES",
    "TeacherTopK",
    "ab_divergence",
    "akl",
    "chunked",
    "forward_kl",
    "jsd",
    "log_mixture",
    "masked_reduce",
    "reverse_kl",
    "skew_forward_kl",
    "skew_reverse_kl",
    "topk_divergence",
    "topk_with_tail",
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
    _check_reduction(reduction)
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


PerPosition = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(log_q, log_p), each (..., V) → (...): one divergence per position, from clamped log-probs."""


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise MinillmError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _positionwise(
    values: Callable[..., torch.Tensor],
    inputs: tuple[torch.Tensor, ...],
    mask: torch.Tensor | None,
    reduction: str,
    chunk_size: int | None,
) -> torch.Tensor:
    """``values(*inputs)`` → (B, T), optionally over chunks of positions (dim 1) → reduction."""
    _check_reduction(reduction)
    if chunk_size is None:
        out = values(*inputs)
    else:
        if chunk_size < 1:
            raise MinillmError(f"chunk_size must be a positive integer, got {chunk_size}")
        needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in inputs)
        pieces = []
        for chunk in zip(*(x.split(chunk_size, dim=1) for x in inputs), strict=True):
            # Checkpointing keeps only the chunk's inputs for backward and recomputes the rest.
            pieces.append(checkpoint(values, *chunk, use_reentrant=False) if needs_grad else values(*chunk))
        out = torch.cat(pieces, dim=1)
    return masked_reduce(out, mask, reduction)


def _divergence(
    per_position: PerPosition,
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
    dtype = _compute_dtype(student_logits, teacher_logits)

    def values(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return per_position(_log_probs(s, dtype), _log_probs(t, dtype))

    return _positionwise(values, (student_logits, teacher_logits), mask, reduction, chunk_size)


# --------------------------------------------------------------------------- per-position maths
# Each factory checks its parameters and returns a PerPosition; the public functions below and
# topk_divergence share them.


def _forward_kl_pp() -> PerPosition:
    return lambda log_q, log_p: _kl(log_p, log_q)


def _reverse_kl_pp() -> PerPosition:
    return lambda log_q, log_p: _kl(log_q, log_p)


def _jsd_pp(beta: float = 0.5) -> PerPosition:
    if not 0.0 <= beta <= 1.0:
        raise MinillmError(f"jsd beta must lie in [0, 1], got {beta}")
    if beta == 0.0:
        return _forward_kl_pp()
    if beta == 1.0:
        return _reverse_kl_pp()

    def per_position(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
        log_m = log_mixture(log_p, log_q, beta)
        return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)

    return per_position


def _skew_forward_kl_pp(alpha: float = 0.1) -> PerPosition:
    if not 0.0 <= alpha <= 1.0:
        raise MinillmError(f"skew_forward_kl alpha must lie in [0, 1], got {alpha}")
    return lambda log_q, log_p: _kl(log_p, log_mixture(log_p, log_q, alpha))


def _skew_reverse_kl_pp(alpha: float = 0.1) -> PerPosition:
    if not 0.0 <= alpha <= 1.0:
        raise MinillmError(f"skew_reverse_kl alpha must lie in [0, 1], got {alpha}")
    return lambda log_q, log_p: _kl(log_q, log_mixture(log_q, log_p, alpha))


def _tvd_pp() -> PerPosition:
    return lambda log_q, log_p: 0.5 * (log_p.exp() - log_q.exp()).abs().sum(dim=-1)


def _exp_expm1(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """e^m·(e^x − 1) without overflow beyond the result's own: e^{m+x}·(1 − e^{−x}) when x > 0."""
    positive = x > 0
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    x_pos, x_neg = torch.where(positive, x, zero), torch.where(positive, zero, x)
    return torch.where(
        positive, -torch.exp(m + x_pos) * torch.expm1(-x_pos), torch.exp(m) * torch.expm1(x_neg)
    )


def _ab_pp(alpha: float = 0.5, beta: float = 0.5) -> PerPosition:
    for name, value in (("alpha", alpha), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise MinillmError(f"ab_divergence {name} must be a finite number, got {value!r}")
    a, b = float(alpha), float(beta)
    s = a + b

    def entries(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
        # Per-entry terms, all ≥ 0, written as e^m·expm1(·) so that near-equal entries do not cancel
        # large powers against each other (d = 0 exactly where p = q).
        d = lp - lq
        if a != 0.0 and b != 0.0 and s != 0.0:
            m = a * lp + b * lq  # log(p^α q^β)
            return (a * _exp_expm1(m, b * d) + b * _exp_expm1(m, -a * d)) / (a * b * s)
        if a != 0.0 and b == 0.0:  # (1/α²)[p^α log(p^α/q^α) − p^α + q^α]
            return (_exp_expm1(a * lp, -a * d) + a * d * torch.exp(a * lp)) / (a * a)
        if a == 0.0 and b != 0.0:  # (1/β²)[q^β log(q^β/p^β) − q^β + p^β]
            return (_exp_expm1(b * lq, b * d) - b * d * torch.exp(b * lq)) / (b * b)
        if a != 0.0:  # α = −β ≠ 0: (1/α²)[log(q^α/p^α) + (p/q)^α − 1]
            return (torch.expm1(a * d) - a * d) / (a * a)
        return 0.5 * d * d  # α = β = 0

    def per_position(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
        floor = torch.finfo(log_p.dtype).min
        p_zero, q_zero = log_p <= floor, log_q <= floor  # exactly zero mass (clamped −inf)
        zero = torch.zeros((), dtype=log_p.dtype, device=log_p.device)
        inf = torch.full((), math.inf, dtype=log_p.dtype, device=log_p.device)
        lp, lq = torch.where(p_zero, zero, log_p), torch.where(q_zero, zero, log_q)  # finite stand-ins
        out = entries(lp, lq)
        # Where one side has no mass the limit is q^{α+β}/(α(α+β)) (p = 0) or p^{α+β}/(β(α+β)) (q = 0)
        # when the powers involved are positive, and +inf otherwise; entries empty on both sides are
        # absent from the vocabulary.
        only_p = torch.exp(s * lq) / (a * s) if a > 0 and s > 0 else inf
        only_q = torch.exp(s * lp) / (b * s) if b > 0 and s > 0 else inf
        out = torch.where(q_zero, only_q, out)
        out = torch.where(p_zero, only_p, out)
        out = torch.where(p_zero & q_zero, zero, out)
        return out.sum(dim=-1)

    return per_position


def _akl_pp(mu: float = 0.5) -> PerPosition:
    if isinstance(mu, bool) or not isinstance(mu, int | float) or not 0.0 < mu < 1.0:
        raise MinillmError(f"akl mu must lie in (0, 1), got {mu!r}")

    def per_position(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # the weights carry no gradient
            p, q = log_p.exp(), log_q.exp()
            p_sorted, order = p.sort(dim=-1, descending=True, stable=True)
            # Mass of the tokens ranked before each one (exclusive cumulative sum, exact at the boundary).
            before = F.pad(p_sorted.cumsum(dim=-1)[..., :-1], (1, 0))
            head = torch.zeros_like(p, dtype=torch.bool).scatter(-1, order, before < mu)
            gap = (p - q).abs()
            g_head = torch.where(head, gap, 0.0).sum(dim=-1)
            g_total = gap.sum(dim=-1)
            w_head = torch.where(g_total > 0, g_head / g_total.clamp(min=torch.finfo(p.dtype).tiny), 0.5)
        return w_head * _kl(log_p, log_q) + (1.0 - w_head) * _kl(log_q, log_p)

    return per_position


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
    return _divergence(_forward_kl_pp(), student_logits, teacher_logits, mask, reduction, chunk_size)


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
    return _divergence(_reverse_kl_pp(), student_logits, teacher_logits, mask, reduction, chunk_size)


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
    return _divergence(_jsd_pp(beta), student_logits, teacher_logits, mask, reduction, chunk_size)


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
    return _divergence(
        _skew_forward_kl_pp(alpha), student_logits, teacher_logits, mask, reduction, chunk_size
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
    return _divergence(
        _skew_reverse_kl_pp(alpha), student_logits, teacher_logits, mask, reduction, chunk_size
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
    return _divergence(_tvd_pp(), student_logits, teacher_logits, mask, reduction, chunk_size)


def ab_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Alpha-beta divergence D_AB^{(α,β)}(p‖q) per position (ABKD).

    Paper: Wang et al., "ABKD: Pursuing a Proper Allocation of the Probability Mass in Knowledge
    Distillation via α-β-Divergence", ICML 2025, its definition of D_AB (taken from Cichocki, Cruces &
    Amari, "Generalized Alpha-Beta Divergences", Entropy 2011, with its limits). Convention: p is the
    teacher, q the student, sums run over the vocabulary; for α, β, α+β ≠ 0:

        D = −1/(αβ) Σ_v ( p^α q^β − α/(α+β)·p^{α+β} − β/(α+β)·q^{α+β} )

    and by continuity (the generalised, unnormalised forms, which equal the usual ones here because p
    and q both sum to 1):

    - β = 0: (1/α²) Σ ( p^α log(p^α/q^α) − p^α + q^α ); (α, β) = (1, 0) is KL(p‖q), forward KL;
    - α = 0: (1/β²) Σ ( q^β log(q^β/p^β) − q^β + p^β ); (α, β) = (0, 1) is KL(q‖p), reverse KL;
    - α = −β ≠ 0: (1/α²) Σ ( log(q^α/p^α) + (q^α/p^α)^{−1} − 1 );
    - α = β = 0: ½ Σ (log p − log q)².

    Other members: α + β = 1 is Amari's α-divergence; α = β = 0.5 (the default here, a neutral choice
    and not a value from the paper) is 2·Σ(√p − √q)², four times the squared Hellinger distance.
    α and β may be any finite reals (the paper's sweeps use positive ones).

    Zero mass: an entry with p = q = 0 is absent from the vocabulary (contributes 0). An entry with mass
    on one side only gives its limit, q^{α+β}/(α(α+β)) for p = 0 when α > 0 and α+β > 0, p^{α+β}/
    (β(α+β)) for q = 0 when β > 0 and α+β > 0, and +inf otherwise (a negative power of 0 or a log of
    0; for example (1, 0) where the student has no mass); gradients stay finite. Negative α+β raises
    small probabilities to negative powers, which overflow float32 below about e^{−88/|α+β|}.

    Shapes, masking, reductions, dtypes and chunking as in :func:`forward_kl`.
    """
    return _divergence(_ab_pp(alpha, beta), student_logits, teacher_logits, mask, reduction, chunk_size)


def akl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    mu: float = 0.5,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Adaptive KL: a per-position mix of forward and reverse KL weighted by where the gap lies.

    Paper: Wu et al., "Rethinking Kullback-Leibler Divergence in Knowledge Distillation for Large
    Language Models" (arXiv 2404.02657, 2024), the AKL definition. Per position:

        head = the smallest set of top teacher tokens (teacher probabilities sorted in decreasing order)
               whose teacher mass reaches mu, i.e. token i is in the head iff the tokens ranked before it
               hold less than mu; tail = the rest;
        g_head = Σ_head |p − q|,  g_tail = Σ_tail |p − q|;
        AKL = g_head/(g_head + g_tail)·KL(p‖q) + g_tail/(g_head + g_tail)·KL(q‖p).

    Conventions chosen here: the weights are computed without gradient (the gradient is that of the
    fixed mix of the two KLs); ties in the teacher's probabilities are ranked by vocabulary index
    (stable sort); the token whose mass crosses mu belongs to the head (a variant that takes the head
    as the tokens with cumulative mass ≤ mu differs only in that token); identical distributions
    (g_head = g_tail = 0) get weights ½, ½ and AKL = 0. mu must lie in (0, 1).

    Where the teacher has no mass and the student has some, the reverse-KL part is the same huge
    finite value as :func:`reverse_kl`. Shapes, masking, reductions, dtypes and chunking as in
    :func:`forward_kl`.
    """
    return _divergence(_akl_pp(mu), student_logits, teacher_logits, mask, reduction, chunk_size)


DIVERGENCES: dict[str, Callable[..., torch.Tensor]] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": jsd,
    "skew_forward_kl": skew_forward_kl,
    "skew_reverse_kl": skew_reverse_kl,
    "tvd": tvd,
    "ab_divergence": ab_divergence,
    "akl": akl,
}


def chunked(fn: Callable[..., torch.Tensor], chunk_size: int) -> Callable[..., torch.Tensor]:
    """``fn`` with ``chunk_size`` bound: the memory-bounded variant of any divergence above."""
    if chunk_size < 1:
        raise MinillmError(f"chunk_size must be a positive integer, got {chunk_size}")
    return partial(fn, chunk_size=chunk_size)


# --------------------------------------------------------------------------- teacher top-k with a tail bucket


class TeacherTopK(NamedTuple):
    """The teacher's k most likely tokens per position and the mass of all the others, in log space.

    ``indices`` (B, T, k) int64, ``log_probs`` (B, T, k) their log-probabilities in decreasing order,
    ``log_tail`` (B, T) the log of the remaining mass (−inf, or the dtype's most negative number, when
    there is none). What a teacher cache stores instead of (B, T, V) logits.
    """

    indices: torch.Tensor
    log_probs: torch.Tensor
    log_tail: torch.Tensor


def _log_rest(log_probs: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """log Σ of ``log_probs`` (…, V) over the entries NOT in ``indices`` (…, k) → (…, 1), always finite.

    The excluded entries are set to the dtype's most negative number rather than −inf, so an empty rest
    gives that number (exp → 0) and no NaN in the backward pass; it is computed from the remaining
    entries themselves, not as 1 − Σ top-k, so a tiny tail keeps its precision.
    """
    floor = torch.finfo(log_probs.dtype).min
    return log_probs.scatter(-1, indices, floor).logsumexp(dim=-1, keepdim=True).clamp(min=floor)


def topk_with_tail(teacher_logits: torch.Tensor, k: int) -> TeacherTopK:
    """The teacher's top-k tokens per position plus one bucket holding the rest of its mass.

    Args:
        teacher_logits: (B, T, V).
        k: 1 ≤ k ≤ V tokens to keep per position.

    Returns:
        :class:`TeacherTopK` with indices (B, T, k), their log-probabilities (B, T, k) in decreasing
        order (ties as ``torch.topk`` breaks them) and the log of the remaining mass (B, T), in the
        compute dtype (float32, or float64 for float64 logits). No gradient is needed through it, but it
        flows if the logits require it.
    """
    if teacher_logits.dim() != 3:
        raise MinillmError(f"teacher logits must be (B, T, V), got shape {tuple(teacher_logits.shape)}")
    vocab = teacher_logits.shape[-1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vocab:
        raise MinillmError(f"top-k k must be an integer in [1, {vocab}] (the vocabulary size), got {k!r}")
    log_p = _log_probs(teacher_logits, _compute_dtype(teacher_logits))
    top, indices = log_p.topk(k, dim=-1)
    return TeacherTopK(indices, top, _log_rest(log_p, indices).squeeze(-1))


TOPK_DIVERGENCES: dict[str, Callable[..., PerPosition]] = {
    "forward_kl": _forward_kl_pp,
    "reverse_kl": _reverse_kl_pp,
    "jsd": _jsd_pp,
    "skew_forward_kl": _skew_forward_kl_pp,
    "skew_reverse_kl": _skew_reverse_kl_pp,
    "tvd": _tvd_pp,
    "ab_divergence": _ab_pp,
}
"""Divergences :func:`topk_divergence` computes on the (k+1)-bucket distributions, with their parameters."""


def topk_divergence(
    student_logits: torch.Tensor,
    teacher: TeacherTopK,
    mask: torch.Tensor | None = None,
    *,
    divergence: str = "forward_kl",
    reduction: str = "mean",
    chunk_size: int | None = None,
    **params: float,
) -> torch.Tensor:
    """A divergence between student and teacher on the teacher's top-k tokens plus a tail bucket.

    Both distributions are coarsened to k + 1 outcomes: the teacher's k most likely tokens (its
    :class:`TeacherTopK`), and "any other token", whose probability is the remaining mass. The student's
    probabilities are gathered at the teacher's indices and its own remaining mass fills the last bucket,
    so both sum to 1 and the result is a true divergence between the two coarsened distributions. It equals
    the full-vocabulary value when k = V; for the KLs, JSD, the skews and TVD (f-divergences) it is never
    above it (data-processing inequality), for ab_divergence in general it can be.

    Args:
        student_logits: (B, T, V), q = softmax.
        teacher: :func:`topk_with_tail` of the teacher's (B, T, V) logits (or the same read from a cache).
        mask: (B, T) bool or 0/1, or None for every position.
        divergence: one of :data:`TOPK_DIVERGENCES` (forward_kl, reverse_kl, jsd, skew_forward_kl,
            skew_reverse_kl, tvd, ab_divergence); ``params`` are its parameters (``beta=`` for jsd,
            ``alpha=`` for the skews, ``alpha=``, ``beta=`` for ab_divergence), defaults as there.
        reduction, chunk_size: as in :func:`forward_kl`.

    Returns:
        As :func:`forward_kl`; float32 math (float64 if an input is float64).
    """
    if divergence not in TOPK_DIVERGENCES:
        raise MinillmError(f"topk divergence must be one of {sorted(TOPK_DIVERGENCES)}, got {divergence!r}")
    factory = TOPK_DIVERGENCES[divergence]
    accepted = set(inspect.signature(factory).parameters)
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise MinillmError(
            f"topk divergence {divergence} takes parameters {sorted(accepted) or 'none'}, got {unknown}"
        )
    per_position = factory(**params)
    indices, top, tail = teacher
    if student_logits.dim() != 3 or indices.dim() != 3 or top.shape != indices.shape:
        raise MinillmError(
            f"student logits {tuple(student_logits.shape)} must be (B, T, V) and the teacher top-k indices "
            f"{tuple(indices.shape)} and log-probs {tuple(top.shape)} (B, T, k)"
        )
    (b, t, vocab), k = student_logits.shape, indices.shape[-1]
    if indices.shape[:2] != (b, t) or tail.shape != (b, t) or k > vocab:
        raise MinillmError(
            f"teacher top-k indices {tuple(indices.shape)} and log_tail {tuple(tail.shape)} must match the "
            f"student logits {tuple(student_logits.shape)}: same B, T, and k <= V"
        )
    if ((indices < 0) | (indices >= vocab)).any():  # a cache written with another vocabulary
        raise MinillmError(f"teacher top-k indices must lie in [0, {vocab}) (the student's vocabulary)")
    dtype = _compute_dtype(student_logits, top, tail)

    def values(s: torch.Tensor, idx: torch.Tensor, log_p_top: torch.Tensor, log_p_tail: torch.Tensor):
        floor = torch.finfo(dtype).min
        log_q = _log_probs(s, dtype)
        log_q_buckets = torch.cat([log_q.gather(-1, idx), _log_rest(log_q, idx)], dim=-1)
        log_p_buckets = torch.cat([log_p_top.to(dtype), log_p_tail.to(dtype).unsqueeze(-1)], dim=-1)
        return per_position(log_q_buckets, log_p_buckets.clamp(min=floor))

    return _positionwise(values, (student_logits, indices, top, tail), mask, reduction, chunk_size)
