"""Losses of the methods compared with MiniLLM since 2023: ABKD, AKL, teacher top-k, DistiLLM-2, TAID.

References are computed independently in plain Python floats (float64), from the papers' formulas as
written (direct powers, sorted lists, explicit sums), not from the vectorised forms under test.
"""

from __future__ import annotations

import math

import pytest
import torch

from minillm.errors import MinillmError
from minillm.objectives.distillm2 import distillm2_loss, sequence_mean
from minillm.objectives.divergences import (
    DIVERGENCES,
    TOPK_DIVERGENCES,
    ab_divergence,
    akl,
    chunked,
    forward_kl,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    topk_divergence,
    topk_with_tail,
)
from minillm.objectives.taid import TaidState, taid_loss, taid_target_entropy, taid_update

INF = float("inf")
MASK = torch.tensor([[1, 1, 0], [1, 0, 1]])  # (2, 3): padding in the middle and at the end


def _random_logits(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    e = [math.exp(x - top) for x in row]
    return [x / sum(e) for x in e]


def _kl(a: list[float], b: list[float]) -> float:
    return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True) if x > 0)


def _masked_mean(per_position, s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of per_position(q, p) (plain-Python lists) over the masked positions."""
    values = [
        per_position(_softmax(s[b, i].tolist()), _softmax(t[b, i].tolist()))
        for b in range(s.shape[0])
        for i in range(s.shape[1])
        if mask[b, i]
    ]
    return sum(values) / len(values)


def _with_garbage(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked-out positions get absurd logits: they must not change anything."""
    x = x.clone()
    x[~mask.bool()] = 1e4
    return x


# --------------------------------------------------------------------------- ABKD: alpha-beta divergence


def _ab_ref(p: list[float], q: list[float], a: float, b: float) -> float:
    """Cichocki–Cruces–Amari's D_AB(p‖q) and its limits, as printed (p, q > 0)."""
    s = a + b
    pairs = list(zip(p, q, strict=True))
    if a != 0 and b != 0 and s != 0:
        return -sum(x**a * y**b - a / s * x**s - b / s * y**s for x, y in pairs) / (a * b)
    if a != 0 and b == 0:
        return sum(x**a * math.log(x**a / y**a) - x**a + y**a for x, y in pairs) / a**2
    if a == 0 and b != 0:
        return sum(y**b * math.log(y**b / x**b) - y**b + x**b for x, y in pairs) / b**2
    if a != 0:  # a = -b
        return sum(math.log(y**a / x**a) + (y**a / x**a) ** -1 - 1 for x, y in pairs) / a**2
    return 0.5 * sum((math.log(x) - math.log(y)) ** 2 for x, y in pairs)


AB_PARAMS = [
    (0.5, 0.5),
    (0.2, 0.7),
    (1.5, -0.5),
    (-0.3, 1.0),
    (0.7, 0.0),
    (0.0, 0.4),
    (0.6, -0.6),
    (0.0, 0.0),
]


@pytest.mark.parametrize(("alpha", "beta"), AB_PARAMS)
def test_ab_divergence_values_against_plain_python(alpha: float, beta: float) -> None:
    s, t = _random_logits((2, 3, 6), seed=1), _random_logits((2, 3, 6), seed=2)
    expected = _masked_mean(lambda q, p: _ab_ref(p, q, alpha, beta), s, t, MASK)
    value = ab_divergence(_with_garbage(s, MASK), t, MASK, alpha=alpha, beta=beta)
    assert value.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)
    per_position = ab_divergence(s, t, MASK, alpha=alpha, beta=beta, reduction="none")
    assert (per_position[~MASK.bool()] == 0).all() and (per_position[MASK.bool()] > 0).all()
    # float32 math stays close to the float64 reference (the expm1 forms avoid cancellation).
    low = ab_divergence(s.float(), t.float(), MASK, alpha=alpha, beta=beta)
    assert low.dtype == torch.float32 and low.item() == pytest.approx(expected, rel=1e-5)


def test_ab_divergence_reduces_to_the_kls_and_named_members() -> None:
    s, t = _random_logits((2, 4, 7), seed=3), _random_logits((2, 4, 7), seed=4)
    none = {"reduction": "none"}
    torch.testing.assert_close(ab_divergence(s, t, alpha=1.0, beta=0.0, **none), forward_kl(s, t, **none))
    torch.testing.assert_close(ab_divergence(s, t, alpha=0.0, beta=1.0, **none), reverse_kl(s, t, **none))
    p, q = _softmax(t[0, 0].tolist()), _softmax(s[0, 0].tolist())
    # α + β = 1: Amari's α-divergence, 1/(α(1−α)) Σ (α p + (1−α) q − p^α q^{1−α}).
    a = 0.3
    amari = sum(a * x + (1 - a) * y - x**a * y ** (1 - a) for x, y in zip(p, q, strict=True)) / (a * (1 - a))
    assert ab_divergence(s, t, alpha=a, beta=1 - a, **none)[0, 0].item() == pytest.approx(amari, rel=1e-10)
    # α = β = ½: 2 Σ (√p − √q)², four times the squared Hellinger distance.
    hellinger4 = 2 * sum((math.sqrt(x) - math.sqrt(y)) ** 2 for x, y in zip(p, q, strict=True))
    assert ab_divergence(s, t, **none)[0, 0].item() == pytest.approx(hellinger4, rel=1e-10)


