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


# =========================================================================== the module, through Lightning

VOCAB, EOS = 60, 0
TEACHER_ARCH = dict(
    model_type="llama",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
)
# Students whose dropout is applied functionally from config floats (F.dropout(..., training=self.training),
# the attention interface's dropout=), not by nn.Dropout modules.
DROPOUT_STUDENTS = {
    "opt": dict(
        model_type="opt",
        hidden_size=32,
        ffn_dim=64,
        word_embed_proj_dim=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.1,
    ),
    "llama": {**TEACHER_ARCH, "attention_dropout": 0.1},
    "qwen2": dict(
        model_type="qwen2",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        attention_dropout=0.1,
    ),
}
PROMPTS = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12], [0, 0, 0, 0, 13], [0, 14, 15, 16, 17]])
PROMPT_MASK = (PROMPTS != 0).long()


def module_config(compose, *overrides):
    """The real reverse_kld config (smoke sizes), one update of 4 rollouts per round unless overridden."""
    return compose(
        [
            "objective=reverse_kld",
            "debug=smoke",
            "student=tiny_llama",
            "teacher=tiny_random",
            "logger=none",
            "objective.num_rollouts=4",
            "objective.mini_batch_size=4",
            "objective.ppo_epochs=1",
            "objective.max_new_tokens=6",
            "optim.grad_clip=0",  # no clipping: p.grad after an update is the loss's own gradient
            *overrides,
        ]
    )


def make_module(cfg, student, teacher, probe, datamodule=None):
    """An OnPolicyModule with ``probe`` mixed in before it (a class whose ``_update`` calls super)."""
    from types import SimpleNamespace

    from minillm.on_policy import OnPolicyModule

    cls = type("Probed", (probe, OnPolicyModule), {})
    tokenizer = SimpleNamespace(eos_token_id=EOS, pad_token_id=EOS)
    module = cls(student, cfg, tokenizer, teacher=teacher, datamodule=datamodule)
    module.record = []
    return module


def fit(module, max_steps: int, validate: bool = False):
    """A real Lightning fit: ``max_steps`` rounds over the same prompt batch, optionally validating between."""
    import lightning as L
    from torch.utils.data import DataLoader

    batch = {"input_ids": PROMPTS, "attention_mask": PROMPT_MASK}
    labels = PROMPTS.masked_fill(PROMPT_MASK == 0, -100)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        max_epochs=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1 if validate else 0,
    )
    trainer.fit(
        module,
        train_dataloaders=DataLoader([batch], batch_size=None),
        val_dataloaders=DataLoader([{**batch, "labels": labels}], batch_size=None) if validate else None,
    )
    return trainer


class DropoutProbe:
    """Records, for each update, the log-ratio log q_θ − log q_old of the update's own first forward
    (a forward hook sees it), the student's mode, and whether two more forwards in that mode agree."""

    def _update(self, mb):
        from minillm.on_policy import response_logits, sampled_logprobs

        start = len(self.forwards)
        logs = super()._update(mb)
        logits = self.forwards[start][:, : mb.response_ids.shape[1]]
        mask = mb.response_mask.bool()
        log_ratio = sampled_logprobs(logits, mb.response_ids) - mb.student_logprobs
        first, second = (response_logits(self.student, mb) for _ in range(2))
        self.record.append(
            dict(logs=logs, log_ratio=log_ratio[mask], same=torch.equal(first, second), n=int(mask.sum()))
        )
        return logs


@pytest.mark.parametrize("model_type", sorted(DROPOUT_STUDENTS))
def test_dropout_is_off_in_the_updates(compose, model_type):
    """Rollouts are sampled in eval mode; with objective.disable_dropout (the default) the updates must
    see the same function whatever form the student's dropout takes (OPT's dropout and Llama's / Qwen's
    attention dropout are functional, read from config floats): the PPO ratio of each round's first
    inner step is 1 up to float rounding, and two forwards in the update's mode agree bit for bit.
    Two rounds with a validation run between them (Lightning restores modes after validating)."""
    cfg = module_config(compose, "objective.teacher_mix_alpha=0.0")  # w_t = 1: the logged ratio is q/q_old
    assert cfg.objective.disable_dropout is True
    student = build_model(DROPOUT_STUDENTS[model_type], VOCAB, eos_token_id=EOS, seed=1)
    teacher = build_model(TEACHER_ARCH, VOCAB, eos_token_id=EOS, seed=2).eval()
    module = make_module(cfg, student, teacher, DropoutProbe)
    module.forwards = []
    student.register_forward_hook(
        lambda m, args, out: module.forwards.append(out.logits.detach()) if torch.is_grad_enabled() else None
    )
    fit(module, max_steps=2, validate=True)
    assert len(module.record) == 2
    for update in module.record:
        assert update["n"] > 4
        worst = update["log_ratio"].abs().max().item()
        assert worst < 1e-5, f"first inner step: |log q_θ - log q_old| up to {worst:.3g} (dropout on?)"
        assert update["same"], "two forwards in the update's mode differ: dropout is on"
        assert abs(float(update["logs"]["ratio_mean"]) - 1.0) < 1e-5
        assert float(update["logs"]["clip_frac"]) == 0.0


def test_dropout_stays_on_when_disable_dropout_is_false(compose):
    """The switch does something: with objective.disable_dropout=false an OPT student's updates do
    run with its dropout (so the test above can tell the two apart)."""
    cfg = module_config(compose, "objective.teacher_mix_alpha=0.0", "objective.disable_dropout=false")
    student = build_model(DROPOUT_STUDENTS["opt"], VOCAB, eos_token_id=EOS, seed=1)
    teacher = build_model(TEACHER_ARCH, VOCAB, eos_token_id=EOS, seed=2).eval()
    module = make_module(cfg, student, teacher, DropoutProbe)
    module.forwards = []
    student.register_forward_hook(
        lambda m, args, out: module.forwards.append(out.logits.detach()) if torch.is_grad_enabled() else None
    )
    fit(module, max_steps=1)
    (update,) = module.record
    assert not update["same"]
    assert update["log_ratio"].abs().max().item() > 1e-3
