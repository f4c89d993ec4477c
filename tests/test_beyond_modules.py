"""Issue 24: the decisions the modules of the newer methods make, each against an independent statement.

The losses are tested in ``test_beyond_losses.py`` and end to end in ``test_token_kd.py``; here each module
(GKD's mix, DistiLLM's schedule, DistiLLM-2's two sides, TAID's schedule) runs its training step on tiny
float64 models with a stand-in trainer (global step, horizon, logged values), and what it feeds the loss,
the buffer and the schedule is compared with values computed from the models directly.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from minillm.data.datasets import Example, collate_sft
from minillm.objectives.distillm2 import distillm2_loss
from minillm.rollout.generate import left_pad
from minillm.rollout.options import SamplingOptions
from minillm.rollout.sampler import generate
from minillm.training import distillm as distillm_mod
from minillm.training.distillm import (
    Distillm2Module,
    DistillmModule,
    batch_source,
    schedule_horizon,
    threshold_update,
)
from minillm.training.supervised import SupervisedModule
from minillm.training.taid import TaidModule
from minillm.training.token_kd import TokenKDModule, sample_student_examples

TOKENIZER = SimpleNamespace(pad_token_id=0, eos_token_id=1)
# Prompts and gold responses of uneven lengths (ragged batches), indices not in order.
GOLD = [Example([5, 6, 7], [8, 9, 1], 11), Example([12, 13], [14, 1], 4), Example([3, 4, 2, 6], [1], 7)]
# The student's responses to the same prompts: other tokens and other lengths than the gold ones.
STUDENT = {11: [20, 1], 4: [21, 22, 23, 1], 7: [24, 25, 1]}


def _tiny_llama(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=30,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        initializer_range=0.5,
    )
    return LlamaForCausalLM(config).double()


def _module(cls, compose, overrides, **trainer):
    """The module built from the composed config, with a stand-in trainer and a recorder for ``log``."""
    cfg = compose(overrides)
    module = cls(_tiny_llama(0), cfg, TOKENIZER, teacher=_tiny_llama(1))
    return module, _attach(module, **trainer)


def _attach(module, *, global_step=0, max_steps=-1, estimated=1000, epoch=0) -> dict[str, list[float]]:
    module._trainer = SimpleNamespace(
        global_step=global_step,
        max_steps=max_steps,
        estimated_stepping_batches=estimated,
        current_epoch=epoch,
        sanity_checking=False,
        optimizers=[SimpleNamespace(param_groups=[{"lr": 1e-3}])],
    )
    logged: dict[str, list[float]] = {}
    module.log = lambda name, value, **_: logged.setdefault(name, []).append(
        float(torch.as_tensor(value).detach())
    )
    return logged


def _scored(student, teacher, examples):
    """(student logits, teacher logits, mask) of both models on prompt + response, shifted: built here
    from the models and the examples, not through the module."""
    batch = collate_sft(examples, TOKENIZER.pad_token_id)
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return s[:, :-1], t[:, :-1], batch["labels"][:, 1:] != -100


def _with_responses(responses: dict[int, list[int]]) -> list[Example]:
    return [Example(e.prompt_ids, responses[e.index], e.index) for e in GOLD]


# --------------------------------------------------------------------------- the schedules' horizon


def test_schedule_horizon_prefers_schedule_steps_then_max_steps_then_the_estimate(compose):
    module, _ = _module(TaidModule, compose, ["objective=taid"], max_steps=40, estimated=70)
    assert schedule_horizon(module) == 40
    module._trainer.max_steps = -1
    assert schedule_horizon(module) == 70
    module.cfg.objective.schedule_steps = 25
    assert schedule_horizon(module) == 25


# --------------------------------------------------------------------------- GKD's mix


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_an_on_policy_batch_is_trained_on_the_students_samples(compose, monkeypatch, fraction):
    module, logged = _module(
        TokenKDModule, compose, ["objective=gkd", f"objective.on_policy_fraction={fraction}"]
    )
    module.sample_gen = torch.Generator().manual_seed(3)
    seen = []
    monkeypatch.setattr(SupervisedModule, "training_step", lambda self, batch, idx: seen.append(batch))
    gold = collate_sft(GOLD, TOKENIZER.pad_token_id)
    module.training_step(gold, 0)
    if fraction == 0.0:
        assert seen[0] is gold and logged["train/on_policy"] == [0.0]
        return
    expected = sample_student_examples(
        module.student, [e.prompt_ids for e in GOLD], [e.index for e in GOLD], module.sampling,
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    want = collate_sft(expected, TOKENIZER.pad_token_id)
    assert logged["train/on_policy"] == [1.0] and set(seen[0]) == set(want)
    for key in want:
        assert torch.equal(seen[0][key], want[key]), key
    assert module.student.training  # the update trains, whatever mode sampling left


# --------------------------------------------------------------------------- DistiLLM's schedule


def test_batch_source_by_hand():
    """φ = 0.6, horizon 10: φ_fresh = 0.6·(1 − step/10) falls from 0.6 at step 0 to 0 at step 10."""
    full = {"horizon": 10, "buffer_size": 4, "capacity": 4}
    # step 0: all of φ is fresh, even with a full buffer
    assert batch_source(0.5, 0.6, step=0, **full) == "fresh"
    # step 5: φ_fresh = 0.3; r in [0.3, 0.6) replays from the full buffer; r ≥ φ is gold
    assert batch_source(0.29, 0.6, step=5, **full) == "fresh"
    assert batch_source(0.31, 0.6, step=5, **full) == "replay"
    assert batch_source(0.61, 0.6, step=5, **full) == "gold"
    # ... but a buffer that is not full is filled first
    assert batch_source(0.31, 0.6, step=5, horizon=10, buffer_size=3, capacity=4) == "fresh"
    # step 8: φ_fresh = 0.12; past the horizon it stays at 0
    assert batch_source(0.13, 0.6, step=8, **full) == "replay"
    assert batch_source(0.11, 0.6, step=8, **full) == "fresh"
    assert batch_source(0.01, 0.6, step=12, **full) == "replay"
    # φ = 0 (DistiLLM's start): always gold
    assert batch_source(0.0001, 0.0, step=0, horizon=10, buffer_size=0, capacity=4) == "gold"


def test_threshold_update_by_hand():
    kw = {"threshold_step": 0.1, "loss_eps": 0.1}
    assert threshold_update(0.2, None, 2.0, **kw) == (0.2, 2.0)  # the first validation: the reference
    assert threshold_update(0.2, 2.0, 1.5, **kw) == (0.2, 2.0)  # fell: nothing moves, nor the reference
    assert threshold_update(0.2, 2.0, 2.05, **kw) == (0.2, 2.0)  # rose by less than loss_eps
    assert threshold_update(0.2, 2.0, 2.15, **kw) == pytest.approx((0.3, 2.15))  # rose: φ up, new reference
    assert threshold_update(0.95, 2.0, 2.5, **kw) == (1.0, 2.5)  # φ stops at 1


def test_distillm_validation_moves_phi_as_the_validation_loss_says(compose):
    module, _ = _module(
        DistillmModule,
        compose,
        ["objective=distillm", "objective.init_threshold=0.2", "objective.threshold_step=0.25"],
    )
    # The validation loss: the mean over sequences of sft_loss per batch, weighted by batch size.
    batches = [collate_sft(GOLD[:2], 0), collate_sft(GOLD[2:], 0)]
    module.on_validation_epoch_start()
    with torch.no_grad():  # as Lightning runs validation
        for i, batch in enumerate(batches):
            module.validation_step(batch, i)
    per_batch = []
    for batch in batches:
        with torch.no_grad():
            logits = module.student(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
        s, labels = logits[:, :-1], batch["labels"][:, 1:]
        keep = labels != -100
        per_batch.append(-s.log_softmax(-1)[keep].gather(-1, labels[keep].unsqueeze(-1)).mean().item())
    first = (2 * per_batch[0] + per_batch[1]) / 3
    module.on_validation_epoch_end()
    assert module.reference_loss == pytest.approx(first, rel=1e-6) and module.threshold == 0.2

    def validate(loss: float, sanity: bool = False) -> float:
        module._trainer.sanity_checking = sanity
        module._val_sum, module._val_count = loss * 4, 4
        module.on_validation_epoch_end()
        return module.threshold

    ref = module.reference_loss
    assert validate(ref - 0.5) == 0.2  # the loss fell: φ stays
    assert validate(ref + 0.05) == 0.2  # rose by less than loss_eps (0.1)
    assert validate(ref + 0.3, sanity=True) == 0.2  # Lightning's sanity check never counts
    assert validate(ref + 0.3) == pytest.approx(0.45)  # rose by loss_eps or more: φ + threshold_step
    assert module.reference_loss == pytest.approx(ref + 0.3)
    assert validate(ref + 0.35) == pytest.approx(0.45)  # measured from the new reference
    assert validate(ref + 0.5) == pytest.approx(0.7)


def test_distillm_moves_phi_on_the_validation_loss_of_every_rank(compose, monkeypatch):
    """Under ddp each rank validates a share: φ moves on the loss summed over ranks (an all-reduce of the sum and
    the count), so every rank keeps the same φ; here the other rank's share is added by a stand-in all_reduce."""
    module, _ = _module(DistillmModule, compose, ["objective=distillm", "objective.init_threshold=0.2"])
    module._trainer.sanity_checking = False
    other = torch.tensor([3 * 9.0, 3.0], dtype=torch.float64)  # the other rank: 3 sequences at loss 9
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t, *a, **k: t.add_(other))
    module._val_sum, module._val_count = 1.0 * 1, 1  # this rank: 1 sequence at loss 1
    module.on_validation_epoch_end()
    assert module.reference_loss == pytest.approx((1.0 + 27.0) / 4)


