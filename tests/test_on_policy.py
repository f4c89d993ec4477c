"""The MiniLLM training module's wiring: presets, α schedules, the training forward pass agreeing
with the rollout's recorded log-probs (so the PPO ratio starts at exactly 1), dropout off in the
updates, a real update (through Lightning, L_PT included) against an independent float64
computation on a hand-built round with padded rows, and the round run without Lightning (as
``make bench`` runs it) training the same weights as the module."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from omegaconf import OmegaConf

from minillm.errors import MinillmError
from minillm.models.tiny import build_model
from minillm.objectives.policy_gradient import PGOptions
from minillm.rollout.options import SamplingOptions
from minillm.rollout.sampler import Rollout, response_logits, sample_rollouts, sampled_logprobs
from minillm.training.options import RoundOptions, alpha_at, pg_options
from minillm.training.round import MiniLLMRound

REAL_UPDATE = MiniLLMRound.update  # the tests below wrap it (probe_updates)


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


VOCAB, EOS = 60, 0
TEACHER_ARCH = dict(
    model_type="llama",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_training_forward_reproduces_rollout_logprobs(model_type):
    arch = {"llama": TEACHER_ARCH, "gpt2": dict(model_type="gpt2", n_embd=32, n_layer=2, n_head=2)}[
        model_type
    ]
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
        SamplingOptions(max_new_tokens=6, teacher_mix_alpha=0.3, eos_token_id=None, pad_token_id=0),
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
            "grad_clip=0",  # no clipping: p.grad after an update is the loss's own gradient
            *overrides,
        ]
    )


def make_module(cfg, student, teacher, datamodule=None):
    from types import SimpleNamespace

    from minillm.training.on_policy import OnPolicyModule

    tokenizer = SimpleNamespace(eos_token_id=EOS, pad_token_id=EOS)
    return OnPolicyModule(student, cfg, tokenizer, teacher=teacher, datamodule=datamodule)


def probe_updates(monkeypatch, probe):
    """Every update of the round (``MiniLLMRound.update``) goes through ``probe(round, mb, update)``, which
    calls ``update(mb)`` (the real one) and returns its logs."""
    monkeypatch.setattr(
        MiniLLMRound, "update", lambda self, mb: probe(self, mb, lambda m: REAL_UPDATE(self, m))
    )


def fit(module, max_steps: int, validate: bool = False, precision: str = "32-true"):
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
        precision=precision,
    )
    trainer.fit(
        module,
        train_dataloaders=DataLoader([batch], batch_size=None),
        val_dataloaders=DataLoader([{**batch, "labels": labels}], batch_size=None) if validate else None,
    )
    return trainer


def dropout_probe(record, forwards):
    """Records, for each update, the log-ratio log q_θ − log q_old of the update's own first forward
    (a forward hook fills ``forwards``), and whether two more forwards in the update's mode agree."""

    def probe(rnd, mb, update):
        start = len(forwards)
        logs = update(mb)
        logits = forwards[start][:, : mb.response_ids.shape[1]]
        mask = mb.response_mask.bool()
        log_ratio = sampled_logprobs(logits, mb.response_ids) - mb.student_logprobs
        first, second = (response_logits(rnd.student, mb) for _ in range(2))
        record.append(
            dict(logs=logs, log_ratio=log_ratio[mask], same=torch.equal(first, second), n=int(mask.sum()))
        )
        return logs

    return probe


def probed_dropout_fit(compose, monkeypatch, model_type, *overrides, max_steps, validate=False):
    cfg = module_config(compose, "objective.teacher_mix_alpha=0.0", *overrides)  # w_t = 1: ratio is q/q_old
    student = build_model(DROPOUT_STUDENTS[model_type], VOCAB, eos_token_id=EOS, seed=1)
    teacher = build_model(TEACHER_ARCH, VOCAB, eos_token_id=EOS, seed=2).eval()
    record, forwards = [], []
    probe_updates(monkeypatch, dropout_probe(record, forwards))
    student.register_forward_hook(
        lambda m, args, out: forwards.append(out.logits.detach()) if torch.is_grad_enabled() else None
    )
    fit(make_module(cfg, student, teacher), max_steps=max_steps, validate=validate)
    return cfg, record


