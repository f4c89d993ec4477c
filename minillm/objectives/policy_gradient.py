"""MiniLLM's policy-gradient estimator as pure functions over tensors.

Paper: Gu, Dong, Wei, Huang, "MiniLLM: On-Policy Distillation of Large Language Models" (arXiv
2306.08543). The objective is the sequence-level reverse KL, KL[q_θ ‖ p]; its gradient (Eq. 2) is

    ∇L = −E_{y∼q_θ} Σ_t R_t ∇log q_θ(y_t | y_<t),   R_t = Σ_{t'≥t} r_{t'},
    r_t = log p(y_t | y_<t) − log q_θ(y_t | y_<t).

MiniLLM splits off the current step and takes its expectation over the vocabulary exactly (single-step
term, Eq. 5), samples from a teacher-mixed distribution p̃ = α·p + (1−α)·q_θ corrected by per-token
importance weights w_t = q_θ(y_t|·)/p̃(y_t|·) (Eq. 6), and length-normalises the long-term return
(Eq. 7). The released code differs from the printed equations in several places (the ``variant=code`` /
``variant=paper`` table in README.md's MiniLLM section); :class:`PGOptions` reaches both:
``PGOptions.code()`` (the default) and ``PGOptions.paper()``.

Shapes: every (B, T) tensor runs over RESPONSE tokens; ``mask`` is 1 from the first response token up
to and including EOS (a contiguous prefix of each row) and 0 after. Masked positions hold 0 in every
returned (B, T) tensor. Rewards, returns, advantages and importance weights are detached: gradients
flow only through the current log-probs / logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from minillm.errors import MinillmError
from minillm.objectives.divergences import log_mixture as _log_mixture
from minillm.objectives.divergences import masked_reduce, reverse_kl

__all__ = [
    "LENGTH_NORMS",
    "LOCAL",
    "RankPool",
    "PGOptions",
    "advantages",
    "importance_weights",
    "minillm_loss",
    "mix_logprobs",
    "policy_gradient_loss",
    "returns_to_go",
    "scale_rewards",
    "single_step_loss",
    "token_rewards",
    "whiten",
]

LENGTH_NORMS = ("none", "summed", "remaining")


def _zero_masked(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.bool(), values, torch.zeros((), dtype=values.dtype, device=values.device))


def _float(values: torch.Tensor) -> torch.Tensor:
    """Upcast half precision to float32; keep float32 / float64."""
    return values if values.dtype in (torch.float32, torch.float64) else values.float()


def _same(values: torch.Tensor) -> torch.Tensor:
    return values


@dataclass(frozen=True)
class RankPool:
    """How a minibatch's statistics pool across data-parallel ranks.

    ``sum`` and ``max`` take a detached tensor and return its sum / maximum over all ranks (e.g. an
    all-reduce); the default (:data:`LOCAL`) is one process, where both return their input. With them,
    N ranks holding B rollouts each compute what one process holding all N·B computes: whitening uses the
    global mean and spread, every loss term is divided by the global count of response tokens, and the
    logged statistics are global. Each rank's loss is then its SHARE of the global loss (the shares sum to
    it), so the gradient of the global loss is the SUM of the ranks' gradients: a caller whose strategy
    averages gradients over ranks (DDP, FSDP) multiplies the loss by the world size before backward.
    """

    sum: Callable[[torch.Tensor], torch.Tensor] = _same
    max: Callable[[torch.Tensor], torch.Tensor] = _same


LOCAL = RankPool()


def pooled_mean(values: torch.Tensor, mask: torch.Tensor, pool: RankPool = LOCAL) -> torch.Tensor:
    """This rank's share of the mean of ``values`` (B, T) over the masked entries of all ranks: the local
    masked sum over the global count (0 when no rank has an entry). Gradients flow through ``values``."""
    count = pool.sum(mask.bool().sum().detach())
    return masked_reduce(values, mask, "sum") / count.clamp(min=1).to(values.dtype)


def pooled_max(values: torch.Tensor, mask: torch.Tensor, pool: RankPool = LOCAL) -> torch.Tensor:
    """The maximum of ``values`` over the masked entries of all ranks (0 when none has an entry)."""
    if pool is LOCAL:
        return _masked_max(values, mask)
    local = values[mask.bool()].max() if mask.bool().any() else values.new_tensor(float("-inf"))
    top = pool.max(local.detach())
    return torch.where(torch.isinf(top), torch.zeros_like(top), top)


# --------------------------------------------------------------------------- rewards and returns


def token_rewards(
    teacher_logprobs: torch.Tensor, old_student_logprobs: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Per-token reward r_t = log p(y_t|y_<t) − log q_old(y_t|y_<t) (paper Eq. 2), 0 outside the mask.

    Args:
        teacher_logprobs: (B, T) teacher log-prob of each sampled token.
        old_student_logprobs: (B, T) log-prob of each sampled token under the student that generated
            the rollout (q_old).
        mask: (B, T).

    Returns:
        (B, T) detached rewards.
    """
    rewards = _float(teacher_logprobs.detach()) - _float(old_student_logprobs.detach())
    return _zero_masked(rewards, mask)