@pytest.mark.parametrize(
    ("limit", "near"),
    [
        ((0.7, 0.0), lambda e: (0.7, e)),  # β → 0
        ((0.0, 0.7), lambda e: (e, 0.7)),  # α → 0
        ((0.6, -0.6), lambda e: (0.6, -0.6 + e)),  # α + β → 0
        ((0.0, 0.0), lambda e: (e, e)),  # α, β → 0
    ],
)
def test_ab_divergence_limits_are_continuous(limit, near) -> None:
    s, t = _random_logits((2, 3, 5), seed=5), _random_logits((2, 3, 5), seed=6)
    at_limit = ab_divergence(s, t, alpha=limit[0], beta=limit[1], reduction="none")
    gaps = []
    for eps in (1e-3, 1e-4, 1e-5):
        a, b = near(eps)
        gaps.append((ab_divergence(s, t, alpha=a, beta=b, reduction="none") - at_limit).abs().max().item())
    # The gap closes linearly: each tenfold smaller step gives about a tenfold smaller gap.
    assert gaps[1] < gaps[0] / 5 and gaps[2] < gaps[1] / 5 and gaps[2] < 1e-3 * at_limit.max()


@pytest.mark.parametrize(("alpha", "beta"), AB_PARAMS)
def test_ab_divergence_gradient_matches_finite_differences(alpha: float, beta: float) -> None:
    s = _random_logits((1, 3, 4), seed=7).requires_grad_()
    t = _random_logits((1, 3, 4), seed=8).requires_grad_()
    mask = torch.tensor([[1, 0, 1]])
    assert torch.autograd.gradcheck(lambda x, y: ab_divergence(x, y, mask, alpha=alpha, beta=beta), (s, t))