@pytest.mark.parametrize("model_type", sorted(DROPOUT_STUDENTS))
def test_dropout_is_off_in_the_updates(compose, monkeypatch, model_type):
    """Rollouts are sampled in eval mode; with objective.disable_dropout (the default) the updates must
    see the same function whatever form the student's dropout takes (OPT's dropout and Llama's / Qwen's
    attention dropout are functional, read from config floats): the PPO ratio of each round's first
    inner step is 1 up to float rounding, and two forwards in the update's mode agree bit for bit.
    Two rounds with a validation run between them (Lightning restores modes after validating)."""
    cfg, record = probed_dropout_fit(compose, monkeypatch, model_type, max_steps=2, validate=True)
    assert cfg.objective.disable_dropout is True
    assert len(record) == 2
    for update in record:
        assert update["n"] > 4
        worst = update["log_ratio"].abs().max().item()
        assert worst < 1e-5, f"first inner step: |log q_θ - log q_old| up to {worst:.3g} (dropout on?)"
        assert update["same"], "two forwards in the update's mode differ: dropout is on"
        assert abs(float(update["logs"]["ratio_mean"]) - 1.0) < 1e-5
        assert float(update["logs"]["clip_frac"]) == 0.0


def test_dropout_stays_on_when_disable_dropout_is_false(compose, monkeypatch):
    """The switch does something: with objective.disable_dropout=false an OPT student's updates do
    run with its dropout (so the test above can tell the two apart)."""
    _, record = probed_dropout_fit(
        compose, monkeypatch, "opt", "objective.disable_dropout=false", max_steps=1
    )
    (update,) = record
    assert not update["same"]
    assert update["log_ratio"].abs().max().item() > 1e-3


def update_probe(record):
    """Records each update's minibatch, logs and the gradient it stepped with (no clipping configured)."""

    def probe(rnd, mb, update):
        logs = update(mb)
        grads = {n: p.grad.detach().clone() for n, p in rnd.student.named_parameters()}
        record.append(dict(mb=mb, logs=logs, grads=grads))
        return logs

    return probe


def hand_built_rollout(student, teacher, garbage_seed: int | None = None) -> Rollout:
    """Four rollouts of PROMPTS with responses of 6, 3, 1 and 4 tokens (the last three closed by EOS and
    padded), rollout-time student log-probs one update behind the current student (jittered), sampled
    from a teacher mix with α = 0.3; per-token values 0 after EOS as the sampler writes them, or, with
    ``garbage_seed``, random tokens, log-probs and teacher logits there."""
    gen = torch.Generator().manual_seed(0)
    rows, width = 4, 6
    lengths = torch.tensor([6, 3, 1, 4])
    m = torch.arange(width)[None] < lengths[:, None]
    ids = torch.randint(1, VOCAB, (rows, width), generator=gen)
    ids[1, 2] = ids[2, 0] = ids[3, 3] = EOS
    ids = ids.masked_fill(~m, EOS)
    zeros = torch.zeros(rows, width)
    draft = Rollout(PROMPTS, PROMPT_MASK, ids, m.long(), zeros, None, zeros, pad_token_id=EOS)
    with torch.no_grad():
        student_lp = sampled_logprobs(response_logits(student.eval(), draft), ids)
        teacher_logits = response_logits(teacher, draft)
    teacher_lp = sampled_logprobs(teacher_logits, ids)
    old = student_lp + 0.08 * torch.randn(rows, width, generator=gen)
    mix = torch.logaddexp(teacher_lp + math.log(0.3), old + math.log(0.7))
    per_token = [torch.where(m, x, 0.0) for x in (old, teacher_lp, mix)]
    teacher_logits = teacher_logits * m[..., None]
    if garbage_seed is not None:
        g = torch.Generator().manual_seed(garbage_seed)
        ids = torch.where(m, ids, torch.randint(0, VOCAB, (rows, width), generator=g))
        per_token = [torch.where(m, x, 3 * torch.randn(rows, width, generator=g)) for x in per_token]
        teacher_logits = torch.where(
            m[..., None], teacher_logits, torch.randn(teacher_logits.shape, generator=g)
        )
    old, teacher_lp, mix = per_token
    return Rollout(
        PROMPTS, PROMPT_MASK, ids, m.long(), old, teacher_lp, mix, teacher_logits, pad_token_id=EOS
    )