def scale_rewards(
    rewards: torch.Tensor, mask: torch.Tensor, *, scale: float = 1.0, clip: float | None = None
) -> torch.Tensor:
    """r / scale, then clamp to [−clip, clip] (authors' code: scale 0.5, clip 100; the paper: neither).

    Args:
        rewards: (B, T).
        mask: (B, T).
        scale: positive divisor.
        clip: positive bound, or None for no clamp.

    Returns:
        (B, T), 0 outside the mask.
    """
    if scale <= 0:
        raise MinillmError(f"reward scale must be > 0, got {scale}")
    if clip is not None and clip <= 0:
        raise MinillmError(f"reward clip must be > 0 or None, got {clip}")
    out = rewards / scale
    if clip is not None:
        out = out.clamp(-clip, clip)
    return _zero_masked(out, mask)


def returns_to_go(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 1.0,
    include_current: bool = True,
    length_norm: str = "none",
) -> torch.Tensor:
    """Discounted return from each position (paper Eq. 2, 7; authors' code).

    - ``include_current=True``: R_t = Σ_{k≥t} γ^{k−t} r_k (Eq. 2 with γ = 1; the code with γ = 0.95;
      γ = 0 gives r_t alone).
    - ``include_current=False``: R_{t+1} = Σ_{k>t} γ^{k−t−1} r_k, the long-term part of the
      single-step decomposition (Eq. 5).

    ``length_norm``:

    - ``"none"``: no normalisation.
    - ``"summed"``: divide by the number of valid tokens the sum runs over (Eq. 7's intent; the paper
      prints the denominator as T−t−1 while its sum has T−t terms: we divide by the term count).
    - ``"remaining"``: divide by the number of valid tokens from t inclusive (authors' code), whatever
      ``include_current`` says.

    A sum over zero tokens is 0 (no division by zero). Masked positions count as zero reward (the mask
    is a contiguous prefix, so this only matters past EOS).

    Args:
        rewards: (B, T).
        mask: (B, T).

    Returns:
        (B, T) detached returns, 0 outside the mask.
    """
    if not 0.0 <= gamma <= 1.0:
        raise MinillmError(f"gamma must lie in [0, 1], got {gamma}")
    if length_norm not in LENGTH_NORMS:
        raise MinillmError(f"length_norm must be one of {LENGTH_NORMS}, got {length_norm!r}")
    mask_f = mask.to(_float(rewards).dtype)
    rewards = _zero_masked(_float(rewards.detach()), mask)

    # Reverse scan; T is at most a few hundred, so the loop is cheap and easy to read.
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running if gamma else rewards[:, t]
        returns[:, t] = running
    # remaining[t] = number of valid tokens at positions ≥ t.
    remaining = mask_f.flip(1).cumsum(1).flip(1)
    if not include_current:
        returns = torch.nn.functional.pad(returns[:, 1:], (0, 1))
        summed = torch.nn.functional.pad(remaining[:, 1:], (0, 1))
    else:
        summed = remaining

    if length_norm == "summed":
        returns = returns / summed.clamp(min=1)
    elif length_norm == "remaining":
        returns = returns / remaining.clamp(min=1)
    return _zero_masked(returns, mask)