def test_distillm_training_step_takes_each_batch_from_the_scheduled_source(compose, monkeypatch):
    """Twelve steps at φ = 0.7, horizon 12, a buffer of 4 (two batches): each batch is the one
    ``batch_source`` names for the step's draw (seed + 5), the global step, the horizon and the buffer."""
    module, logged = _module(
        DistillmModule,
        compose,
        [
            "objective=distillm",
            "objective.init_threshold=0.7",
            "objective.replay_capacity=4",
            "objective.schedule_steps=12",
            "objective.temperature=0.7",
        ],
        max_steps=50,
    )
    module.sample_gen = torch.Generator().manual_seed(3)
    sampled = []

    def fake_samples(student, prompts, indices, sampling, *, generator):
        assert student is module.student and generator is module.sample_gen
        assert (sampling.temperature, sampling.max_new_tokens) == (0.7, module.cfg.eval.max_new_tokens)
        assert sampling.top_p == 1.0  # objective=distillm has no nucleus cut
        out = [Example(p, [25, len(sampled) % 5 + 2, 1], i) for p, i in zip(prompts, indices, strict=True)]
        sampled.append(out)
        return out

    monkeypatch.setattr(distillm_mod, "sample_student_examples", fake_samples)
    seen = []
    monkeypatch.setattr(SupervisedModule, "training_step", lambda self, batch, idx: seen.append(batch))
    draws = torch.Generator().manual_seed(module.cfg.seed + 5)
    gold = collate_sft(GOLD[:2], TOKENIZER.pad_token_id)
    buffer: list[Example] = []
    sources = []
    for step in range(12):
        module._trainer.global_step = step
        r = float(torch.rand((), generator=draws))
        want = batch_source(r, 0.7, step=step, horizon=12, buffer_size=len(buffer), capacity=4)
        sources.append(want)
        module.training_step(gold, step)
        batch = seen[-1]
        if want == "fresh":
            buffer = (buffer + sampled[-1])[-4:]
            assert batch["labels"][:, 1:].ne(-100).sum().item() == 6  # the sampled responses (3 tokens each)
            assert batch["input_ids"][0, 3].item() == 25 and batch["input_ids"][1, 2].item() == 25
        elif want == "replay":
            rows = {
                tuple(row[m.bool()].tolist())
                for row, m in zip(batch["input_ids"], batch["attention_mask"], strict=True)
            }
            assert len(rows) == 2 and rows <= {tuple(e.prompt_ids + e.response_ids) for e in buffer}
        else:
            assert batch is gold
        assert [e.response_ids for e in module.buffer] == [e.response_ids for e in buffer]
    assert logged["train/fresh"] == [float(s == "fresh") for s in sources]
    assert logged["train/replayed"] == [float(s == "replay") for s in sources]
    assert {"fresh", "replay", "gold"} <= set(sources)  # the draws reach every branch


