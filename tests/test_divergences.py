"""Token-level divergences: pinned values, limits, masking, reductions, dtypes, gradients, chunking."""

from __future__ import annotations

import math

import pytest
import torch

from minillm.errors import MinillmError
from minillm.objectives.divergences import (
    DIVERGENCES,
    ab_divergence,
    akl,
    chunked,
    forward_kl,
    jsd,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    tvd,
)

Q = [0.2, 0.3, 0.5]  # student
P = [0.6, 0.3, 0.1]  # teacher


def _kl(a: list[float], b: list[float]) -> float:
    return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True) if x > 0)


def _logits(probs: list[float], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(probs, dtype=dtype).log().view(1, 1, -1)


def _random_logits(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2


# --------------------------------------------------------------------------- pinned values


def test_reference_values_match_plain_python() -> None:
    # Worked independently: KL(p‖q), KL(q‖p), JSD(½) and TVD for the fixed pair.
    m = [(x + y) / 2 for x, y in zip(P, Q, strict=True)]
    assert _kl(P, Q) == pytest.approx(0.498224, abs=1e-6)
    assert _kl(Q, P) == pytest.approx(0.584996, abs=1e-6)
    assert 0.5 * _kl(P, m) + 0.5 * _kl(Q, m) == pytest.approx(0.125101, abs=1e-6)


@pytest.mark.parametrize(
    ("fn", "kwargs", "expected"),
    [
        (forward_kl, {}, 0.498224),
        (reverse_kl, {}, 0.584996),
        (jsd, {"beta": 0.5}, 0.125101),
        (tvd, {}, 0.4),
        (skew_forward_kl, {"alpha": 0.1}, 0.397169),  # KL(p ‖ 0.1 p + 0.9 q)
        (skew_reverse_kl, {"alpha": 0.1}, 0.430559),  # KL(q ‖ 0.1 q + 0.9 p)
        (ab_divergence, {"alpha": 0.5, "beta": 0.5}, 0.519932),  # 2 Σ (√p − √q)²
        (ab_divergence, {"alpha": 1.0, "beta": 0.0}, 0.498224),  # forward KL
        (ab_divergence, {"alpha": 0.0, "beta": 1.0}, 0.584996),  # reverse KL
        (akl, {"mu": 0.5}, 0.541610),  # head {0}: gaps 0.4 | 0 + 0.4 → ½ FKL + ½ RKL
    ],
)
def test_pinned_values(fn, kwargs, expected) -> None:
    for dtype in (torch.float32, torch.float64):
        value = fn(_logits(Q, dtype), _logits(P, dtype), **kwargs)
        assert value.shape == ()
        assert value.item() == pytest.approx(expected, abs=1e-5)


def test_skew_values_from_plain_python() -> None:
    a = 0.1
    mix_f = [a * x + (1 - a) * y for x, y in zip(P, Q, strict=True)]
    mix_r = [a * y + (1 - a) * x for x, y in zip(P, Q, strict=True)]
    assert skew_forward_kl(_logits(Q), _logits(P), alpha=a).item() == pytest.approx(_kl(P, mix_f), abs=1e-12)
    assert skew_reverse_kl(_logits(Q), _logits(P), alpha=a).item() == pytest.approx(_kl(Q, mix_r), abs=1e-12)


def test_logits_are_normalised_inside() -> None:
    # Adding a per-row constant to the logits changes nothing.
    q, p = _logits(Q) + 3.0, _logits(P) - 7.0
    assert forward_kl(q, p).item() == pytest.approx(0.498224, abs=1e-6)


# --------------------------------------------------------------------------- limits and identities


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_identical_distributions_give_zero(name: str) -> None:
    logits = _random_logits((2, 4, 7), seed=0)
    value = DIVERGENCES[name](logits, logits.clone(), reduction="none")
    assert torch.allclose(value, torch.zeros_like(value), atol=1e-12)


def test_jsd_end_points_are_exact_kls() -> None:
    s, t = _random_logits((2, 3, 5), seed=1), _random_logits((2, 3, 5), seed=2)
    assert torch.equal(jsd(s, t, beta=0.0, reduction="none"), forward_kl(s, t, reduction="none"))
    assert torch.equal(jsd(s, t, beta=1.0, reduction="none"), reverse_kl(s, t, reduction="none"))


def test_jsd_limits_approach_the_kls_continuously() -> None:
    s, t = _random_logits((2, 3, 5), seed=3), _random_logits((2, 3, 5), seed=4)
    fkl, rkl = forward_kl(s, t, reduction="none"), reverse_kl(s, t, reduction="none")
    for eps in (1e-3, 1e-4, 1e-5):
        near_zero = jsd(s, t, beta=eps, reduction="none") / eps
        near_one = jsd(s, t, beta=1 - eps, reduction="none") / eps
        # JSD(β)/β = KL(p‖q) + O(β): the gap shrinks linearly with β.
        assert torch.allclose(near_zero, fkl, rtol=0, atol=50 * eps)
        assert torch.allclose(near_one, rkl, rtol=0, atol=50 * eps)


def test_jsd_symmetric_at_half_and_bounded_by_log2() -> None:
    s, t = _random_logits((2, 3, 5), seed=5), _random_logits((2, 3, 5), seed=6)
    a, b = jsd(s, t, reduction="none"), jsd(t, s, reduction="none")
    assert torch.allclose(a, b, atol=1e-12)
    assert (a <= math.log(2) + 1e-12).all() and (a >= 0).all()


def test_skew_end_points() -> None:
    s, t = _random_logits((2, 3, 5), seed=7), _random_logits((2, 3, 5), seed=8)
    assert torch.equal(skew_forward_kl(s, t, alpha=0.0, reduction="none"), forward_kl(s, t, reduction="none"))
    assert torch.equal(skew_reverse_kl(s, t, alpha=0.0, reduction="none"), reverse_kl(s, t, reduction="none"))
    assert torch.allclose(skew_forward_kl(s, t, alpha=1.0), torch.zeros((), dtype=torch.float64), atol=1e-12)
    assert torch.allclose(skew_reverse_kl(s, t, alpha=1.0), torch.zeros((), dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize(
    ("fn", "kwargs"),
    [(jsd, {"beta": 1.5}), (skew_forward_kl, {"alpha": -0.1}), (skew_reverse_kl, {"alpha": 2})],
)
def test_bad_mixture_parameters_raise(fn, kwargs) -> None:
    with pytest.raises(MinillmError, match="alpha|beta"):
        fn(_logits(Q), _logits(P), **kwargs)


def test_bad_reduction_and_shapes_raise() -> None:
    with pytest.raises(MinillmError, match="reduction"):
        forward_kl(_logits(Q), _logits(P), reduction="avg")
    with pytest.raises(MinillmError, match="same shape"):
        forward_kl(_logits(Q), _logits(P).expand(2, 1, 3))


# --------------------------------------------------------------------------- masking and reductions


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_mask_and_reductions(name: str) -> None:
    fn = DIVERGENCES[name]
    s, t = _random_logits((3, 5, 6), seed=9), _random_logits((3, 5, 6), seed=10)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    full = fn(s, t, reduction="none")
    assert full.shape == (3, 5) and (full >= -1e-12).all()
    per_pos = fn(s, t, mask, reduction="none")
    assert torch.equal(per_pos, torch.where(mask.bool(), full, torch.zeros_like(full)))
    assert fn(s, t, mask.bool(), reduction="none").equal(per_pos)  # bool and 0/1 masks agree
    assert torch.allclose(fn(s, t, mask, reduction="sum"), full[mask.bool()].sum())
    assert torch.allclose(fn(s, t, mask, reduction="mean"), full[mask.bool()].mean())
    assert torch.allclose(fn(s, t), full.mean())  # mask=None → every position
    # Masked-out positions are ignored whatever their values.
    s2 = s.clone()
    s2[0, 3:] = 1e4
    assert torch.equal(fn(s2, t, mask, reduction="none"), per_pos)


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_all_masked_batch_gives_zero_and_zero_gradient(name: str) -> None:
    s = _random_logits((2, 3, 4), seed=11).requires_grad_()
    t = _random_logits((2, 3, 4), seed=12)
    value = DIVERGENCES[name](s, t, torch.zeros(2, 3))
    assert value.item() == 0.0
    value.backward()
    assert torch.equal(s.grad, torch.zeros_like(s))


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_minus_inf_logits_give_no_nan(name: str) -> None:
    # A vocabulary entry masked to −inf in both models (and one more in the teacher only).
    s = _random_logits((2, 3, 5), seed=13, dtype=torch.float32)
    t = _random_logits((2, 3, 5), seed=14, dtype=torch.float32)
    s[..., 0] = float("-inf")
    t[..., 0] = float("-inf")
    t[..., 1] = float("-inf")
    s.requires_grad_()
    value = DIVERGENCES[name](s, t, reduction="none")
    assert not value.isnan().any()
    value.sum().backward()
    assert torch.isfinite(s.grad).all()
    assert torch.equal(s.grad[..., 0], torch.zeros_like(s.grad[..., 0]))
    # The entry masked in both is simply absent: same value as dropping it from the vocabulary.
    # Reverse KL (also AKL's tail term) is +inf here: student mass where the teacher has none.
    if name not in ("reverse_kl", "akl"):
        dropped = DIVERGENCES[name](s.detach()[..., 1:], t[..., 1:], reduction="none")
        assert torch.allclose(value.detach(), dropped, atol=1e-6)


def test_reverse_kl_is_inf_where_teacher_has_no_mass() -> None:
    s = torch.zeros(1, 1, 3)
    t = torch.tensor([[[0.0, 0.0, float("-inf")]]])
    assert reverse_kl(s, t).item() > 1e30  # true value +inf; never NaN
    assert torch.isfinite(forward_kl(s, t))


# --------------------------------------------------------------------------- dtypes and gradients


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_give_float32(name: str, dtype: torch.dtype) -> None:
    s, t = _random_logits((2, 3, 5), seed=15), _random_logits((2, 3, 5), seed=16)
    low = DIVERGENCES[name](s.to(dtype), t.to(dtype))
    assert low.dtype == torch.float32
    ref = DIVERGENCES[name](s.to(dtype).double(), t.to(dtype).double())
    assert low.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    assert DIVERGENCES[name](s, t).dtype == torch.float64


def test_forward_kl_gradient_equals_cross_entropy_gradient() -> None:
    s = _random_logits((2, 4, 6), seed=17).requires_grad_()
    t = _random_logits((2, 4, 6), seed=18)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    (grad_kl,) = torch.autograd.grad(forward_kl(s, t, mask), s)
    p = t.softmax(-1)
    ce = -(p * s.log_softmax(-1)).sum(-1)
    ce = (ce * mask).sum() / mask.sum()
    (grad_ce,) = torch.autograd.grad(ce, s)
    assert torch.allclose(grad_kl, grad_ce, atol=1e-14)
    # ... while the values differ by exactly the teacher entropy.
    entropy = (-(p * p.log()).sum(-1) * mask).sum() / mask.sum()
    assert torch.allclose(ce - entropy, forward_kl(s, t, mask), atol=1e-12)


def test_registry_holds_the_beyond_divergences_with_the_shared_call_shape() -> None:
    assert {"ab_divergence", "akl"} <= set(DIVERGENCES)
    s, t = _random_logits((2, 3, 4), seed=23), _random_logits((2, 3, 4), seed=24)
    for name, fn in DIVERGENCES.items():
        assert fn(s, t, None, reduction="none", chunk_size=2).shape == (2, 3), name


def test_reverse_kl_gradient_matches_finite_differences() -> None:
    s = _random_logits((1, 2, 3), seed=19).requires_grad_()
    t = _random_logits((1, 2, 3), seed=20)
    assert torch.autograd.gradcheck(lambda x: reverse_kl(x, t), (s,))
    assert torch.autograd.gradcheck(lambda x: jsd(x, t, beta=0.3), (s,))


# --------------------------------------------------------------------------- chunked variant


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_chunked_equals_plain(name: str) -> None:
    fn = DIVERGENCES[name]
    s = _random_logits((2, 7, 5), seed=21).requires_grad_()
    t = _random_logits((2, 7, 5), seed=22)
    mask = torch.ones(2, 7)
    mask[0, 5:] = 0
    for reduction in ("mean", "sum", "none"):
        plain = fn(s, t, mask, reduction=reduction)
        (g_plain,) = torch.autograd.grad(plain.sum(), s)
        for size in (3, 100):  # uneven chunks, and one chunk longer than the sequence
            value = chunked(fn, size)(s, t, mask, reduction=reduction)
            (g_chunk,) = torch.autograd.grad(value.sum(), s)
            assert torch.allclose(value, plain, atol=1e-12)
            assert torch.allclose(g_chunk, g_plain, atol=1e-12)
    with torch.no_grad():
        assert torch.allclose(fn(s, t, mask, chunk_size=1), fn(s, t, mask))


def test_bad_chunk_size_raises() -> None:
    with pytest.raises(MinillmError, match="chunk_size"):
        chunked(forward_kl, 0)
    with pytest.raises(MinillmError, match="chunk_size"):
        forward_kl(_logits(Q), _logits(P), chunk_size=0)


def test_word_kd_loss_by_hand_and_chunked() -> None:
    """KD = (1 − r)·CE + r·KL(p‖q) over response tokens only, shifted by one; chunked gives the same."""
    from minillm.objectives.supervised import word_kd_loss

    s = _random_logits((2, 6, 5), seed=31).requires_grad_()
    t = _random_logits((2, 6, 5), seed=32)
    labels = torch.tensor([[-100, -100, 1, 2, 3, 0], [-100, 4, 2, 0, -100, -100]])
    loss, terms = word_kd_loss(s, t, labels, kd_ratio=0.25)
    kls, ces = [], []
    for b, pos in (
        (0, 1),
        (0, 2),
        (0, 3),
        (0, 4),
        (1, 0),
        (1, 1),
        (1, 2),
    ):  # positions whose next label is kept
        q = torch.softmax(s[b, pos].detach(), -1).tolist()
        p = torch.softmax(t[b, pos], -1).tolist()
        kls.append(_kl(p, q))
        ces.append(-math.log(q[int(labels[b, pos + 1])]))
    assert terms["kl"].item() == pytest.approx(sum(kls) / len(kls), abs=1e-12)
    assert terms["ce"].item() == pytest.approx(sum(ces) / len(ces), abs=1e-6)  # CE runs in float32
    (g_plain,) = torch.autograd.grad(loss, s)
    for size in (1, 4):
        chunked_loss, _ = word_kd_loss(s, t, labels, kd_ratio=0.25, chunk_size=size)
        (g_chunk,) = torch.autograd.grad(chunked_loss, s)
        torch.testing.assert_close(chunked_loss, loss, atol=1e-12, rtol=0)
        torch.testing.assert_close(g_chunk, g_plain, atol=1e-12, rtol=0)


def test_temperature_kd_loss_matches_the_hand_computation_and_is_word_kd_at_temperature_one():
    """Hinton KD (objective=hinton_kd) against float64 by hand; τ = 1 equals the paper's KD baseline."""
    import math

    from minillm.objectives.supervised import temperature_kd_loss, word_kd_loss

    gen = torch.Generator().manual_seed(3)
    student = torch.randn(2, 4, 5, generator=gen, dtype=torch.float64)
    teacher = torch.randn(2, 4, 5, generator=gen, dtype=torch.float64)
    labels = torch.tensor([[-100, 2, 4, 1], [-100, -100, 3, -100]])  # prompt and padding at -100
    r, tau = 0.3, 2.0
    loss, logs = temperature_kd_loss(student, labels, lambda: teacher, kd_ratio=r, temperature=tau)
    ce, kl, n = 0.0, 0.0, 0
    for b in range(2):
        for t in range(3):  # position t predicts labels[b, t + 1]
            target = int(labels[b, t + 1])
            if target == -100:
                continue
            s = [float(x) for x in student[b, t]]
            p_ = [float(x) for x in teacher[b, t]]
            ce += math.log(sum(math.exp(x) for x in s)) - s[target]
            zs = math.log(sum(math.exp(x / tau) for x in s))
            zp = math.log(sum(math.exp(x / tau) for x in p_))
            kl += sum(math.exp(p_[v] / tau - zp) * ((p_[v] / tau - zp) - (s[v] / tau - zs)) for v in range(5))
            n += 1
    ce, kl = ce / n, kl / n
    assert float(logs["ce_loss"]) == pytest.approx(ce, rel=1e-6)  # the cross-entropy runs in float32
    assert float(logs["kd_kl"]) == pytest.approx(kl, rel=1e-6)
    assert float(loss) == pytest.approx((1 - r) * ce + r * tau**2 * kl, rel=1e-6)
    at_one, _ = temperature_kd_loss(student, labels, teacher, kd_ratio=r, temperature=1.0)
    word, _ = word_kd_loss(student, teacher, labels, kd_ratio=r)
    torch.testing.assert_close(at_one, word)