def test_ab_divergence_zero_mass_entries() -> None:
    # Entry 0 has no mass in either model, entry 1 none in the teacher (p), entry 2 none in the student (q).
    t = torch.tensor([[[-INF, -INF, 0.0, 0.5, -0.3]]], dtype=torch.float64)
    s = torch.tensor([[[-INF, 0.2, -INF, 0.1, 0.4]]], dtype=torch.float64)
    p, q = t.softmax(-1)[0, 0].tolist(), s.softmax(-1)[0, 0].tolist()

    def value(a: float, b: float) -> float:
        results = []
        for dtype in (torch.float64, torch.float32):
            x = s.to(dtype, copy=True).requires_grad_()
            out = ab_divergence(x, t.to(dtype), alpha=a, beta=b)
            out.backward()
            assert torch.isfinite(x.grad).all() and x.grad[..., 0].eq(0).all()
            results.append(out.item())
        assert results[1] == pytest.approx(results[0], rel=1e-6)  # float32: same zero-mass rules
        return results[0]

    # Positive powers: the limits q^{α+β}/(α(α+β)) at p = 0 and p^{α+β}/(β(α+β)) at q = 0.
    a, b = 0.4, 0.8
    expected = _ab_ref(p[3:], q[3:], a, b) + q[1] ** 1.2 / (a * 1.2) + p[2] ** 1.2 / (b * 1.2)
    assert value(a, b) == pytest.approx(expected, rel=1e-10)
    # +inf where a log or a negative power of a zero appears: reverse KL (0, 1) at entry 1 (teacher has no
    # mass), forward KL (1, 0) at entry 2 (student has none), α < 0 at entry 1, and the log forms.
    for a, b in ((0.0, 1.0), (1.0, 0.0), (-0.5, 1.5), (0.6, -0.6), (0.0, 0.0)):
        assert value(a, b) == INF
    # An entry empty on both sides is simply absent from the vocabulary, whatever α and β.
    s_empty = torch.tensor([[[-INF, 0.3, -0.2]]], dtype=torch.float64)
    t_empty = torch.tensor([[[-INF, -0.2, 0.3]]], dtype=torch.float64)
    for a, b in AB_PARAMS:
        full = ab_divergence(s_empty, t_empty, alpha=a, beta=b)
        dropped = ab_divergence(s_empty[..., 1:], t_empty[..., 1:], alpha=a, beta=b)
        assert torch.isfinite(full) and full > 0
        torch.testing.assert_close(full, dropped, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bad", [{"alpha": math.nan}, {"beta": math.inf}, {"alpha": "1"}, {"beta": True}])
def test_ab_divergence_bad_parameters_raise(bad) -> None:
    s = _random_logits((1, 1, 3), seed=9)
    with pytest.raises(MinillmError, match=f"ab_divergence {next(iter(bad))}"):
        ab_divergence(s, s, **bad)


# --------------------------------------------------------------------------- AKL: adaptive KL


def _akl_ref(p: list[float], q: list[float], mu: float) -> tuple[float, float]:
    """(AKL, head weight): head = smallest set of top teacher tokens whose mass reaches mu."""
    order = sorted(range(len(p)), key=lambda i: (-p[i], i))
    head, mass = set(), 0.0
    for i in order:
        if mass >= mu:
            break
        head.add(i)
        mass += p[i]
    g_head = sum(abs(p[i] - q[i]) for i in head)
    g_tail = sum(abs(p[i] - q[i]) for i in range(len(p)) if i not in head)
    w = g_head / (g_head + g_tail) if g_head + g_tail > 0 else 0.5
    return w * _kl(p, q) + (1 - w) * _kl(q, p), w


@pytest.mark.parametrize("mu", [0.5, 0.2, 0.9])
def test_akl_values_against_plain_python(mu: float) -> None:
    s, t = _random_logits((2, 3, 8), seed=10), _random_logits((2, 3, 8), seed=11)
    expected = _masked_mean(lambda q, p: _akl_ref(p, q, mu)[0], s, t, MASK)
    assert akl(_with_garbage(s, MASK), t, MASK, mu=mu).item() == pytest.approx(expected, rel=1e-12)
    full = akl(s, t, mu=mu, reduction="none")
    fkl, rkl = forward_kl(s, t, reduction="none"), reverse_kl(s, t, reduction="none")
    assert ((full >= torch.minimum(fkl, rkl) - 1e-12) & (full <= torch.maximum(fkl, rkl) + 1e-12)).all()


@pytest.mark.parametrize(
    ("mu", "head_weight"),
    [(0.45, 0.5), (0.55, 0.75), (0.85, 1.0)],  # head {0}, {0, 1} (token 1 crosses mu), {0, 1, 2}
)
def test_akl_head_takes_the_token_that_reaches_mu(mu: float, head_weight: float) -> None:
    p, q = [0.5, 0.3, 0.2], [0.3, 0.4, 0.3]  # |p − q| = 0.2, 0.1, 0.1
    t = torch.tensor(p, dtype=torch.float64).log().view(1, 1, 3)
    s = torch.tensor(q, dtype=torch.float64).log().view(1, 1, 3)
    expected = head_weight * _kl(p, q) + (1 - head_weight) * _kl(q, p)
    assert akl(s, t, mu=mu).item() == pytest.approx(expected, rel=1e-12)


def test_akl_ties_are_ranked_by_vocabulary_index() -> None:
    t = torch.zeros(1, 1, 4, dtype=torch.float64)  # p = ¼ each; the head at mu = ½ is tokens {0, 1}
    q = [0.1, 0.2, 0.2, 0.5]  # |p − q| = 0.15, 0.05, 0.05, 0.25 → weight 0.2 / 0.5
    s = torch.tensor(q, dtype=torch.float64).log().view(1, 1, 4)
    p = [0.25] * 4
    assert akl(s, t).item() == pytest.approx(0.4 * _kl(p, q) + 0.6 * _kl(q, p), rel=1e-12)


def test_akl_weights_carry_no_gradient() -> None:
    s = _random_logits((1, 2, 5), seed=12).requires_grad_()
    t = _random_logits((1, 2, 5), seed=13)
    weights = torch.tensor(
        [[_akl_ref(_softmax(t[0, i].tolist()), _softmax(s[0, i].tolist()), 0.5)[1] for i in range(2)]],
        dtype=torch.float64,
    )

    def fixed_mix(x: torch.Tensor) -> torch.Tensor:
        log_q, log_p = x.log_softmax(-1), t.log_softmax(-1)
        fkl = (log_p.exp() * (log_p - log_q)).sum(-1)
        rkl = (log_q.exp() * (log_q - log_p)).sum(-1)
        return (weights * fkl + (1 - weights) * rkl).mean()

    assert torch.autograd.gradcheck(fixed_mix, (s,))  # the frozen-weight mix against finite differences
    (g_akl,) = torch.autograd.grad(akl(s, t), s)
    (g_fixed,) = torch.autograd.grad(fixed_mix(s), s)
    torch.testing.assert_close(g_akl, g_fixed, rtol=0, atol=1e-12)
    # ... which is not the derivative of AKL itself, whose weights move with the student.
    assert not torch.autograd.gradcheck(lambda x: akl(x, t), (s,), raise_exception=False)


@pytest.mark.parametrize("mu", [0.0, 1.0, -0.1, "0.5"])
def test_akl_bad_mu_raises(mu) -> None:
    s = _random_logits((1, 1, 3), seed=14)
    with pytest.raises(MinillmError, match="akl mu"):
        akl(s, s, mu=mu)


# --------------------------------------------------------------------------- teacher top-k with a tail bucket


def _jsd(p: list[float], q: list[float], beta: float) -> float:
    m = [beta * x + (1 - beta) * y for x, y in zip(p, q, strict=True)]
    return beta * _kl(p, m) + (1 - beta) * _kl(q, m)


BUCKET_REFS = {  # (q, p) → divergence, on any distributions; parameters as passed below
    "forward_kl": lambda q, p: _kl(p, q),
    "reverse_kl": lambda q, p: _kl(q, p),
    "jsd": lambda q, p: _jsd(p, q, 0.3),
    "skew_forward_kl": lambda q, p: _kl(p, [0.2 * x + 0.8 * y for x, y in zip(p, q, strict=True)]),
    "skew_reverse_kl": lambda q, p: _kl(q, [0.2 * y + 0.8 * x for x, y in zip(p, q, strict=True)]),
    "tvd": lambda q, p: 0.5 * sum(abs(x - y) for x, y in zip(p, q, strict=True)),
    "ab_divergence": lambda q, p: _ab_ref(p, q, 0.3, 0.6),
}
BUCKET_PARAMS = {
    "jsd": {"beta": 0.3},
    "skew_forward_kl": {"alpha": 0.2},
    "skew_reverse_kl": {"alpha": 0.2},
    "ab_divergence": {"alpha": 0.3, "beta": 0.6},
}


def _buckets(dist: list[float], top: list[int]) -> list[float]:
    return [dist[i] for i in top] + [sum(x for i, x in enumerate(dist) if i not in top)]


def test_topk_with_tail_against_plain_python() -> None:
    t = _random_logits((2, 3, 9), seed=15)
    top = topk_with_tail(t, 4)
    assert top.indices.shape == top.log_probs.shape == (2, 3, 4) and top.log_tail.shape == (2, 3)
    for b in range(2):
        for i in range(3):
            p = _softmax(t[b, i].tolist())
            order = sorted(range(9), key=lambda v: -p[v])[:4]
            assert top.indices[b, i].tolist() == order
            assert top.log_probs[b, i].tolist() == pytest.approx([math.log(p[v]) for v in order], rel=1e-12)
            assert top.log_tail[b, i].item() == pytest.approx(math.log(_buckets(p, order)[-1]), rel=1e-12)


def test_topk_tail_keeps_its_precision_when_tiny() -> None:
    # Tail mass 2e^{-40} / (2 + 2e^{-40}): 1 − Σ top-k would round to 0 (log −inf) in float32.
    t = torch.tensor([[[0.0, 0.0, -40.0, -40.0]]])
    top = topk_with_tail(t, 2)
    assert top.log_tail.dtype == torch.float32
    assert top.log_tail.item() == pytest.approx(-40.0, abs=1e-5)


@pytest.mark.parametrize("name", sorted(TOPK_DIVERGENCES))
def test_topk_divergence_against_plain_python(name: str) -> None:
    s, t = _random_logits((2, 3, 7), seed=16), _random_logits((2, 3, 7), seed=17)
    k = 3

    def per_position(q: list[float], p: list[float]) -> float:
        top = sorted(range(len(p)), key=lambda v: -p[v])[:k]
        return BUCKET_REFS[name](_buckets(q, top), _buckets(p, top))

    expected = _masked_mean(per_position, s, t, MASK)
    params = BUCKET_PARAMS.get(name, {})
    value = topk_divergence(_with_garbage(s, MASK), topk_with_tail(t, k), MASK, divergence=name, **params)
    assert value.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("name", sorted(TOPK_DIVERGENCES))
def test_topk_with_k_equal_to_vocabulary_is_the_full_divergence(name: str) -> None:
    s = _random_logits((2, 5, 6), seed=18).requires_grad_()
    t = _random_logits((2, 5, 6), seed=19)
    t[0, 0, 2] = -INF  # a vocabulary entry the teacher never gives (and a zero tail bucket everywhere)
    mask = torch.tensor([[1, 1, 1, 0, 1], [0, 1, 1, 1, 1]])
    params = BUCKET_PARAMS.get(name, {})
    full = DIVERGENCES[name](s, t, mask, reduction="none", **params)
    (g_full,) = torch.autograd.grad(full.sum(), s)
    for chunk_size in (None, 2):
        value = topk_divergence(
            s, topk_with_tail(t, 6), mask, divergence=name, reduction="none", chunk_size=chunk_size, **params
        )
        (g_value,) = torch.autograd.grad(value.sum(), s)
        assert torch.isfinite(g_value).all()
        torch.testing.assert_close(value, full, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g_value, g_full, rtol=1e-10, atol=1e-12)


def test_topk_coarsening_never_exceeds_the_full_f_divergence() -> None:
    s, t = _random_logits((2, 4, 10), seed=20), _random_logits((2, 4, 10), seed=21)
    for name in ("forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "tvd"):
        full = DIVERGENCES[name](s, t, reduction="none")
        for k in (1, 4, 9):
            coarse = topk_divergence(s, topk_with_tail(t, k), divergence=name, reduction="none")
            assert (coarse <= full + 1e-12).all() and (coarse >= -1e-12).all()


def test_topk_divergence_masks_chunks_and_half_precision() -> None:
    s = _random_logits((2, 7, 8), seed=22).requires_grad_()
    t = _random_logits((2, 7, 8), seed=23)
    top = topk_with_tail(t, 3)
    # All masked: 0, never NaN, zero gradient.
    zero = topk_divergence(s, top, torch.zeros(2, 7), divergence="jsd")
    zero.backward()
    assert zero.item() == 0.0 and torch.equal(s.grad, torch.zeros_like(s))
    mask = torch.ones(2, 7)
    mask[1, 4:] = 0
    for reduction in ("mean", "sum", "none"):
        plain = topk_divergence(s, top, mask, divergence="reverse_kl", reduction=reduction)
        (g_plain,) = torch.autograd.grad(plain.sum(), s)
        value = chunked(topk_divergence, 3)(s, top, mask, divergence="reverse_kl", reduction=reduction)
        (g_chunk,) = torch.autograd.grad(value.sum(), s)
        torch.testing.assert_close(value, plain, rtol=0, atol=1e-12)
        torch.testing.assert_close(g_chunk, g_plain, rtol=0, atol=1e-12)
    low = topk_divergence(s.detach().bfloat16(), topk_with_tail(t.bfloat16(), 3), mask)
    ref = topk_divergence(s.detach().bfloat16().double(), topk_with_tail(t.bfloat16().double(), 3), mask)
    assert low.dtype == torch.float32 and low.item() == pytest.approx(ref.item(), rel=1e-5)


def test_topk_bad_inputs_raise() -> None:
    s, t = _random_logits((1, 2, 5), seed=24), _random_logits((1, 2, 5), seed=25)
    for k in (0, 6, 2.0):
        with pytest.raises(MinillmError, match="top-k k"):
            topk_with_tail(t, k)
    top = topk_with_tail(t, 2)
    with pytest.raises(MinillmError, match="topk divergence must be one of"):
        topk_divergence(s, top, divergence="akl")
    with pytest.raises(MinillmError, match="takes parameters"):
        topk_divergence(s, top, divergence="forward_kl", beta=0.5)
    with pytest.raises(MinillmError, match="jsd beta"):
        topk_divergence(s, top, divergence="jsd", beta=2.0)
    with pytest.raises(MinillmError, match="same B, T"):
        topk_divergence(s[:, :1], top)
    with pytest.raises(MinillmError, match="k <= V"):
        topk_divergence(s[..., :2], topk_with_tail(t, 3))
    with pytest.raises(MinillmError, match="indices must lie"):  # a cache from a larger vocabulary
        topk_divergence(s, top._replace(indices=top.indices + 5))
    with pytest.raises(MinillmError, match="reduction"):
        topk_divergence(s, top, reduction="avg")


# --------------------------------------------------------------------------- DistiLLM-2


def test_distillm2_loss_against_plain_python() -> None:
    on_teacher = (_random_logits((2, 3, 5), seed=26), _random_logits((2, 3, 5), seed=27), MASK)
    mask_s = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1], [1, 0, 0, 0]])
    on_student = (_random_logits((3, 4, 5), seed=28), _random_logits((3, 4, 5), seed=29), mask_s)
    a = 0.25
    skl = _masked_mean(
        lambda q, p: _kl(p, [a * x + (1 - a) * y for x, y in zip(p, q, strict=True)]), *on_teacher
    )
    srkl = _masked_mean(
        lambda q, p: _kl(q, [a * y + (1 - a) * x for x, y in zip(p, q, strict=True)]), *on_student
    )
    s1 = _with_garbage(on_teacher[0], MASK).requires_grad_()
    s2 = _with_garbage(on_student[0], mask_s).requires_grad_()
    loss, logs = distillm2_loss((s1, on_teacher[1], MASK), (s2, on_student[1], mask_s), alpha=a)
    assert loss.item() == pytest.approx(skl + srkl, rel=1e-12)
    assert logs["skew_forward_kl"].item() == pytest.approx(skl, rel=1e-12)
    assert logs["skew_reverse_kl"].item() == pytest.approx(srkl, rel=1e-12)
    assert not any(v.requires_grad for v in logs.values())
    g1, g2 = torch.autograd.grad(loss, (s1, s2))
    torch.testing.assert_close(
        g1, torch.autograd.grad(skew_forward_kl(s1, on_teacher[1], MASK, alpha=a), s1)[0]
    )
    torch.testing.assert_close(
        g2, torch.autograd.grad(skew_reverse_kl(s2, on_student[1], mask_s, alpha=a), s2)[0]
    )
    chunked_loss, _ = distillm2_loss(
        (s1, on_teacher[1], MASK), (s2, on_student[1], mask_s), alpha=a, chunk_size=2
    )
    torch.testing.assert_close(chunked_loss, loss, rtol=0, atol=1e-12)