# --------------------------------------------------------------------------- DistiLLM-2's two sides


@pytest.mark.parametrize("normalize", ["token", "sequence"])
def test_distillm2_scores_the_teacher_batch_forward_and_the_students_responses_reverse(compose, normalize):
    module, logged = _module(
        Distillm2Module,
        compose,
        ["objective=distillm2", "objective.alpha=0.3", f"objective.normalize={normalize}"],
    )
    module.responses, module.responses_epoch = dict(STUDENT), 0
    teacher_side = collate_sft(GOLD, TOKENIZER.pad_token_id)  # the batch holds the teacher's responses
    loss = module.training_step(teacher_side, 0)
    student, teacher = module.student, module.teacher.model
    expected, terms = distillm2_loss(
        _scored(student, teacher, GOLD),
        _scored(student, teacher, _with_responses(STUDENT)),
        alpha=0.3,
        normalize=normalize,
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    assert logged["train/skew_forward_kl"] == [pytest.approx(terms["skew_forward_kl"].item(), rel=1e-10)]
    assert logged["train/skew_reverse_kl"] == [pytest.approx(terms["skew_reverse_kl"].item(), rel=1e-10)]
    # the student's mean response length: 2, 4 and 3 tokens
    assert logged["train/student_length"] == [pytest.approx(3.0)]
    loss.backward()
    assert all(p.grad is not None for p in module.student.parameters())


def test_distillm2_batch_mode_samples_the_student_side_from_the_batchs_prompts(compose, monkeypatch):
    module, _ = _module(
        Distillm2Module, compose, ["objective=distillm2", "objective.student_responses=batch"]
    )
    teacher_side = collate_sft(GOLD, TOKENIZER.pad_token_id)
    asked = []

    def student_batch(batch):
        asked.append(batch)
        return collate_sft(_with_responses(STUDENT), TOKENIZER.pad_token_id)

    monkeypatch.setattr(module, "student_batch", student_batch)
    loss = module.training_step(teacher_side, 0)
    student, teacher = module.student, module.teacher.model
    expected, _ = distillm2_loss(
        _scored(student, teacher, GOLD), _scored(student, teacher, _with_responses(STUDENT)), alpha=0.1
    )
    assert asked == [teacher_side] and loss.item() == pytest.approx(expected.item(), rel=1e-10)


def test_distillm2_samples_every_training_prompt_once_per_epoch(compose):
    module, _ = _module(
        Distillm2Module,
        compose,
        ["objective=distillm2", "objective.batch_size=2", "objective.temperature=0.7", "objective.top_p=0.5"],
    )
    module.datamodule_ref = SimpleNamespace(examples={"train": GOLD})
    module.sample_gen = torch.Generator().manual_seed(9)
    module.on_train_epoch_start()

    def sampled(top_p: float) -> dict[int, list[int]]:
        """The sampler called directly: objective.batch_size prompts per call, one generator (seed 9)."""
        generator, out = torch.Generator().manual_seed(9), {}
        for chunk in (GOLD[:2], GOLD[2:]):
            ids, mask = left_pad([e.prompt_ids for e in chunk], TOKENIZER.pad_token_id)
            rollout = generate(
                module.student,
                ids,
                mask,
                SamplingOptions(
                    max_new_tokens=module.sampling.max_new_tokens,
                    eos_token_id=1,
                    pad_token_id=0,
                    temperature=0.7,
                    top_p=top_p,
                ),
                generator=generator,
            )
            for e, row, keep in zip(chunk, rollout.response_ids, rollout.response_mask, strict=True):
                out[e.index] = row[keep.bool()].tolist()
        return out

    expected = sampled(0.5)
    assert expected != sampled(1.0)  # the nucleus cut changes these samples: the check below can tell
    assert module.responses == expected and module.responses_epoch == 0
    state = module.sample_gen.get_state()
    module.on_train_epoch_start()  # the same epoch again (a resumed run): no new samples
    assert torch.equal(module.sample_gen.get_state(), state)
    module._trainer.current_epoch = 1
    module.on_train_epoch_start()
    assert module.responses_epoch == 1 and not torch.equal(module.sample_gen.get_state(), state)


# --------------------------------------------------------------------------- TAID's schedule


def _taid_values(student, teacher, examples, t: float) -> tuple[float, float]:
    """(KL(p_t ‖ q), −Σ p_t log q), each the mean over the response tokens, in plain Python floats."""
    s, te, mask = _scored(student, teacher, examples)
    kls, ces = [], []
    for b, i in mask.nonzero().tolist():
        q = torch.softmax(s[b, i], -1).tolist()
        mixed = [(1 - t) * x + t * y for x, y in zip(s[b, i].tolist(), te[b, i].tolist(), strict=True)]
        top = max(mixed)
        e = [math.exp(x - top) for x in mixed]
        p_t = [x / sum(e) for x in e]
        kls.append(sum(x * math.log(x / y) for x, y in zip(p_t, q, strict=True)))
        ces.append(-sum(x * math.log(y) for x, y in zip(p_t, q, strict=True)))
    return sum(kls) / len(kls), sum(ces) / len(ces)


def test_taid_t_follows_the_linear_floor_over_the_horizon(compose):
    """t_alpha = 0: t is the floor. The step at global step n uses the t set after step n − 1; the first
    step only stores its signal, so t = 0.4, 0.4, then 0.4 + 0.6·n/4 (the reference's global_step / N)."""
    module, logged = _module(TaidModule, compose, ["objective=taid", "objective.t_alpha=0"], max_steps=4)
    batch = collate_sft(GOLD, TOKENIZER.pad_token_id)
    for step in range(4):
        module._trainer.global_step = step
        module.training_step(batch, step)
    assert logged["train/taid_t"] == pytest.approx([0.4, 0.4, 0.55, 0.7])
    assert module.state.t == pytest.approx(0.85)


def test_taid_feeds_its_schedule_the_cross_entropy_and_trains_on_the_kl(compose):
    """α = 0.3, β = 0.5, horizon 20 (the adaptive step beats the floor): three steps on batches of
    different loss; the state is recomputed from the plain-Python cross-entropies."""
    module, logged = _module(
        TaidModule,
        compose,
        [
            "objective=taid",
            "objective.t_alpha=0.3",
            "objective.t_momentum=0.5",
            "objective.schedule_steps=20",
        ],
        max_steps=4,
    )
    sets = [GOLD, _with_responses(STUDENT), GOLD[:2]]
    t, momentum, prev = 0.4, 0.0, None
    for step, examples in enumerate(sets):
        module._trainer.global_step = step
        kl, ce = _taid_values(module.student, module.teacher.model, examples, t)
        loss = module.training_step(collate_sft(examples, TOKENIZER.pad_token_id), step)
        assert loss.item() == pytest.approx(kl, rel=1e-9)
        assert logged["train/taid_t"][-1] == pytest.approx(t)
        assert logged["train/taid_ce"][-1] == pytest.approx(ce, rel=1e-9)
        if prev is not None:  # the first step only stores its signal
            momentum = 0.5 * momentum + 0.5 * (prev - ce) / prev
            floor = 0.4 + 0.6 * step / 20
            t = min(1.0, max(floor, t + 0.3 * (1 / (1 + math.exp(-momentum))) * (1 - t)))
            assert t > floor  # the adaptive step, not the floor, sets t here
        prev = ce
        assert module.state == pytest.approx((t, momentum, ce), rel=1e-9)


# --------------------------------------------------------------------------- the configured loss


def _py_softmax(row: list[float]) -> list[float]:
    top = max(row)
    e = [math.exp(x - top) for x in row]
    return [x / sum(e) for x in e]


def _py_kl(a: list[float], b: list[float]) -> float:
    return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True) if x > 0)


