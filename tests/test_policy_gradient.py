"""MiniLLM's estimator: hand-worked unit values, then expected gradients against exact gradients.

The exact tests enumerate every sequence of a tiny problem (vocabulary V = 3, fixed horizon T, a
tabular student q_θ(y_t | y_<t) = softmax(θ[prefix]) and a fixed random teacher table p), so both
sides are computed without sampling:

- ∇J, where J(θ) = KL(q_θ ‖ p) = Σ_y q(y)[log q(y) − log p(y)] over whole sequences, by autograd;
- E[ĝ] of an estimator: the batch is all V^T sequences, each sequence's surrogate loss is built with
  the functions under test (rewards detached, old log-probs = current log-probs detached, so the PPO
  ratio is 1) and weighted by its detached sampling probability (q(y) on-policy, Π_t p̃(y_t|·) for
  teacher-mixed sampling); autograd of the weighted sum is the estimator's expectation.

Negative controls build deliberately wrong estimators and check they do NOT match, so the tolerance
is shown able to fail.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from minillm.errors import MinillmError
from minillm.objectives.divergences import reverse_kl
from minillm.objectives.policy_gradient import (
    PGOptions,
    advantages,
    importance_weights,
    minillm_loss,
    mix_logprobs,
    policy_gradient_loss,
    returns_to_go,
    scale_rewards,
    single_step_loss,
    token_rewards,
    whiten,
)

F64 = torch.float64


# =========================================================================== hand-worked unit values


def test_token_rewards() -> None:
    teacher = torch.tensor([[-1.0, -2.0, -0.5]])
    old = torch.tensor([[-1.5, -1.0, -9.0]])
    mask = torch.tensor([[1, 1, 0]])
    r = token_rewards(teacher, old.requires_grad_(), mask)
    assert torch.equal(r, torch.tensor([[0.5, -1.0, 0.0]]))
    assert not r.requires_grad


def test_scale_rewards() -> None:
    r = torch.tensor([[1.0, -300.0, 2.0, 7.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert torch.equal(scale_rewards(r, mask, scale=0.5, clip=100), torch.tensor([[2.0, -100.0, 4.0, 0.0]]))
    assert torch.equal(scale_rewards(r, mask), torch.tensor([[1.0, -300.0, 2.0, 0.0]]))
    with pytest.raises(MinillmError, match="scale"):
        scale_rewards(r, mask, scale=0)
    with pytest.raises(MinillmError, match="clip"):
        scale_rewards(r, mask, clip=-1)


REWARDS = torch.tensor([[1.0, 2.0, 3.0, 100.0], [5.0, 5.0, 5.0, 5.0]], dtype=F64)
MASK = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0]])


@pytest.mark.parametrize(
    ("kwargs", "expected_row"),
    [
        ({}, [6.0, 5.0, 3.0, 0.0]),
        ({"gamma": 0.5}, [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0, 0.0]),
        ({"include_current": False}, [5.0, 3.0, 0.0, 0.0]),
        ({"include_current": False, "gamma": 0.5}, [2 + 0.5 * 3, 3.0, 0.0, 0.0]),
        ({"length_norm": "summed"}, [6 / 3, 5 / 2, 3 / 1, 0.0]),
        ({"length_norm": "remaining"}, [6 / 3, 5 / 2, 3 / 1, 0.0]),
        # Paper Eq. 7: R_{t+1} over the T−t−1... tokens it sums; the last step sums zero tokens → 0.
        ({"include_current": False, "length_norm": "summed"}, [5 / 2, 3 / 1, 0.0, 0.0]),
        # Authors' code: always divide by the tokens remaining from t inclusive.
        ({"include_current": False, "length_norm": "remaining"}, [5 / 3, 3 / 2, 0.0, 0.0]),
        ({"gamma": 0.5, "length_norm": "remaining"}, [2.75 / 3, 3.5 / 2, 3.0, 0.0]),
    ],
)
def test_returns_to_go_by_hand(kwargs: dict, expected_row: list[float]) -> None:
    out = returns_to_go(REWARDS, MASK, **kwargs)
    expected = torch.tensor([expected_row, [0.0] * 4], dtype=F64)  # second row all masked → zeros
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def _returns_brute_force(r, m, gamma, include_current, length_norm):
    out = torch.zeros_like(r)
    B, T = r.shape
    for b in range(B):
        for t in range(T):
            if not m[b, t]:
                continue
            start = t if include_current else t + 1
            ks = [k for k in range(start, T) if m[b, k]]
            total = sum(gamma ** (k - start) * r[b, k].item() for k in ks)
            if length_norm == "summed":
                total /= max(len(ks), 1)
            elif length_norm == "remaining":
                total /= max(sum(1 for k in range(t, T) if m[b, k]), 1)
            out[b, t] = total
    return out


def test_returns_to_go_against_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    r = torch.randn(4, 6, generator=gen, dtype=F64)
    lengths = torch.tensor([6, 3, 1, 0])
    m = (torch.arange(6)[None] < lengths[:, None]).long()
    for gamma, inc, norm in itertools.product(
        (1.0, 0.95, 0.3), (True, False), ("none", "summed", "remaining")
    ):
        got = returns_to_go(r, m, gamma=gamma, include_current=inc, length_norm=norm)
        torch.testing.assert_close(got, _returns_brute_force(r, m, gamma, inc, norm), rtol=0, atol=1e-12)


def test_returns_to_go_rejects_bad_options() -> None:
    with pytest.raises(MinillmError, match="gamma"):
        returns_to_go(REWARDS, MASK, gamma=0.0)
    with pytest.raises(MinillmError, match="length_norm"):
        returns_to_go(REWARDS, MASK, length_norm="tokens")


def test_whiten_by_hand() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 50.0, 60.0]], dtype=F64)
    m = torch.tensor([[1, 1, 1], [1, 0, 0]])
    std = math.sqrt(1.25)  # entries 1, 2, 3, 4: mean 2.5, population variance 1.25
    expected = torch.tensor([[-1.5, -0.5, 0.5], [1.5, 0.0, 0.0]], dtype=F64) / (std + 1e-8)
    out = whiten(x, m)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert out[m.bool()].mean().abs() < 1e-12
    kept = whiten(x, m, shift_mean=False)
    torch.testing.assert_close(kept, torch.where(m.bool(), expected + 2.5, 0.0), rtol=0, atol=1e-12)
    assert torch.equal(whiten(x, torch.zeros_like(m)), torch.zeros_like(x))
    assert torch.equal(whiten(x, torch.tensor([[0, 1, 0], [0, 0, 0]])), torch.zeros_like(x))  # one entry


def test_mix_logprobs_by_hand() -> None:
    q = torch.tensor([[math.log(0.1), float("-inf")]], dtype=F64)
    p = torch.tensor([[math.log(0.5), math.log(0.5)]], dtype=F64)
    assert torch.equal(mix_logprobs(q, p, 0.0), q)
    assert torch.equal(mix_logprobs(q, p, 1.0), p)
    out = mix_logprobs(q, p, 0.2)
    torch.testing.assert_close(out, torch.tensor([[math.log(0.18), math.log(0.1)]], dtype=F64))
    with pytest.raises(MinillmError, match="alpha"):
        mix_logprobs(q, p, 1.2)


def test_importance_weights_by_hand() -> None:
    old = torch.tensor([[math.log(0.1), math.log(0.6), 0.0]], dtype=F64, requires_grad=True)
    mix = torch.tensor([[math.log(0.18), math.log(0.2), 0.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 0]])
    w = importance_weights(old, mix, mask)
    torch.testing.assert_close(w, torch.tensor([[0.1 / 0.18, 3.0, 0.0]], dtype=F64))
    assert not w.requires_grad
    torch.testing.assert_close(
        importance_weights(old, mix, mask, max_weight=2.0), torch.tensor([[0.1 / 0.18, 2.0, 0.0]], dtype=F64)
    )
    with pytest.raises(MinillmError, match="max_weight"):
        importance_weights(old, mix, mask, max_weight=0)


def test_policy_gradient_loss_clipping_by_hand() -> None:
    # ratios 1.5, 0.5, 1.5, 0.5 with A = 2, 2, −1, −1; ε = 0.2.
    old = torch.zeros(1, 4, dtype=F64)
    logprobs = torch.tensor([[math.log(1.5), math.log(0.5)] * 2], dtype=F64, requires_grad=True)
    adv = torch.tensor([[2.0, 2.0, -1.0, -1.0]], dtype=F64)
    mask = torch.ones(1, 4)
    loss, stats = policy_gradient_loss(logprobs, old, adv, mask, clip_eps=0.2)
    # A>0, ratio 1.5: max(−3, −2.4) = −2.4 (clipped); A>0, ratio 0.5: max(−1, −1.6) = −1 (unclipped);
    # A<0, ratio 1.5: max(1.5, 1.2) = 1.5 (unclipped); A<0, ratio 0.5: max(0.5, 0.8) = 0.8 (clipped).
    torch.testing.assert_close(loss, torch.tensor([[-2.4, -1.0, 1.5, 0.8]], dtype=F64))
    (grad,) = torch.autograd.grad(loss.sum(), logprobs)
    # d(−A·ratio)/d log q = −A·ratio where unclipped; 0 where clipped.
    torch.testing.assert_close(grad, torch.tensor([[0.0, -1.0, 1.5, 0.0]], dtype=F64))
    assert stats["clip_frac"].item() == pytest.approx(0.5)
    assert stats["ratio_mean"].item() == pytest.approx(1.0)
    assert stats["ratio_max"].item() == pytest.approx(1.5)

    unclipped, stats = policy_gradient_loss(logprobs, old, adv, mask, clip_eps=None)
    torch.testing.assert_close(unclipped, torch.tensor([[-3.0, -1.0, 1.5, 0.5]], dtype=F64))
    assert stats["clip_frac"].item() == 0.0

    mean, _ = policy_gradient_loss(logprobs, old, adv, torch.tensor([[1, 1, 0, 0]]), reduction="mean")
    assert mean.item() == pytest.approx((-2.4 - 1.0) / 2)
    total, _ = policy_gradient_loss(logprobs, old, adv, mask, reduction="sum")
    assert total.item() == pytest.approx(-2.4 - 1.0 + 1.5 + 0.8)
    with pytest.raises(MinillmError, match="clip_eps"):
        policy_gradient_loss(logprobs, old, adv, mask, clip_eps=0.0)


def test_policy_gradient_loss_importance_weight_scales_ratio() -> None:
    logprobs = torch.zeros(1, 2, dtype=F64, requires_grad=True)  # ratio 1
    adv = torch.tensor([[2.0, -1.0]], dtype=F64)
    w = torch.tensor([[1.1, 0.5]], dtype=F64)
    loss, _ = policy_gradient_loss(
        logprobs, logprobs.detach(), adv, torch.ones(1, 2), clip_eps=None, importance_weight=w
    )
    torch.testing.assert_close(loss, torch.tensor([[-2.2, 0.5]], dtype=F64))
    (grad,) = torch.autograd.grad(loss.sum(), logprobs)
    torch.testing.assert_close(grad, torch.tensor([[-2.2, 0.5]], dtype=F64))  # −A·w·∇log q
    # As in the authors' code the clip acts on ratio·w: at ratio 1, w = 0.5 with A < 0 is already
    # clipped and that token gets no gradient on the first inner epoch.
    loss, stats = policy_gradient_loss(
        logprobs, logprobs.detach(), adv, torch.ones(1, 2), importance_weight=w
    )
    (grad,) = torch.autograd.grad(loss.sum(), logprobs)
    torch.testing.assert_close(grad, torch.tensor([[-2.2, 0.0]], dtype=F64))
    assert stats["clip_frac"].item() == pytest.approx(0.5)


def test_single_step_loss_is_reverse_kl_through_student_only() -> None:
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(2, 3, 4, generator=gen, dtype=F64, requires_grad=True)
    t = torch.randn(2, 3, 4, generator=gen, dtype=F64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    w = torch.tensor([[0.5, 2.0, 9.0], [1.0, 1.0, 3.0]], dtype=F64)
    plain = single_step_loss(s, t, mask)
    torch.testing.assert_close(plain, reverse_kl(s, t, mask, reduction="none"))
    weighted = single_step_loss(s, t, mask, weights=w)
    torch.testing.assert_close(weighted, plain * w * mask)
    mean = single_step_loss(s, t, mask, weights=w, reduction="mean")
    torch.testing.assert_close(mean, (plain * w)[mask.bool()].mean())
    mean.backward()
    assert t.grad is None  # the teacher is detached
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_pg_options_presets_and_validation() -> None:
    code = PGOptions.code()
    assert code == PGOptions()
    assert dataclasses.asdict(code) == {
        "gamma": 0.95,
        "include_current": True,
        "length_norm": "remaining",
        "whiten": True,
        "reward_scale": 0.5,
        "reward_clip": 100.0,
        "clip_eps": 0.2,
        "single_step": True,
        "single_step_weighted": False,
        "ratio_weighted": True,
    }
    assert dataclasses.asdict(PGOptions.paper()) == {
        "gamma": 1.0,
        "include_current": False,
        "length_norm": "summed",
        "whiten": False,
        "reward_scale": 1.0,
        "reward_clip": None,
        "clip_eps": 0.2,
        "single_step": True,
        "single_step_weighted": True,
        "ratio_weighted": True,
    }
    no_single = PGOptions.paper(single_step=False)
    assert no_single.include_current and not no_single.single_step
    with pytest.raises(dataclasses.FrozenInstanceError):
        code.gamma = 1.0  # type: ignore[misc]
    for field, value in [
        ("clip_eps", 0.0),
        ("clip_eps", -0.1),
        ("gamma", 0.0),
        ("gamma", 1.5),
        ("length_norm", "tokens"),
        ("reward_scale", 0.0),
        ("reward_clip", -1.0),
        ("whiten", "yes"),
    ]:
        with pytest.raises(MinillmError, match=f"PGOptions.{field}"):
            PGOptions(**{field: value})


def test_advantages_pipeline_by_hand() -> None:
    r = torch.tensor([[1.0, -300.0, 2.0, 0.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 1, 0]])
    opts = PGOptions(gamma=1.0, include_current=True, length_norm="none", whiten=False, reward_clip=100.0)
    # scale 0.5 → [2, −600, 4] → clip ±100 → [2, −100, 4] → returns [−94, −96, 4].
    torch.testing.assert_close(advantages(r, mask, opts), torch.tensor([[-94.0, -96.0, 4.0, 0.0]], dtype=F64))
    scaled = scale_rewards(r, mask, scale=0.5, clip=100)
    expected = whiten(returns_to_go(scaled, mask, gamma=0.95, length_norm="remaining"), mask)
    torch.testing.assert_close(advantages(r, mask, PGOptions.code()), expected)


# =========================================================================== the enumerable problem

V = 3


@dataclass
class Forward:
    student_logits: torch.Tensor  # (N, T, V), carries the gradient to θ
    teacher_logits: torch.Tensor  # (N, T, V)
    logq: torch.Tensor  # (N, T) log q_θ(y_t | y_<t) of each sequence's tokens
    logp: torch.Tensor  # (N, T) log p(y_t | y_<t)
    mask: torch.Tensor  # (N, T) all ones: fixed horizon, no EOS


class Problem:
    """Every sequence of length T over V tokens, a tabular student θ[prefix] and a teacher table."""

    def __init__(self, horizon: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        n_prefixes = sum(V**t for t in range(horizon))
        self.theta = torch.randn(n_prefixes, V, generator=gen, dtype=F64).requires_grad_()
        self.teacher = 1.5 * torch.randn(n_prefixes, V, generator=gen, dtype=F64)
        self.seqs = torch.tensor(list(itertools.product(range(V), repeat=horizon)))  # (V^T, T)
        # Row of the tables for the prefix y_<t: offset of length-t prefixes + y_<t read in base V.
        self.prefix = torch.zeros_like(self.seqs)
        code = torch.zeros(len(self.seqs), dtype=torch.long)
        offset = 0
        for t in range(horizon):
            self.prefix[:, t] = offset + code
            code = code * V + self.seqs[:, t]
            offset += V**t

    def forward(self) -> Forward:
        s, t = self.theta[self.prefix], self.teacher[self.prefix]
        tokens = self.seqs[..., None]
        logq = s.log_softmax(-1).gather(-1, tokens)[..., 0]
        logp = t.log_softmax(-1).gather(-1, tokens)[..., 0]
        return Forward(s, t, logq, logp, torch.ones_like(logq))

    def exact_gradient(self) -> torch.Tensor:
        """∇θ KL(q_θ ‖ p) over whole sequences, by enumeration."""
        f = self.forward()
        seq_logq, seq_logp = f.logq.sum(1), f.logp.sum(1)
        (grad,) = torch.autograd.grad((seq_logq.exp() * (seq_logq - seq_logp)).sum(), self.theta)
        return grad

    def expected_gradient(
        self, surrogate: Callable[[Forward, torch.Tensor], torch.Tensor], alpha: float | None = None
    ):
        """E[ĝ] of the estimator whose per-sequence surrogate loss is ``surrogate(forward, mix_logprobs)``.

        Sequences are sampled from q_θ (``alpha=None``) or from the token-level mixture
        p̃ = α·p + (1−α)·q_θ; their probabilities weight the surrogates and are detached.
        """
        f = self.forward()
        if alpha is None:
            sample_logprobs = f.logq.detach()
        else:
            sample_logprobs = mix_logprobs(f.logq.detach(), f.logp, alpha)
        prob = sample_logprobs.sum(1).exp()
        assert abs(prob.sum().item() - 1.0) < 1e-12  # a distribution over the enumerated sequences
        (grad,) = torch.autograd.grad((prob * surrogate(f, sample_logprobs)).sum(), self.theta)
        return grad


def rel_err(estimate: torch.Tensor, exact: torch.Tensor) -> float:
    return ((estimate - exact).norm() / exact.norm()).item()


EXACT = 1e-10


# --------------------------------------------------------------------------- surrogates


def plain_pg(options: PGOptions, *, weighted: bool = False, flip_reward: bool = False):
    """ĝ = −Σ_t w_t ∇log q(y_t) A_t with A from the ``advantages`` pipeline (Eq. 2 when exact)."""

    def surrogate(f: Forward, mix: torch.Tensor) -> torch.Tensor:
        old = f.logq.detach()
        rewards = token_rewards(f.logp, old, f.mask)
        if flip_reward:
            rewards = -rewards
        adv = advantages(rewards, f.mask, options)
        w = importance_weights(old, mix, f.mask) if weighted else None
        loss, _ = policy_gradient_loss(
            f.logq, old, adv, f.mask, clip_eps=options.clip_eps, importance_weight=w
        )
        return loss.sum(1)

    return surrogate


def single_step_pg(options: PGOptions, *, weight: str = "none"):
    """Single-step decomposition (Eq. 5): Σ_t c_t KL_t(q‖p)[prefix] − Σ_t ∇log q(y_t) (long-term return).

    ``weight``: "none" (on-policy), "per_token" (the paper's w_t in both terms, Eq. 6), "prefix" (the
    paper's stated ideal Π_{t'≤t} w_t' in both terms), or "per_decision" (single-step term × Π_{t'≤t} w_t',
    each future reward r_k × Π_{t'≤k} w_t' inside the return: exact importance sampling).
    """

    def surrogate(f: Forward, mix: torch.Tensor) -> torch.Tensor:
        old = f.logq.detach()
        rewards = token_rewards(f.logp, old, f.mask)
        w = importance_weights(old, mix, f.mask)
        prefix_w = torch.cumprod(w, dim=1)
        ratio_w = {"none": None, "per_token": w, "prefix": prefix_w, "per_decision": None}[weight]
        single_w = {"none": None, "per_token": w, "prefix": prefix_w, "per_decision": prefix_w}[weight]
        if weight == "per_decision":
            rewards = rewards * prefix_w
        adv = advantages(rewards, f.mask, options)
        long_term, _ = policy_gradient_loss(
            f.logq, old, adv, f.mask, clip_eps=options.clip_eps, importance_weight=ratio_w
        )
        single = single_step_loss(f.student_logits, f.teacher_logits, f.mask, weights=single_w)
        return (long_term + single).sum(1)

    return surrogate


# Policy gradient of Eq. 2: γ = 1, return from t inclusive, no normalisation, whitening or scaling.
PLAIN = PGOptions(
    gamma=1.0,
    include_current=True,
    length_norm="none",
    whiten=False,
    reward_scale=1.0,
    reward_clip=None,
    single_step=False,
)
# The paper's preset without length normalisation (γ = 1, return from t+1, single-step term on).
SINGLE_STEP = dataclasses.replace(PGOptions.paper(), length_norm="none")
# Teacher-mixed runs disable the PPO clip: with w_t ≠ 1 in the ratio it is active even at ratio 1
# (see test_policy_gradient_loss_importance_weight_scales_ratio) and we test the weights alone here.
NO_CLIP = {"clip_eps": None}


# =========================================================================== exact-gradient tests


@pytest.mark.parametrize("horizon", [1, 2, 3])
def test_a_plain_policy_gradient_is_exact(horizon: int) -> None:
    problem = Problem(horizon, seed=0)
    assert rel_err(problem.expected_gradient(plain_pg(PLAIN)), problem.exact_gradient()) < EXACT


@pytest.mark.parametrize("horizon", [1, 2, 3])
def test_b_single_step_decomposition_is_exact(horizon: int) -> None:
    problem = Problem(horizon, seed=1)
    assert rel_err(problem.expected_gradient(single_step_pg(SINGLE_STEP)), problem.exact_gradient()) < EXACT


@pytest.mark.parametrize("alpha", [0.1, 0.2, 0.5])
def test_c_teacher_mixed_per_token_weights_exact_at_horizon_one(alpha: float) -> None:
    problem = Problem(1, seed=2)
    exact = problem.exact_gradient()
    plain = problem.expected_gradient(plain_pg(dataclasses.replace(PLAIN, **NO_CLIP), weighted=True), alpha)
    single = problem.expected_gradient(
        single_step_pg(dataclasses.replace(SINGLE_STEP, **NO_CLIP), weight="per_token"), alpha
    )
    assert rel_err(plain, exact) < EXACT
    assert rel_err(single, exact) < EXACT


def _mixed_errors(weight: str, alphas=(0.1, 0.2, 0.5), horizon: int = 3, seed: int = 1) -> list[float]:
    problem = Problem(horizon, seed=seed)
    exact = problem.exact_gradient()
    options = dataclasses.replace(SINGLE_STEP, **NO_CLIP)
    return [
        rel_err(problem.expected_gradient(single_step_pg(options, weight=weight), a), exact) for a in alphas
    ]


def test_d_teacher_mixed_per_decision_weights_are_exact() -> None:
    assert max(_mixed_errors("per_decision")) < EXACT


def test_d_teacher_mixed_per_token_weights_are_biased_by_order_alpha() -> None:
    # Measured at V = 3, T = 3, seed 1 (float64, deterministic): relative error ‖E[ĝ] − ∇J‖/‖∇J‖ of
    # 0.0866, 0.1723, 0.4303 for α = 0.1, 0.2, 0.5 (about 0.87·α; at T = 2 it is exactly linear in α).
    errors = _mixed_errors("per_token")
    for alpha, err in zip((0.1, 0.2, 0.5), errors, strict=True):
        assert 0.25 * alpha < err < 2.0 * alpha, (alpha, err)
    assert errors[0] < errors[1] < errors[2]
    assert errors == pytest.approx([0.0866, 0.1723, 0.4303], rel=0.02)
    # The weights do reduce the bias: sampling from p̃ with no correction at all is worse at every α
    # (measured 0.1172, 0.2189, 0.4523), so a silently dropped weight fails here.
    unweighted = _mixed_errors("none")
    assert all(e < u for e, u in zip(errors, unweighted, strict=True)), (errors, unweighted)


def test_d_prefix_product_weights_are_still_biased() -> None:
    # The paper's stated exact weight Π_{t'≤t} w_t' fixes the single-step term but not the long-term
    # one: the future rewards inside R_{t+1} are still drawn from p̃. Measured: 0.076, 0.154, 0.394.
    errors = _mixed_errors("prefix")
    assert all(0.25 * a < e < 2.0 * a for a, e in zip((0.1, 0.2, 0.5), errors, strict=True)), errors


def test_minillm_loss_matches_its_pieces() -> None:
    problem = Problem(3, seed=3)
    f = problem.forward()
    mix = mix_logprobs(f.logq.detach(), f.logp, 0.2)
    for options in (PGOptions.code(), PGOptions.paper(), PGOptions.paper(single_step=False)):
        f = problem.forward()
        total, logs = minillm_loss(
            f.student_logits, f.teacher_logits, f.logq, f.logq.detach(), f.logp, mix, f.mask, options
        )
        old = f.logq.detach()
        w = importance_weights(old, mix, f.mask)
        adv = advantages(token_rewards(f.logp, old, f.mask), f.mask, options)
        pg, _ = policy_gradient_loss(f.logq, old, adv, f.mask, importance_weight=w, reduction="mean")
        single = torch.zeros((), dtype=F64)
        if options.single_step:
            weights = w if options.single_step_weighted else None
            single = single_step_loss(
                f.student_logits, f.teacher_logits, f.mask, weights=weights, reduction="mean"
            )
        torch.testing.assert_close(total, pg + single)
        torch.testing.assert_close(logs["pg_loss"], pg.detach())
        torch.testing.assert_close(logs["single_step_loss"], single.detach())
        torch.testing.assert_close(
            logs["reverse_kl"], reverse_kl(f.student_logits, f.teacher_logits).detach()
        )
        torch.testing.assert_close(logs["iw_mean"], w.mean())
        torch.testing.assert_close(logs["iw_max"], w.max())
        torch.testing.assert_close(logs["reward_mean"], token_rewards(f.logp, old, f.mask).mean())
        assert set(logs) >= {"pg_loss", "single_step_loss", "clip_frac", "iw_mean", "iw_max", "reward_mean"}
        assert all(not v.requires_grad and torch.isfinite(v) for v in logs.values())
        (grad,) = torch.autograd.grad(total, problem.theta)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("chunk_size", [1, 2, 5])
def test_minillm_loss_chunked_equals_one_pass(chunk_size: int) -> None:
    """The memory-bounded single-step term gives the same loss, logs and gradient as one pass."""
    problem = Problem(3, seed=4)
    for options in (PGOptions.code(), PGOptions.paper(), PGOptions.paper(single_step=False)):
        results = []
        for chunk in (None, chunk_size):
            f = problem.forward()
            mix = mix_logprobs(f.logq.detach(), f.logp, 0.3)
            total, logs = minillm_loss(
                f.student_logits,
                f.teacher_logits,
                f.logq,
                f.logq.detach(),
                f.logp,
                mix,
                f.mask,
                options,
                chunk_size=chunk,
            )
            (grad,) = torch.autograd.grad(total, problem.theta)
            results.append((total.detach(), grad, logs))
        (plain, g_plain, l_plain), (chunked, g_chunked, l_chunked) = results
        torch.testing.assert_close(chunked, plain, atol=1e-12, rtol=0)
        torch.testing.assert_close(g_chunked, g_plain, atol=1e-12, rtol=0)
        for key in ("single_step_loss", "reverse_kl", "pg_loss"):
            torch.testing.assert_close(l_chunked[key], l_plain[key], atol=1e-12, rtol=0)


# =========================================================================== negative controls


def test_negative_control_dropping_the_importance_weight() -> None:
    problem = Problem(1, seed=2)
    exact = problem.exact_gradient()
    options = dataclasses.replace(PLAIN, **NO_CLIP)
    err = rel_err(problem.expected_gradient(plain_pg(options, weighted=False), alpha=0.2), exact)
    assert err > 1e-2, err
    # ... and at T = 3 the paper's estimator without any weight is worse than with the per-token one.
    assert min(_mixed_errors("none", alphas=(0.2,))) > 1e-2


def test_negative_control_flipped_reward_sign() -> None:
    problem = Problem(3, seed=0)
    est = problem.expected_gradient(plain_pg(PLAIN, flip_reward=True))
    assert rel_err(est, problem.exact_gradient()) == pytest.approx(2.0)  # E[ĝ] = −∇J


def test_negative_control_return_shifted_by_one_step() -> None:
    problem = Problem(3, seed=0)
    shifted = dataclasses.replace(PLAIN, include_current=False)  # R_{t+1} where R_t is needed
    assert rel_err(problem.expected_gradient(plain_pg(shifted)), problem.exact_gradient()) > 1e-2


def test_negative_control_single_step_with_current_reward_counts_step_t_twice() -> None:
    # The authors' code pairs the single-step term with a return that includes r_t (plus γ, length
    # normalisation and whitening): in expectation it counts the current step twice.
    problem = Problem(3, seed=1)
    doubled = dataclasses.replace(SINGLE_STEP, include_current=True)
    assert rel_err(problem.expected_gradient(single_step_pg(doubled)), problem.exact_gradient()) > 1e-2