def test_distillm2_empty_student_set_gives_the_teacher_term_only() -> None:
    s1 = _random_logits((1, 3, 4), seed=30).requires_grad_()
    s2 = _random_logits((1, 2, 4), seed=31).requires_grad_()
    t1, t2 = _random_logits((1, 3, 4), seed=32), _random_logits((1, 2, 4), seed=33)
    loss, logs = distillm2_loss((s1, t1, None), (s2, t2, torch.zeros(1, 2)))
    assert logs["skew_reverse_kl"].item() == 0.0
    assert loss.item() == pytest.approx(skew_forward_kl(s1, t1, alpha=0.1).item(), rel=1e-12)
    g1, g2 = torch.autograd.grad(loss, (s1, s2))
    assert torch.isfinite(g1).all() and g1.abs().sum() > 0 and torch.equal(g2, torch.zeros_like(g2))


def test_distillm2_bad_inputs_raise() -> None:
    s = _random_logits((1, 2, 3), seed=34)
    with pytest.raises(MinillmError, match="skew_reverse_kl batch"):
        distillm2_loss((s, s, None), (s, s))
    with pytest.raises(MinillmError, match="alpha"):
        distillm2_loss((s, s, None), (s, s, None), alpha=1.5)


RAGGED = torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0]])  # 3, 0 and 1 positions; a gap inside