PT_BLOCK = torch.tensor(
    [[3, 9, 4, 22, 31, 7, 5, 18, 40, 2, 11, 6], [12, 8, 33, 1, 29, 14, 3, 50, 21, 9, 17, 4]]
)


def run_one_update(compose, monkeypatch, student, teacher, rollout, *overrides):
    """One real round through Lightning (training_step → MiniLLMRound.start / run / update) on ``rollout``
    in place of sampling, with the L_PT term on PT_BLOCK; returns the update's record."""
    from types import SimpleNamespace

    def sample(*args, keep_teacher_logits, **kwargs):
        return dataclasses.replace(
            rollout, teacher_logits=rollout.teacher_logits if keep_teacher_logits else None
        )

    monkeypatch.setattr("minillm.training.round.sample_rollouts", sample)
    cfg = module_config(compose, "objective.pt_coef=0.7", "objective.pt_batch_size=2", *overrides)
    data = SimpleNamespace(pretrain_loader=lambda batch_size: [PT_BLOCK])
    record = []
    probe_updates(monkeypatch, update_probe(record))
    fit(make_module(cfg, student, teacher, datamodule=data), max_steps=1)
    (update,) = record
    return cfg, update


def reference_update(cfg, student, teacher, rollout):
    """The update's loss and gradient, computed independently in float64: the token-by-token reference of
    the MiniLLM loss on the rollout's valid tokens, plus pt_coef · ((1 − r)·LM + r·KL(p‖q)) on the block."""
    from .test_policy_gradient import reference_minillm_loss

    student, teacher = copy.deepcopy(student).double(), copy.deepcopy(teacher).double().eval()
    input_ids, attention_mask, position_ids = rollout.full_input()
    prompt_len, width = rollout.prompt_ids.shape[1], rollout.response_ids.shape[1]
    window = slice(prompt_len - 1, prompt_len - 1 + width)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    logits = student(**inputs).logits[:, window]
    with torch.no_grad():
        teacher_logits = teacher(**inputs).logits[:, window]
    logprobs = logits.log_softmax(-1).gather(-1, rollout.response_ids[..., None])[..., 0]
    loss = reference_minillm_loss(
        logits,
        teacher_logits,
        logprobs,
        rollout.student_logprobs.double(),
        rollout.teacher_logprobs.double(),
        rollout.mix_logprobs.double(),
        rollout.response_mask,
        pg_options(cfg.objective),
    )
    lm_logits = student(input_ids=PT_BLOCK).logits[:, :-1]
    lm = torch.nn.functional.cross_entropy(lm_logits.reshape(-1, VOCAB), PT_BLOCK[:, 1:].reshape(-1))
    with torch.no_grad():
        log_p = teacher(input_ids=PT_BLOCK).logits[:, :-1].log_softmax(-1)
    kd = (log_p.exp() * (log_p - lm_logits.log_softmax(-1))).sum(-1).mean()
    ratio = float(cfg.objective.pt_kd_ratio)
    pt = (1 - ratio) * lm + ratio * kd
    total = loss + float(cfg.objective.pt_coef) * pt
    grads = torch.autograd.grad(total, list(student.parameters()))
    values = {"minillm": float(loss), "pt_loss": float(pt), "loss": float(total)}
    return values, {n: g for (n, _), g in zip(student.named_parameters(), grads, strict=True)}


def flat(grads: dict) -> torch.Tensor:
    return torch.cat([g.double().flatten() for _, g in sorted(grads.items())])