@pytest.mark.parametrize(
    ("overrides", "per_position"),
    [
        (  # GKD: JSD(β) with m = β p + (1 − β) q
            ["objective=gkd", "objective.beta=0.3"],
            lambda p, q: (
                0.3 * _py_kl(p, [0.3 * x + 0.7 * y for x, y in zip(p, q, strict=True)])
                + 0.7 * _py_kl(q, [0.3 * x + 0.7 * y for x, y in zip(p, q, strict=True)])
            ),
        ),
        (  # DistiLLM's SRKL: KL(q ‖ α q + (1 − α) p)
            ["objective=distillm", "objective.divergence=skew_reverse_kl", "objective.alpha=0.2"],
            lambda p, q: _py_kl(q, [0.2 * y + 0.8 * x for x, y in zip(p, q, strict=True)]),
        ),
        (  # DistiLLM's SKL: KL(p ‖ α p + (1 − α) q)
            ["objective=distillm", "objective.alpha=0.3"],
            lambda p, q: _py_kl(p, [0.3 * x + 0.7 * y for x, y in zip(p, q, strict=True)]),
        ),
    ],
    ids=["gkd-jsd", "distillm-srkl", "distillm-skl"],
)
def test_the_module_trains_on_the_configured_divergence_and_parameter(
    compose, monkeypatch, overrides, per_position
):
    """The module's training step on a gold batch: its loss is the configured divergence at the configured
    (non-default) parameter, the mean over the response tokens, from the two models directly."""
    cls = DistillmModule if "objective=distillm" in overrides else TokenKDModule
    module, _ = _module(
        cls, compose, [*overrides, "objective.on_policy_fraction=0"] if cls is TokenKDModule else overrides
    )
    batch = collate_sft(GOLD, TOKENIZER.pad_token_id)
    loss = module.training_step(batch, 0)  # φ = 0 / λ = 0: the gold batch
    s, t, mask = _scored(module.student, module.teacher.model, GOLD)
    values = [
        per_position(_py_softmax(t[b, i].tolist()), _py_softmax(s[b, i].tolist()))
        for b, i in mask.nonzero().tolist()
    ]
    assert loss.item() == pytest.approx(sum(values) / len(values), rel=1e-9)