@pytest.mark.parametrize("alpha", [0.2, 0.3])
def test_skew_divergences_gradients_match_finite_differences(alpha: float) -> None:
    """Both skew KLs carry the student's gradient through the mixture too (the released DistiLLM-2 code
    detaches it in the reverse term; ours does not): autograd against float64 finite differences."""
    s = _random_logits((2, 3, 4), seed=44).requires_grad_()
    t = _random_logits((2, 3, 4), seed=45).requires_grad_()
    for fn in (skew_forward_kl, skew_reverse_kl):
        assert torch.autograd.gradcheck(lambda x, y, f=fn: f(x, y, MASK, alpha=alpha), (s, t))


def test_skew_reverse_kl_gradient_in_closed_form() -> None:
    """d/ds KL(q ‖ m), m = α q + (1 − α) p, q = softmax(s): with g_v = log(q_v/m_v) + 1 − α q_v/m_v,
    the gradient is q ⊙ (g − Σ_v q_v g_v). Detaching q inside m drops the −α q/m term."""
    a = 0.3
    s = _random_logits((2, 3, 5), seed=46).requires_grad_()
    t = _random_logits((2, 3, 5), seed=47)
    (grad,) = torch.autograd.grad(skew_reverse_kl(s, t, MASK, alpha=a, reduction="sum"), s)
    for b in range(2):
        for i in range(3):
            q, p = _softmax(s[b, i].tolist()), _softmax(t[b, i].tolist())
            m = [a * x + (1 - a) * y for x, y in zip(q, p, strict=True)]
            g = [math.log(x / y) + 1 - a * x / y for x, y in zip(q, m, strict=True)]
            mean_g = sum(x * y for x, y in zip(q, g, strict=True))
            expected = [x * (y - mean_g) * float(MASK[b, i]) for x, y in zip(q, g, strict=True)]
            assert grad[b, i].tolist() == pytest.approx(expected, rel=1e-10, abs=1e-13)