def whiten(
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    shift_mean: bool = True,
    eps: float = 1e-8,
    pool: RankPool = LOCAL,
) -> torch.Tensor:
    """(x − mean) / (std + eps) over the masked entries of the whole batch (authors' code).

    The mean and (population) standard deviation are taken over all masked entries together, of every
    data-parallel rank with ``pool`` (as the authors' code does). With ``shift_mean=False`` the batch
    mean is added back (trlx convention): only the spread is rescaled. No masked entries → zeros.

    Args:
        values: (B, T).
        mask: (B, T).

    Returns:
        (B, T), detached, 0 outside the mask.
    """
    values = _float(values.detach())
    mask_f = mask.to(values.dtype)
    # no masked entries: every output is masked out below (no branch on the count, which would split a
    # compiled loss in two)
    count = pool.sum(mask_f.sum()).clamp(min=1)
    mean = pool.sum((values * mask_f).sum()) / count
    var = pool.sum((((values - mean) * mask_f) ** 2).sum()) / count
    out = (values - mean) / (var.sqrt() + eps)
    if not shift_mean:
        out = out + mean
    return _zero_masked(out, mask)


# --------------------------------------------------------------------------- teacher-mixed sampling


def mix_logprobs(
    student_logprobs: torch.Tensor, teacher_logprobs: torch.Tensor, alpha: float
) -> torch.Tensor:
    """log p̃(y_t) = log(α·p(y_t) + (1−α)·q(y_t)) of the sampled token (paper Eq. 6), via logaddexp.

    Exact at α = 0 (student) and α = 1 (teacher). Inputs and output are (B, T).
    """
    if not 0.0 <= alpha <= 1.0:
        raise MinillmError(f"teacher-mix alpha must lie in [0, 1], got {alpha}")
    return _log_mixture(teacher_logprobs, student_logprobs, alpha)


def importance_weights(
    old_student_logprobs: torch.Tensor,
    mix_logprobs: torch.Tensor,
    mask: torch.Tensor,
    *,
    max_weight: float | None = None,
) -> torch.Tensor:
    """Per-token importance weight w_t = q_old(y_t|·) / p̃(y_t|·) (paper Eq. 6; NOT a product over t).

    The paper uses this single factor in place of the prefix product Π_{t'≤t} q/p̃ to reduce variance.
    For T > 1 both are biased: the prefix product makes the single-step term exact but not the long-term
    one, which needs each future reward r_k weighted by Π_{t'≤k} q/p̃ (per-decision importance sampling).
    The biases are measured in tests/test_policy_gradient.py.

    Args:
        old_student_logprobs: (B, T) log q_old of the sampled tokens.
        mix_logprobs: (B, T) log p̃ of the sampled tokens (from :func:`mix_logprobs`).
        mask: (B, T).
        max_weight: optional upper clamp.

    Returns:
        (B, T) detached weights, 0 outside the mask.
    """
    if max_weight is not None and max_weight <= 0:
        raise MinillmError(f"max_weight must be > 0 or None, got {max_weight}")
    weights = torch.exp(_float(old_student_logprobs.detach()) - _float(mix_logprobs.detach()))
    if max_weight is not None:
        weights = weights.clamp(max=max_weight)
    return _zero_masked(weights, mask)


# --------------------------------------------------------------------------- losses