@pytest.mark.parametrize(("variant", "cached"), [("code", True), ("paper", False)])
def test_an_update_through_the_module_equals_an_independent_float64_computation(
    compose, monkeypatch, variant, cached
):
    """The round's update and the L_PT term as wired in the module, on a hand-built round with padded rows and
    rollout-time log-probs that differ from the current ones: the loss it steps on and the gradient it
    steps with equal the reference's (teacher distributions kept from the rollout, or re-scored)."""
    student = build_model(TEACHER_ARCH, VOCAB, eos_token_id=EOS, seed=1)
    teacher = build_model(TEACHER_ARCH, VOCAB, eos_token_id=EOS, seed=2).eval()
    rollout = hand_built_rollout(student, teacher)
    m = rollout.response_mask.bool()
    assert len(set(m.sum(1).tolist())) == 4 and not m.all()
    cfg, update = run_one_update(
        compose,
        monkeypatch,
        copy.deepcopy(student),
        teacher,
        rollout,
        f"objective.variant={variant}",
        f"objective.cache_teacher_logits={str(cached).lower()}",
    )
    assert (update["mb"].teacher_logits is not None) == cached
    want, grads = reference_update(cfg, student, teacher, rollout)
    logs = {k: float(v) for k, v in update["logs"].items()}
    assert logs["pg_loss"] + logs["single_step_loss"] == pytest.approx(want["minillm"], rel=1e-5, abs=1e-7)
    assert logs["pt_loss"] == pytest.approx(want["pt_loss"], rel=1e-5)
    assert logs["loss"] == pytest.approx(want["loss"], rel=1e-5)
    got, expected = flat(update["grads"]), flat(grads)
    assert ((got - expected).norm() / expected.norm()).item() < 1e-5


def test_an_update_ignores_everything_after_eos(compose, monkeypatch):
    """Tokens, log-probs and teacher logits after EOS in the round's buffer change nothing in the update."""
    student = build_model(TEACHER_ARCH, VOCAB, eos_token_id=EOS, seed=1)
    teacher = build_model(TEACHER_ARCH, VOCAB, eos_token_id=EOS, seed=2).eval()
    updates = [
        run_one_update(
            compose, monkeypatch, copy.deepcopy(student), teacher, hand_built_rollout(student, teacher, g)
        )[1]
        for g in (None, 1)
    ]
    clean, garbage = updates
    assert not torch.equal(clean["mb"].response_ids, garbage["mb"].response_ids)
    for key, value in clean["logs"].items():
        assert float(garbage["logs"][key]) == pytest.approx(float(value), rel=1e-6, abs=1e-7), key
    torch.testing.assert_close(flat(garbage["grads"]), flat(clean["grads"]), rtol=1e-5, atol=1e-7)


def test_rollout_reverse_kl_logs_estimate_the_students_kl_at_any_alpha():
    """One decision, tokens sampled from p̃ = α·p + (1−α)·q: the importance-weighted log estimates KL(q‖p)
    exactly in expectation; the plain mean of log q − log p estimates E_p̃[log q − log p], a different number."""
    from minillm.training.round import rollout_logs

    q = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    p = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    alpha = 0.5
    mix = alpha * p + (1 - alpha) * q
    n = 200_000
    tokens = torch.multinomial(mix, n, replacement=True, generator=torch.Generator().manual_seed(0))
    col = lambda t: t[tokens].log().float().unsqueeze(1)  # noqa: E731 - (n, 1) log-probs of the samples
    rollout = Rollout(
        prompt_ids=torch.zeros(n, 1, dtype=torch.long),
        prompt_mask=torch.ones(n, 1, dtype=torch.long),
        response_ids=(tokens + 1).unsqueeze(1),  # never the EOS id 0
        response_mask=torch.ones(n, 1, dtype=torch.long),
        student_logprobs=col(q),
        teacher_logprobs=col(p),
        mix_logprobs=col(mix),
    )
    logs = rollout_logs(rollout, alpha, eos_token_id=0)
    kl = float((q * (q / p).log()).sum())  # 0.8958...
    plain = float((mix * (q / p).log()).sum())  # what the unweighted mean estimates: 0.2045...
    assert logs["rollout/reverse_kl_iw"] == pytest.approx(kl, abs=0.02)
    assert logs["rollout/reverse_kl"] == pytest.approx(plain, abs=0.02)
    assert abs(kl - plain) > 0.5  # the two logs measure different things at α > 0