def test_distillm2_gradient_matches_finite_differences() -> None:
    """The whole loss, both sides and both normalisations, on ragged masks, at α = 0.3."""
    s1, t1 = _random_logits((2, 3, 4), seed=48).requires_grad_(), _random_logits((2, 3, 4), seed=49)
    s2, t2 = _random_logits((3, 4, 4), seed=50).requires_grad_(), _random_logits((3, 4, 4), seed=51)
    for normalize in ("token", "sequence"):

        def loss(x1, x2, normalize=normalize):
            return distillm2_loss((x1, t1, MASK), (x2, t2, RAGGED), alpha=0.3, normalize=normalize)[0]

        assert torch.autograd.gradcheck(loss, (s1, s2))


def test_distillm2_sequence_normalisation_against_plain_python() -> None:
    """normalize=sequence: each response's mean over its own tokens, then the mean over the responses that
    have any (the released code's average_log_prob=True); a response with none is left out."""
    on_teacher = (_random_logits((2, 3, 5), seed=52), _random_logits((2, 3, 5), seed=53), MASK)
    on_student = (_random_logits((3, 4, 5), seed=54), _random_logits((3, 4, 5), seed=55), RAGGED)
    a = 0.2

    def per_sequence_mean(per_position, s, t, mask) -> float:
        means = []
        for b in range(s.shape[0]):
            values = [
                per_position(_softmax(s[b, i].tolist()), _softmax(t[b, i].tolist()))
                for i in range(s.shape[1])
                if mask[b, i]
            ]
            if values:
                means.append(sum(values) / len(values))
        return sum(means) / len(means)

    skl = per_sequence_mean(
        lambda q, p: _kl(p, [a * x + (1 - a) * y for x, y in zip(p, q, strict=True)]), *on_teacher
    )
    srkl = per_sequence_mean(
        lambda q, p: _kl(q, [a * y + (1 - a) * x for x, y in zip(p, q, strict=True)]), *on_student
    )
    teacher_side = (_with_garbage(on_teacher[0], MASK), on_teacher[1], MASK)
    student_side = (_with_garbage(on_student[0], RAGGED), on_student[1], RAGGED)
    loss, logs = distillm2_loss(teacher_side, student_side, alpha=a, normalize="sequence")
    assert logs["skew_forward_kl"].item() == pytest.approx(skl, rel=1e-12)
    assert logs["skew_reverse_kl"].item() == pytest.approx(srkl, rel=1e-12)
    assert loss.item() == pytest.approx(skl + srkl, rel=1e-12)
    # ... which differs from the per-token mean on these ragged masks (3 : 1 tokens on the student side)
    token, _ = distillm2_loss(teacher_side, student_side, alpha=a, normalize="token")
    assert abs(token.item() - loss.item()) > 1e-3
    chunked_loss, _ = distillm2_loss(teacher_side, student_side, alpha=a, normalize="sequence", chunk_size=2)
    torch.testing.assert_close(chunked_loss, loss, rtol=0, atol=1e-12)


