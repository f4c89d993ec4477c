"""L_PT (minillm.objectives.pretrain) against values computed by hand in float64."""

from __future__ import annotations

import math

import pytest
import torch

from minillm.objectives.pretrain import pretrain_loss


def _by_hand(student, targets, teacher, kd_ratio):
    """Plain Python over every position: mean −log q(target) and mean Σ_v p log(p/q)."""
    ce, kl, n = 0.0, 0.0, 0
    for b in range(student.shape[0]):
        for t in range(student.shape[1]):
            s = [float(x) for x in student[b, t]]
            zs = math.log(sum(math.exp(x) for x in s))
            ce += zs - s[int(targets[b, t])]
            if teacher is not None:
                p_logits = [float(x) for x in teacher[b, t]]
                zp = math.log(sum(math.exp(x) for x in p_logits))
                for v in range(len(s)):
                    log_p, log_q = p_logits[v] - zp, s[v] - zs
                    kl += math.exp(log_p) * (log_p - log_q)
            n += 1
    ce, kl = ce / n, kl / n
    return ce, kl, (1 - kd_ratio) * ce + kd_ratio * kl


@pytest.mark.parametrize("kd_ratio", [0.0, 0.5, 1.0])
def test_pretrain_loss_matches_the_hand_computation(kd_ratio):
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    teacher = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, 5, (2, 3), generator=gen)
    loss, logs = pretrain_loss(student, targets, teacher if kd_ratio else None, kd_ratio=kd_ratio)
    ce, kl, total = _by_hand(student, targets, teacher if kd_ratio else None, kd_ratio)
    assert float(loss) == pytest.approx(total, rel=1e-6)
    assert float(logs["pt_lm_loss"]) == pytest.approx(ce, rel=1e-6)
    assert float(logs["pt_loss"]) == pytest.approx(total, rel=1e-6)
    if kd_ratio:
        assert float(logs["pt_kd_kl"]) == pytest.approx(kl, rel=1e-6)
    else:
        assert "pt_kd_kl" not in logs


def test_pretrain_loss_gradient_is_the_mixture_of_the_two_gradients():
    """d/dz of (1−r)·CE + r·KL(p‖q) is (1−r)(q − onehot) + r(q − p), per position, over the count."""
    gen = torch.Generator().manual_seed(1)
    student = torch.randn(1, 4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(1, 4, 6, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, 6, (1, 4), generator=gen)
    r = 0.3
    loss, _ = pretrain_loss(student, targets, teacher, kd_ratio=r)
    loss.backward()
    q, p = student.detach().softmax(-1), teacher.softmax(-1)
    onehot = torch.nn.functional.one_hot(targets, 6).double()
    expected = ((1 - r) * (q - onehot) + r * (q - p)) / 4
    torch.testing.assert_close(student.grad, expected)
