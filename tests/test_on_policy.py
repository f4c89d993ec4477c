"""The MiniLLM training module's wiring: presets, α schedules, and the training forward pass agreeing
with the rollout's recorded log-probs (so the PPO ratio starts at exactly 1)."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from minillm.errors import MinillmError
from minillm.models.tiny import build_model
from minillm.objectives.policy_gradient import PGOptions
from minillm.on_policy import alpha_at, pg_options, response_logits
from minillm.rollout.sampler import sample_rollouts


def objective(**overrides):
    base = {
        "variant": "code",
        "single_step": True,
        "teacher_mix_alpha": 0.2,
        "alpha_schedule": "constant",
        "alpha_end": None,
    }
    base.update(overrides)
    return OmegaConf.create(base)


def test_variant_presets_and_overrides():
    assert pg_options(objective()) == PGOptions.code()
    assert pg_options(objective(variant="paper")) == PGOptions.paper(single_step=True)
    assert pg_options(objective(variant="paper", single_step=False)) == PGOptions.paper(single_step=False)
    tuned = pg_options(objective(gamma=1.0, length_norm="summed", whiten=None))
    assert (tuned.gamma, tuned.length_norm, tuned.whiten) == (1.0, "summed", True)
    with pytest.raises(MinillmError, match=r"objective.variant='trl'"):
        pg_options(objective(variant="trl"))
    with pytest.raises(MinillmError, match=r"objective.clip_eps"):
        pg_options(objective(clip_eps=0.0))


def test_alpha_schedules():
    assert alpha_at(objective(), 0.7) == 0.2
    lin = objective(alpha_schedule="linear", alpha_end=0.0)
    assert [round(alpha_at(lin, p), 6) for p in (0.0, 0.5, 1.0)] == [0.2, 0.1, 0.0]
    cos = objective(alpha_schedule="cosine", alpha_end=0.0)
    assert alpha_at(cos, 0.0) == pytest.approx(0.2)
    assert alpha_at(cos, 0.5) == pytest.approx(0.1)
    assert alpha_at(cos, 0.25) == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)))
    assert alpha_at(cos, 1.0) == pytest.approx(0.0)
    with pytest.raises(MinillmError, match="objective.alpha_schedule='step'"):
        alpha_at(objective(alpha_schedule="step"), 0.1)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_training_forward_reproduces_rollout_logprobs(model_type):
    arch = {
        "llama": dict(
            model_type="llama",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
        ),
        "gpt2": dict(model_type="gpt2", n_embd=32, n_layer=2, n_head=2),
    }[model_type]
    student = build_model(arch, 60, eos_token_id=0, seed=1).eval()
    teacher = build_model(arch, 60, eos_token_id=0, seed=2).eval()
    prompts = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12], [0, 0, 0, 0, 13]])
    mask = (torch.arange(5) >= torch.tensor([[2], [0], [4]])).long()
    gen = torch.Generator().manual_seed(0)
    rollout = sample_rollouts(
        student,
        teacher,
        prompts,
        mask,
        max_new_tokens=6,
        alpha=0.3,
        eos_token_id=None,
        pad_token_id=0,
        generator=gen,
        keep_teacher_logits=True,
    )
    with torch.no_grad():
        logits = response_logits(student, rollout)
        t_logits = response_logits(teacher, rollout)
    logprobs = torch.log_softmax(logits, -1).gather(-1, rollout.response_ids.unsqueeze(-1)).squeeze(-1)
    m = rollout.response_mask.bool()
    torch.testing.assert_close(logprobs[m], rollout.student_logprobs[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(t_logits[m], rollout.teacher_logits[m], atol=1e-5, rtol=0)