def test_sequence_mean_by_hand_and_when_empty() -> None:
    values = torch.tensor([[1.0, 9.0, 3.0], [5.0, 7.0, 0.0], [4.0, 4.0, 4.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 0]])
    assert sequence_mean(values, mask).item() == pytest.approx((2.0 + 4.0) / 2)
    assert sequence_mean(values, None).item() == pytest.approx((13 / 3 + 4.0 + 4.0) / 3)
    empty = sequence_mean(values.requires_grad_(), torch.zeros(3, 3))
    (grad,) = torch.autograd.grad(empty, values)
    assert empty.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


def test_distillm2_bad_normalize_raises() -> None:
    s = _random_logits((1, 2, 3), seed=56)
    with pytest.raises(
        MinillmError, match=r"distillm2 normalize='mean'; choose one of \['token', 'sequence'\]"
    ):
        distillm2_loss((s, s, None), (s, s, None), normalize="mean")


# --------------------------------------------------------------------------- TAID


def _taid_target(s_row: list[float], t_row: list[float], t: float) -> list[float]:
    """The paper's p_t from the raw logits: softmax((1 − t)·logit_q + t·logit_p)."""
    return _softmax([(1 - t) * x + t * y for x, y in zip(s_row, t_row, strict=True)])


@pytest.mark.parametrize("t", [0.3, 0.8])
def test_taid_loss_against_plain_python(t: float) -> None:
    s, te = _random_logits((2, 3, 6), seed=35) + 5.0, _random_logits((2, 3, 6), seed=36) - 3.0
    expected = []
    for b in range(2):
        for i in range(3):
            if MASK[b, i]:
                expected.append(
                    _kl(_taid_target(s[b, i].tolist(), te[b, i].tolist(), t), _softmax(s[b, i].tolist()))
                )
    value = taid_loss(_with_garbage(s, MASK), te, MASK, t=t)
    assert value.item() == pytest.approx(sum(expected) / len(expected), rel=1e-12)


def test_taid_gradient_treats_the_target_as_a_constant() -> None:
    s = _random_logits((2, 3, 5), seed=37).requires_grad_()
    te = _random_logits((2, 3, 5), seed=38)
    t = 0.6
    (grad,) = torch.autograd.grad(taid_loss(s, te, MASK, t=t), s)
    # d/ds KL(p_t ‖ softmax(s)) with p_t fixed is q − p_t per position; the mean divides by the count.
    target = torch.tensor(
        [[_taid_target(s[b, i].tolist(), te[b, i].tolist(), t) for i in range(3)] for b in range(2)],
        dtype=torch.float64,
    )
    expected = (s.detach().softmax(-1) - target) * MASK.unsqueeze(-1) / MASK.sum()
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)


def test_taid_end_points_chunks_and_masks() -> None:
    s = _random_logits((2, 5, 6), seed=39).requires_grad_()
    te = _random_logits((2, 5, 6), seed=40)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert torch.equal(
        taid_loss(s, te, mask, t=1.0, reduction="none"), forward_kl(s, te, mask, reduction="none")
    )
    at_zero = taid_loss(s, te, mask, t=0.0)
    (g_zero,) = torch.autograd.grad(at_zero, s)
    assert at_zero.item() == 0.0 and g_zero.abs().max() < 1e-15
    plain = taid_loss(s, te, mask, t=0.4)
    (g_plain,) = torch.autograd.grad(plain, s)
    value = taid_loss(s, te, mask, t=0.4, chunk_size=2)
    (g_chunk,) = torch.autograd.grad(value, s)
    torch.testing.assert_close(value, plain, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_chunk, g_plain, rtol=0, atol=1e-12)
    all_masked = taid_loss(s, te, torch.zeros(2, 5), t=0.4)
    (g_masked,) = torch.autograd.grad(all_masked, s)
    assert all_masked.item() == 0.0 and torch.equal(g_masked, torch.zeros_like(s))


def test_taid_minus_inf_logits_give_no_nan() -> None:
    s = _random_logits((1, 2, 5), seed=41, dtype=torch.float32)
    te = _random_logits((1, 2, 5), seed=42, dtype=torch.float32)
    s[..., 0] = te[..., 0] = -INF  # masked in both
    te[..., 1] = -INF  # masked in the teacher only: p_t has no mass there either (logit mix)
    s.requires_grad_()
    value = taid_loss(s, te, t=0.5, reduction="none")
    assert torch.isfinite(value).all()
    value.sum().backward()
    assert torch.isfinite(s.grad).all() and torch.equal(s.grad[..., 0], torch.zeros_like(s.grad[..., 0]))
    dropped = taid_loss(s.detach()[..., 1:], te[..., 1:], t=0.5, reduction="none")
    torch.testing.assert_close(value.detach(), dropped, rtol=1e-6, atol=1e-6)