def test_the_round_without_lightning_trains_the_same_weights_as_the_module(compose):
    """``MiniLLMRound`` called directly, as ``make bench`` calls it (plain backward, optimizer and scheduler,
    no Lightning), on the same models, prompts, generators and options as the module: one round of 2 inner
    epochs × 2 minibatches, clipped, gives bit-identical weights and the same logged means."""
    from minillm.training.optim import make_optimizer, make_scheduler

    cfg = module_config(compose, "objective.mini_batch_size=2", "objective.ppo_epochs=2", "grad_clip=0.05")
    student = build_model(TEACHER_ARCH, VOCAB, eos_token_id=EOS, seed=1)
    teacher = build_model(TEACHER_ARCH, VOCAB, eos_token_id=EOS, seed=2).eval()
    updates = 4  # one round: max_steps ends the fit after it

    module = make_module(cfg, copy.deepcopy(student), teacher)
    trainer = fit(module, max_steps=updates)
    assert trainer.global_step == updates

    direct = copy.deepcopy(student).train()  # the mode Lightning's on_fit_start leaves it in
    optimizer = make_optimizer(direct.parameters(), cfg.optim)
    scheduler = make_scheduler(optimizer, cfg.scheduler, updates)
    options = RoundOptions.from_config(
        cfg.objective, grad_clip=cfg.grad_clip, eos_token_id=EOS, pad_token_id=EOS, keep_teacher_logits=True
    )
    logs = MiniLLMRound(direct, teacher, optimizer, scheduler, options)(
        PROMPTS,
        PROMPT_MASK,
        alpha=alpha_at(cfg.objective, 0.0),
        rollout_gen=torch.Generator().manual_seed(cfg.seed + 3),
        shuffle_gen=torch.Generator().manual_seed(cfg.seed + 2),
    )

    trained = dict(module.student.named_parameters())
    assert not torch.equal(trained["lm_head.weight"], student.lm_head.weight)  # the round did train
    for name, param in direct.named_parameters():
        assert torch.equal(param, trained[name]), name
    logged = trainer.callback_metrics  # Lightning keeps logged values as float32 tensors
    assert logs["train/skipped_updates"] == 0.0 and logs["train/grad_norm"] > 0.05  # clipping was active
    for key in ("train/loss", "train/pg_loss", "train/single_step_loss", "train/grad_norm", "rollout/reward"):
        assert float(logged[key]) == pytest.approx(logs[key], rel=1e-6), key


