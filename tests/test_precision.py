"""trainer.precision=auto: resolved before Lightning sees it, by capability and a measurement; an explicit
value always wins; the measurement leaves the student and the run's RNG as they were."""

from __future__ import annotations

import logging

import pytest
import torch
from omegaconf import OmegaConf

from minillm.models.tiny import build_model
from minillm.training import precision
from minillm.training.precision import resolve_precision

ARCH = dict(
    model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
)


def config(value: str, accelerator: str = "cpu"):
    return OmegaConf.create({"trainer": {"accelerator": accelerator, "precision": value}})


def no_measuring(*args):
    raise AssertionError("measured although the precision was explicit or bf16 unsupported")


@pytest.mark.parametrize("value", ["32-true", "bf16-mixed", "16-mixed"])
def test_an_explicit_precision_wins_without_measuring(monkeypatch, value):
    monkeypatch.setattr(precision, "measure", no_measuring)
    cfg = config(value)
    assert resolve_precision(cfg, None) is None
    assert cfg.trainer.precision == value


def test_auto_without_native_bf16_is_fp32_without_measuring(monkeypatch, caplog):
    monkeypatch.setattr(precision, "measure", no_measuring)
    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    cfg = config("auto")
    with caplog.at_level(logging.INFO):
        assert resolve_precision(cfg, None) == "32-true"
    assert cfg.trainer.precision == "32-true"
    assert [r.getMessage() for r in caplog.records] == [
        "trainer.precision=auto: 32-true on cpu (this cpu has no native bf16)"
    ]


@pytest.mark.parametrize(
    ("fp32_s", "bf16_s", "chosen"),
    [(1.0, 0.6, "bf16-mixed"), (1.0, 0.8, "bf16-mixed"), (1.0, 0.85, "32-true"), (1.0, 1.3, "32-true")],
)
def test_auto_chooses_bf16_only_when_it_measured_faster_by_the_margin(
    monkeypatch, caplog, fp32_s, bf16_s, chosen
):
    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
    monkeypatch.setattr(precision, "measure", lambda model, device: (fp32_s, bf16_s, 3))
    cfg = config("auto")
    with caplog.at_level(logging.INFO):
        assert resolve_precision(cfg, None) == chosen
    assert cfg.trainer.precision == chosen
    (line,) = [r.getMessage() for r in caplog.records]
    assert (
        line.startswith(f"trainer.precision=auto: {chosen} on cpu (")
        and f"{bf16_s * 1e3:.1f} ms under bf16" in line
    )


def test_the_measurement_leaves_the_student_and_the_rng_untouched():
    student = build_model(ARCH, 50, eos_token_id=0, seed=1).train()
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    rng = torch.get_rng_state()
    fp32_s, bf16_s, pairs = precision.measure(student, "cpu")
    assert precision.PROBE_REPEATS <= pairs <= precision.PROBE_MAX_PAIRS
    assert fp32_s > 0 and bf16_s > 0
    assert torch.equal(torch.get_rng_state(), rng)
    assert student.training
    for name, param in student.named_parameters():
        assert torch.equal(param, before[name]) and param.grad is None, name