def test_taid_target_entropy_and_the_cross_entropy_against_plain_python() -> None:
    """H(p_t), and KL(p_t ‖ q) + H(p_t) = −Σ p_t log q (the reference's schedule signal), at t = 0.7."""
    s, te = _random_logits((2, 3, 6), seed=57), _random_logits((2, 3, 6), seed=58)
    t = 0.7
    entropies, cross_entropies = [], []
    for b in range(2):
        for i in range(3):
            if MASK[b, i]:
                target, q = _taid_target(s[b, i].tolist(), te[b, i].tolist(), t), _softmax(s[b, i].tolist())
                entropies.append(-sum(x * math.log(x) for x in target))
                cross_entropies.append(-sum(x * math.log(y) for x, y in zip(target, q, strict=True)))
    x = _with_garbage(s, MASK).requires_grad_()
    entropy = taid_target_entropy(x, te, MASK, t=t)
    assert entropy.item() == pytest.approx(sum(entropies) / len(entropies), rel=1e-12)
    assert not entropy.requires_grad  # a logged signal, never a loss term
    cross_entropy = taid_loss(x, te, MASK, t=t) + entropy
    assert cross_entropy.item() == pytest.approx(sum(cross_entropies) / len(cross_entropies), rel=1e-12)
    chunked_entropy = taid_target_entropy(x, te, MASK, t=t, chunk_size=2)
    torch.testing.assert_close(chunked_entropy, entropy, rtol=0, atol=1e-12)
    # t = 1: the teacher's entropy; t = 0: the student's own.
    p_rows = [_softmax(te[0, 0].tolist()), _softmax(s[0, 0].tolist())]
    for t_end, row in zip((1.0, 0.0), p_rows, strict=True):
        value = taid_target_entropy(s[:1, :1], te[:1, :1], t=t_end).item()
        assert value == pytest.approx(-sum(x * math.log(x) for x in row), rel=1e-12)


def test_taid_update_by_hand() -> None:
    """The reference's update_t: the first call only stores the signal; then momentum, floor n / N."""
    kw = {"total_steps": 10, "t_start": 0.4, "t_end": 1.0, "alpha": 0.5, "beta": 0.3, "eps": 1e-12}
    sig = lambda m: 1 / (1 + math.exp(-m))  # noqa: E731
    # Step at n = 0: no previous signal: stored, t and m unchanged (not even the floor moves t).
    state = taid_update(TaidState(0.4), 2.0, step=0, **kw)
    assert state == (0.4, 0.0, 2.0)
    # n = 1: the signal halves, δ = ½, m = 0.7·½ = 0.35: t = max(0.46 floor, 0.4 + 0.5·σ(0.35)·0.6).
    state = taid_update(state, 1.0, step=1, **kw)
    assert state.momentum == pytest.approx(0.35) and state.prev_loss == 1.0
    t1 = 0.4 + 0.5 * sig(0.35) * 0.6
    assert state.t == pytest.approx(t1)
    # n = 2: the signal rises by half, δ = −½, m = 0.3·0.35 − 0.35 = −0.245: a smaller step than after a fall.
    state = taid_update(state, 1.5, step=2, **kw)
    assert state.momentum == pytest.approx(-0.245)
    assert state.t == pytest.approx(t1 + 0.5 * sig(-0.245) * (1 - t1))
    assert state.t - t1 < 0.5 * sig(0.35) * (1 - t1)


def test_taid_update_follows_the_linear_floor_and_stops_at_t_end() -> None:
    # α = 0: t is the floor t_start + (t_end − t_start)·n / N after the step at n, from the second step on.
    state, ts = TaidState(0.2), []
    for n in range(5):
        state = taid_update(state, 1.0, step=n, total_steps=5, t_start=0.2, t_end=0.9, alpha=0.0)
        ts.append(state.t)
    assert ts == pytest.approx([0.2, 0.34, 0.48, 0.62, 0.76])
    assert taid_update(
        state, 1.0, step=5, total_steps=5, t_start=0.2, t_end=0.9, alpha=0.0
    ).t == pytest.approx(0.9)
    fast = TaidState(0.95, 0.0, 1.0)
    assert taid_update(fast, 1.0, step=1, total_steps=5, t_start=0.2, t_end=0.9, alpha=0.5).t == 0.9
    # A signal that explodes gives a momentum far below −709 (exp overflow) and changes nothing but m.
    jump = taid_update(TaidState(0.5, 0.0, 1e-300), 1e10, step=1, total_steps=5, beta=0.0)
    assert jump.momentum < -1e17 and jump.t == pytest.approx(0.52)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"t_start": 0.8, "t_end": 0.5}, "t_start"),
        ({"beta": 1.0}, "beta"),
        ({"alpha": -1.0}, "alpha"),
        ({"step": -1}, "step"),
        ({"step": 11}, "step"),
        ({"total_steps": 0}, "total_steps"),
        ({"loss": math.nan}, "loss"),
    ],
)
def test_taid_update_bad_inputs_raise(kwargs, match) -> None:
    args = {"loss": 1.0, "step": 1, "total_steps": 10, **kwargs}
    with pytest.raises(MinillmError, match=f"taid {match}"):
        taid_update(TaidState(0.4), args.pop("loss"), **args)


@pytest.mark.parametrize("t", [-0.1, 1.5])
def test_taid_loss_bad_t_raises(t: float) -> None:
    s = _random_logits((1, 1, 3), seed=43)
    with pytest.raises(MinillmError, match="taid t must"):
        taid_loss(s, s, t=t)