def test_onpolicy_rkl_update_is_the_per_token_reverse_kl_policy_gradient(compose, monkeypatch):
    """``objective=onpolicy_rkl`` through the module, on an exactly on-policy round (rollout log-probs are
    the student's own, the mix is the student): the round is sampled at α = 0, and the update steps with
    the gradient of −(1/N) Σ_t sg(log p(y_t) − log q(y_t)) · log q(y_t) over the N valid tokens — each
    token's own reward (γ = 0), no whitening, no reward scale or clip, no single-step term — written here
    in float64 from the two models, sharing no code with the estimator."""
    from types import SimpleNamespace

    student = build_model(TEACHER_ARCH, VOCAB, eos_token_id=EOS, seed=1)
    teacher = build_model(TEACHER_ARCH, VOCAB, eos_token_id=EOS, seed=2).eval()
    draft = hand_built_rollout(student, teacher)
    m = draft.response_mask.bool()
    with torch.no_grad():
        own = torch.where(
            m, sampled_logprobs(response_logits(student.eval(), draft), draft.response_ids), 0.0
        )
    rollout = dataclasses.replace(draft, student_logprobs=own, mix_logprobs=own)
    alphas = []

    def sample(student, teacher, prompt_ids, prompt_mask, sampling, *, keep_teacher_logits, **kwargs):
        alphas.append(sampling.teacher_mix_alpha)
        return dataclasses.replace(
            rollout, teacher_logits=rollout.teacher_logits if keep_teacher_logits else None
        )

    monkeypatch.setattr("minillm.training.round.sample_rollouts", sample)
    cfg = compose(
        [
            "objective=onpolicy_rkl",
            "debug=smoke",
            "student=tiny_llama",
            "teacher=tiny_random",
            "logger=none",
            "objective.num_rollouts=4",
            "objective.max_new_tokens=6",
            "grad_clip=0",
        ]
    )
    record = []
    probe_updates(monkeypatch, update_probe(record))
    fit(make_module(cfg, copy.deepcopy(student), teacher, datamodule=SimpleNamespace()), max_steps=1)
    (update,) = record
    assert alphas == [0.0]

    s64, t64 = copy.deepcopy(student).double(), copy.deepcopy(teacher).double().eval()
    input_ids, attention_mask, position_ids = rollout.full_input()
    prompt_len, width = rollout.prompt_ids.shape[1], rollout.response_ids.shape[1]
    window = slice(prompt_len - 1, prompt_len - 1 + width)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    log_q = s64(**inputs).logits[:, window].log_softmax(-1)
    with torch.no_grad():
        log_p = t64(**inputs).logits[:, window].log_softmax(-1)
    ids = rollout.response_ids
    valid = m.nonzero().tolist()
    terms, rewards = [], []
    for b, t in valid:
        y = int(ids[b, t])
        reward = float(log_p[b, t, y]) - float(log_q[b, t, y].detach())
        rewards.append(reward)
        terms.append(-reward * log_q[b, t, y])
    surrogate = torch.stack(terms).sum() / len(valid)
    grads = torch.autograd.grad(surrogate, list(s64.parameters()))
    expected = flat({n: g for (n, _), g in zip(s64.named_parameters(), grads, strict=True)})
    got = flat(update["grads"])
    assert ((got - expected).norm() / expected.norm()).item() < 1e-5
    logs = {k: float(v) for k, v in update["logs"].items()}
    assert logs["pg_loss"] == pytest.approx(-sum(rewards) / len(valid), rel=1e-5)  # the ratio is 1
    assert logs.get("single_step_loss", 0.0) == 0.0


def test_the_round_is_built_once_per_fit_and_no_dataloader_is_built_in_a_step(compose, monkeypatch):
    """Three rounds of one epoch each (max_steps unset: the schedule spans epochs × the datamodule's
    batches): the round (options, hooks, MiniLLMRound) is built at the first step only, and the
    datamodule's training DataLoader only once, by configure_optimizers for the schedule's length."""
    import lightning as L
    from torch.utils.data import DataLoader

    from minillm.training.on_policy import OnPolicyModule

    cfg = module_config(compose)
    student = build_model(TEACHER_ARCH, VOCAB, eos_token_id=EOS, seed=1)
    teacher = build_model(TEACHER_ARCH, VOCAB, eos_token_id=EOS, seed=2).eval()
    batch = {"input_ids": PROMPTS, "attention_mask": PROMPT_MASK}
    loaders, builds = [], []

    def train_dataloader():
        loaders.append(1)
        return DataLoader([batch], batch_size=None)

    real_build = OnPolicyModule.build_round
    monkeypatch.setattr(OnPolicyModule, "build_round", lambda self: builds.append(1) or real_build(self))
    from types import SimpleNamespace

    module = make_module(cfg, student, teacher, datamodule=SimpleNamespace(train_dataloader=train_dataloader))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=-1,
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=DataLoader([batch], batch_size=None))
    assert trainer.global_step == 3  # three rounds of one update each
    assert module._schedule_steps == 3
    assert len(builds) == 1
    assert len(loaders) == 1


def first_update_log_ratio(record, forwards):
    """Per update: log q_θ − log q_old over the valid tokens, q_θ from the update's own forward."""

    def probe(rnd, mb, update):
        start = len(forwards)
        logs = update(mb)
        logits = forwards[start][:, : mb.response_ids.shape[1]]
        record.append(
            (sampled_logprobs(logits, mb.response_ids) - mb.student_logprobs)[mb.response_mask.bool()]
        )
        return logs

    return probe