def policy_gradient_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps: float | None = 0.2,
    importance_weight: torch.Tensor | None = None,
    reduction: str = "none",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate for the long-term term (paper Eq. 5–7 with PPO clipping, authors' code).

    ratio_t = exp(log q_θ(y_t) − log q_old(y_t)) · w_t, and
    loss_t = max(−A_t·ratio_t, −A_t·clip(ratio_t, 1−ε, 1+ε)).
    At ratio 1 its gradient is −A_t·w_t·∇log q_θ(y_t), the policy-gradient term. Note that with
    ``importance_weight`` given the clip also acts on w_t (as in the authors' code).

    Args:
        logprobs: (B, T) current log q_θ of the sampled tokens (carries the gradient).
        old_logprobs: (B, T) log q_old at rollout time.
        advantages: (B, T) advantages (detached here).
        mask: (B, T).
        clip_eps: ε > 0, or None to disable clipping.
        importance_weight: (B, T) w_t, or None for 1.
        reduction: "none" → (B, T), 0 outside the mask; "mean" over masked tokens (0 if none); "sum".

    Returns:
        (loss, stats): stats holds detached scalars ``clip_frac`` (fraction of masked tokens where the
        clipped branch is taken) and ``ratio_mean`` / ``ratio_max`` over masked tokens, and the (B, T)
        ``clip_taken`` and ``ratio`` they are means of (0 outside the mask).
    """
    if clip_eps is not None and clip_eps <= 0:
        raise MinillmError(f"clip_eps must be > 0 or None, got {clip_eps}")
    logprobs = _float(logprobs)
    log_ratio = _zero_masked(logprobs - _float(old_logprobs.detach()), mask)  # masked: ratio 1, no inf
    ratio = torch.exp(log_ratio)
    if importance_weight is not None:
        ratio = ratio * _float(importance_weight.detach())
    adv = _float(advantages.detach())
    loss = -adv * ratio
    if clip_eps is not None:
        clipped = -adv * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
        clip_taken = (clipped > loss).to(loss.dtype)
        loss = torch.maximum(loss, clipped)
    else:
        clip_taken = torch.zeros_like(loss)
    with torch.no_grad():
        stats = {
            "clip_frac": masked_reduce(clip_taken, mask, "mean"),
            "ratio_mean": masked_reduce(ratio.detach(), mask, "mean"),
            "ratio_max": _masked_max(ratio.detach(), mask),
            "clip_taken": _zero_masked(clip_taken, mask),  # (B, T), for statistics pooled across ranks
            "ratio": _zero_masked(ratio.detach(), mask),
        }
    return masked_reduce(loss, mask, reduction), stats


def single_step_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    reduction: str = "none",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Single-step term (paper Eq. 5): Σ_v q_θ(v|y_<t)[log q_θ(v|y_<t) − log p(v|y_<t)] per position.

    The current token's part of the gradient, with its expectation over the vocabulary taken exactly:
    the token-level reverse KL (:func:`~minillm.objectives.divergences.reverse_kl`) on the sampled
    prefixes, differentiated through q_θ only (the teacher is detached). With ``weights`` (the paper's
    w_t, Eq. 6) each position is multiplied by its detached weight; the authors' code uses none.

    Args:
        student_logits: (B, T, V) student logits at the response positions.
        teacher_logits: (B, T, V) teacher logits at the same positions.
        mask: (B, T).
        weights: (B, T) per-token weights, or None.
        reduction: "none" → (B, T), 0 outside the mask; "mean" over masked tokens (0 if none); "sum".
        chunk_size: positions per chunk of the full-vocabulary computation (same result, peak memory
            bounded by one chunk's (B, chunk, V) intermediates), or None for one pass.
    """
    per_token = reverse_kl(
        student_logits, teacher_logits.detach(), mask, reduction="none", chunk_size=chunk_size
    )
    if weights is not None:
        per_token = per_token * weights.detach().to(per_token.dtype)
    return masked_reduce(per_token, mask, reduction)


def _masked_max(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The maximum of ``values`` over the masked entries (0 when there are none), without a data-dependent
    branch or a boolean index (either would split a compiled loss)."""
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    if values.numel() == 0:  # a shape, not a value: no branch on data
        return zero
    mask = mask.bool()
    lowest = float("-inf") if values.is_floating_point() else torch.iinfo(values.dtype).min
    return torch.where(mask.any(), values.masked_fill(~mask, lowest).amax(), zero)


# --------------------------------------------------------------------------- options and pipeline


@dataclass(frozen=True)
class PGOptions:
    """Knobs of MiniLLM's estimator. The defaults are the authors' released code (``PGOptions.code()``).

    Attributes:
        gamma: discount in [0, 1] for the return (code 0.95, paper 1; 0: each token's own reward, the
            advantage of plain on-policy distillation).
        include_current: whether the return at t includes r_t (code True; paper False, since the
            single-step term covers step t). With ``single_step`` also on, step t is counted twice in
            expectation — the authors' code does this.
        length_norm: "none", "summed" (paper Eq. 7) or "remaining" (code).
        whiten: whiten advantages over the batch (code True, paper False).
        reward_scale: rewards are divided by this (code 0.5, paper 1).
        reward_clip: rewards clamped to ±this after scaling, or None (code 100, paper None).
        clip_eps: PPO ratio clip ε > 0, or None to disable (both 0.2).
        single_step: add the single-step term (Eq. 5).
        single_step_weighted: multiply the single-step term by w_t (paper True, code False); ignored
            when ``single_step`` is off.
        ratio_weighted: multiply the PPO ratio by w_t (both True).
    """

    gamma: float = 0.95
    include_current: bool = True
    length_norm: str = "remaining"
    whiten: bool = True
    reward_scale: float = 0.5
    reward_clip: float | None = 100.0
    clip_eps: float | None = 0.2
    single_step: bool = True
    single_step_weighted: bool = False
    ratio_weighted: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma <= 1.0:
            raise MinillmError(f"PGOptions.gamma must lie in [0, 1], got {self.gamma}")
        if self.length_norm not in LENGTH_NORMS:
            raise MinillmError(
                f"PGOptions.length_norm must be one of {LENGTH_NORMS}, got {self.length_norm!r}"
            )
        if not self.reward_scale > 0:
            raise MinillmError(f"PGOptions.reward_scale must be > 0, got {self.reward_scale}")
        if self.reward_clip is not None and not self.reward_clip > 0:
            raise MinillmError(f"PGOptions.reward_clip must be > 0 or null, got {self.reward_clip}")
        if self.clip_eps is not None and not self.clip_eps > 0:
            raise MinillmError(f"PGOptions.clip_eps must be > 0 or null, got {self.clip_eps}")
        for name in ("include_current", "whiten", "single_step", "single_step_weighted", "ratio_weighted"):
            if not isinstance(getattr(self, name), bool):
                raise MinillmError(f"PGOptions.{name} must be true or false, got {getattr(self, name)!r}")

    @classmethod
    def code(cls) -> PGOptions:
        """The authors' released code (the default)."""
        return cls()

    @classmethod
    def paper(cls, *, single_step: bool = True) -> PGOptions:
        """The equations as printed: γ = 1, return from t+1 (from t without the single-step term),
        normalised by the summed-token count, no whitening or reward scaling, w_t in both terms."""
        return cls(
            gamma=1.0,
            include_current=not single_step,
            length_norm="summed",
            whiten=False,
            reward_scale=1.0,
            reward_clip=None,
            clip_eps=0.2,
            single_step=single_step,
            single_step_weighted=single_step,
            ratio_weighted=True,
        )


def advantages(
    rewards: torch.Tensor, mask: torch.Tensor, options: PGOptions, pool: RankPool = LOCAL
) -> torch.Tensor:
    """Rewards → advantages as configured: scale / clip → return-to-go (γ, include_current, length
    normalisation; paper Eq. 2, 5, 7 or authors' code) → optional batch whitening (authors' code).

    Args:
        rewards: (B, T) per-token rewards from :func:`token_rewards`.
        mask: (B, T).
        options: a :class:`PGOptions`.
        pool: how whitening's statistics pool across data-parallel ranks (:class:`RankPool`).

    Returns:
        (B, T) detached advantages, 0 outside the mask.
    """
    scaled = scale_rewards(rewards, mask, scale=options.reward_scale, clip=options.reward_clip)
    adv = returns_to_go(
        scaled,
        mask,
        gamma=options.gamma,
        include_current=options.include_current,
        length_norm=options.length_norm,
    )
    if options.whiten:
        adv = whiten(adv, mask, pool=pool)
    return adv


def minillm_loss(
    logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    mix_logprobs: torch.Tensor,
    mask: torch.Tensor,
    options: PGOptions,
    *,
    chunk_size: int | None = None,
    pool: RankPool = LOCAL,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """MiniLLM's distillation loss on one minibatch of rollouts (pre-training term excluded).

    L = PPO-clipped long-term term (:func:`policy_gradient_loss`, mean over masked tokens)
        + single-step term (:func:`single_step_loss`, mean over masked tokens) if ``options.single_step``.

    Args:
        logits: (B, T, V) current student logits at the response positions.
        teacher_logits: (B, T, V) teacher logits at the same positions.
        logprobs: (B, T) current student log-probs of the sampled tokens (carry the gradient).
        old_logprobs: (B, T) student log-probs recorded at rollout time (q_old).
        teacher_logprobs: (B, T) teacher log-probs of the sampled tokens.
        mix_logprobs: (B, T) log p̃ of the sampled tokens at rollout time (equal to ``old_logprobs``
            when sampling from the student alone, giving w_t = 1).
        mask: (B, T), 1 up to and including EOS.
        options: a :class:`PGOptions`.
        chunk_size: sequence positions per chunk for the full-vocabulary single-step term (same value
            and gradient as one pass; memory bounded for large vocabularies), or None.
        pool: data-parallel ranks (:class:`RankPool`): whitening, the token-count normalisation of both
            terms and the logged statistics are then global, and ``total`` is this rank's share of the
            global loss (see :class:`RankPool` for the gradient's scale).

    Returns:
        (total, logs): ``total`` a scalar with gradient; ``logs`` detached scalars ``pg_loss``,
        ``single_step_loss``, ``clip_frac``, ``ratio_mean``, ``iw_mean``, ``iw_max``, ``reward_mean``,
        ``advantage_mean`` and ``reverse_kl`` (token-level KL(q‖p) per masked token, unweighted).
    """
    weights = importance_weights(old_logprobs, mix_logprobs, mask)
    rewards = token_rewards(teacher_logprobs, old_logprobs, mask)
    adv = advantages(rewards, mask, options, pool)
    pg_tokens, pg_stats = policy_gradient_loss(
        logprobs,
        old_logprobs,
        adv,
        mask,
        clip_eps=options.clip_eps,
        importance_weight=weights if options.ratio_weighted else None,
        reduction="none",
    )
    pg = pooled_mean(pg_tokens, mask, pool)
    if options.single_step:
        kl_tokens = single_step_loss(logits, teacher_logits, mask, chunk_size=chunk_size)  # (B, T), with grad
        ss_tokens = kl_tokens * weights if options.single_step_weighted else kl_tokens
        single = pooled_mean(ss_tokens, mask, pool)
    else:
        with torch.no_grad():  # logged only
            kl_tokens = reverse_kl(logits, teacher_logits, mask, reduction="none", chunk_size=chunk_size)
        single = torch.zeros((), dtype=pg.dtype, device=pg.device)
    # without the single-step term the loss is pg itself: inductor (torch 2.13) returns pg + a constant zero
    # without its gradient when pg's detached value is returned beside it
    total = pg + single if options.single_step else pg
    with torch.no_grad():

        def mean(values: torch.Tensor) -> torch.Tensor:  # over the masked tokens of every rank
            return pool.sum(pooled_mean(values.detach(), mask, pool))

        clip_taken = pg_stats["clip_taken"]
        logs = {
            "pg_loss": pool.sum(pg.detach()),
            "single_step_loss": pool.sum(single.detach()),
            "clip_frac": mean(clip_taken),
            "ratio_mean": mean(pg_stats["ratio"]),
            "iw_mean": mean(weights),
            "iw_max": pooled_max(weights, mask, pool),
            "reward_mean": mean(rewards),
            "advantage_mean": mean(adv),
            "reverse_kl": mean(kl_tokens),
        }
    return total, logs