def test_taid_skips_a_non_finite_loss_without_moving_its_schedule(compose, monkeypatch):
    module, logged = _module(TaidModule, compose, ["objective=taid", "objective.t_alpha=0"], max_steps=4)
    batch = collate_sft(GOLD, TOKENIZER.pad_token_id)
    module.training_step(batch, 0)
    module._trainer.global_step = 1
    before = module.state
    monkeypatch.setattr(module, "loss_fn", lambda *args, **kwargs: torch.tensor(float("nan")))
    assert module.training_step(batch, 1) is None
    assert module.state == before and module.bad_steps == 1 and logged["train/skipped_updates"] == [0.0, 1.0]


def test_distillm2_skips_a_non_finite_loss(compose, monkeypatch):
    module, logged = _module(Distillm2Module, compose, ["objective=distillm2"])
    module.responses, module.responses_epoch = dict(STUDENT), 0
    nan = torch.tensor(float("nan"))
    monkeypatch.setattr(
        module, "loss_fn", lambda *args: (nan, {"skew_forward_kl": nan, "skew_reverse_kl": nan})
    )
    assert module.training_step(collate_sft(GOLD, TOKENIZER.pad_token_id), 0) is None
    assert module.bad_steps == 1 and logged["train/skipped_updates"] == [1.0] and "train/loss" not in logged