@pytest.mark.parametrize("alpha", [0.0, 0.2])
def test_the_first_inner_step_ratio_is_exactly_one_under_bf16_mixed(compose, monkeypatch, alpha):
    """Under trainer.precision=bf16-mixed the rollout decodes in bf16, where the KV-cached steps and a
    teacher-forced pass differ by bf16 rounding; the round scores its old log-probs with the updates' own
    pass (float32 log-softmax of the same logits), so the first update's PPO ratio q_θ/q_old is exactly 1
    on every token (and later ones, after a step, are not). Two inner epochs of two minibatches, ragged."""
    cfg = module_config(
        compose,
        f"objective.teacher_mix_alpha={alpha}",
        "objective.mini_batch_size=2",
        "objective.ppo_epochs=2",
        "objective.max_new_tokens=16",
    )
    # wide enough, and long enough responses, that bf16 decoding and the teacher-forced pass differ
    # (by ~2e-3 in log q here; at hidden size 32 and 7 tokens they happen to agree bitwise)
    arch = {**TEACHER_ARCH, "hidden_size": 128, "intermediate_size": 256}
    student = build_model(arch, VOCAB, eos_token_id=EOS, seed=1)
    teacher = build_model(arch, VOCAB, eos_token_id=EOS, seed=2).eval()
    record, forwards = [], []
    probe_updates(monkeypatch, first_update_log_ratio(record, forwards))
    student.register_forward_hook(
        lambda m, args, out: forwards.append(out.logits.detach()) if torch.is_grad_enabled() else None
    )
    module = make_module(cfg, student, teacher)
    fit(module, max_steps=4, precision="bf16-mixed")
    assert forwards[0].dtype == torch.bfloat16  # the updates did run under bf16 autocast
    assert len(record) == 4
    assert record[0].numel() > 0 and torch.equal(record[0], torch.zeros_like(record[0]))
    assert record[2].abs().max() > 0  # after two steps the student has moved
    assert module._runner.options.rescore_old_logprobs


def test_rescored_old_logprobs_give_ratio_one_in_fp32_too():
    """``rescore_old_logprobs`` in fp32 (off by default there): the first update's ratio is exactly 1,
    and the rescored log-probs agree with the decoding's to float rounding."""
    student = build_model(TEACHER_ARCH, VOCAB, eos_token_id=EOS, seed=1)
    teacher = build_model(TEACHER_ARCH, VOCAB, eos_token_id=EOS, seed=2).eval()
    sampling = SamplingOptions(max_new_tokens=6, eos_token_id=EOS, pad_token_id=EOS)
    options = RoundOptions(mini_batch_size=3, ppo_epochs=1, sampling=sampling)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.0)  # only read for the logged lr
    decoded_state = MiniLLMRound(student, teacher, optimizer, None, options).start(
        PROMPTS,
        PROMPT_MASK,
        alpha=0.2,
        rollout_gen=torch.Generator().manual_seed(5),
        shuffle_gen=torch.Generator().manual_seed(6),
    )
    rescoring = MiniLLMRound(
        student, teacher, optimizer, None, dataclasses.replace(options, rescore_old_logprobs=True)
    )
    state = rescoring.start(
        PROMPTS,
        PROMPT_MASK,
        alpha=0.2,
        rollout_gen=torch.Generator().manual_seed(5),
        shuffle_gen=torch.Generator().manual_seed(6),
    )
    decoded, rescored = decoded_state.buffer.rollout(), state.buffer.rollout()
    assert torch.equal(decoded.response_ids, rescored.response_ids)
    m = rescored.response_mask.bool()
    torch.testing.assert_close(rescored.student_logprobs[m], decoded.student_logprobs[m], atol=1e-5, rtol=0)
    assert torch.equal(rescored.mix_logprobs, decoded.mix_logprobs)  # α > 0: p̃ is the sampler's
    for rows in state.order[:2]:  # the first epoch's two minibatches (3 + 1 rows)
        mb = state.buffer.minibatch(rows)
        with torch.enable_grad():
            logprobs = sampled_logprobs(response_logits(student, mb), mb.response_ids)
        valid = mb.response_mask.bool()
        assert torch.equal(logprobs[valid].detach(), mb.student_logprobs[valid])
