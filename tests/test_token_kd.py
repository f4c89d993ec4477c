"""Issue 16: token-level KD on any data source, the GKD / DistiLLM / DistiLLM-2 / TAID / on-policy reverse-KL
presets, and their state through an exact resume.

Loss references are computed independently in plain Python floats (float64) from the formulas as written
(explicit sums, a sorted list for AKL, direct powers for the α-β divergence).
"""

from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import pytest
import torch

from minillm.config import validate_config
from minillm.data.datasets import IGNORE_INDEX, Example, collate_sft
from minillm.errors import MinillmError, RunInterrupted
from minillm.objectives.divergences import TOPK_DIVERGENCES
from minillm.objectives.token_kd import token_kd_loss
from minillm.rollout.options import SamplingOptions
from minillm.rollout.sampler import generate
from minillm.run import train
from minillm.training.token_kd import TokenKDModule, collate_examples, prompts_of, sample_student_examples

from .test_smoke import smoke_overrides

F64 = torch.float64
V = 7
# Two rows: a 2-token prompt, a 3-token response, 1 padding position; a 3-token prompt, a 2-token
# response, 1 padding position. Position t of the logits predicts label t+1.
LABELS = torch.tensor(
    [
        [IGNORE_INDEX, IGNORE_INDEX, 3, 4, 1, IGNORE_INDEX],
        [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 5, 1, IGNORE_INDEX],
    ]
)


def _logits(seed: int) -> torch.Tensor:
    x = torch.randn((2, 6, V), generator=torch.Generator().manual_seed(seed), dtype=F64) * 2
    # positions whose next label is ignored carry absurd values: they must not count
    ignored = torch.cat([LABELS[:, 1:] == IGNORE_INDEX, torch.ones(2, 1, dtype=torch.bool)], dim=1)
    return torch.where(ignored.unsqueeze(-1), torch.full_like(x, 1e4) * (torch.arange(V) % 2), x)


def _softmax(row):
    top = max(row)
    e = [math.exp(v - top) for v in row]
    return [v / sum(e) for v in e]


def _kl(a, b):
    return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True) if x > 0)


def _mix(w, a, b):
    return [w * x + (1 - w) * y for x, y in zip(a, b, strict=True)]


def _ab(p, q, a, b):
    s = a + b
    return -sum(x**a * y**b - a / s * x**s - b / s * y**s for x, y in zip(p, q, strict=True)) / (a * b)


def _akl(p, q, mu):
    order = sorted(range(len(p)), key=lambda i: (-p[i], i))
    head, before = set(), 0.0
    for i in order:
        if before < mu:
            head.add(i)
        before += p[i]
    g_head = sum(abs(p[i] - q[i]) for i in head)
    g_total = sum(abs(x - y) for x, y in zip(p, q, strict=True))
    w = g_head / g_total
    return w * _kl(p, q) + (1 - w) * _kl(q, p)


# name -> (parameters, per-position value from (p, q) as lists)
CASES = {
    "forward_kl": ({}, lambda p, q: _kl(p, q)),
    "reverse_kl": ({}, lambda p, q: _kl(q, p)),
    "jsd": ({"beta": 0.3}, lambda p, q: 0.3 * _kl(p, _mix(0.3, p, q)) + 0.7 * _kl(q, _mix(0.3, p, q))),
    "skew_forward_kl": ({"alpha": 0.2}, lambda p, q: _kl(p, _mix(0.2, p, q))),
    "skew_reverse_kl": ({"alpha": 0.2}, lambda p, q: _kl(q, _mix(0.2, q, p))),
    "tvd": ({}, lambda p, q: 0.5 * sum(abs(x - y) for x, y in zip(p, q, strict=True))),
    "ab_divergence": ({"alpha": 0.7, "beta": 0.4}, lambda p, q: _ab(p, q, 0.7, 0.4)),
    "akl": ({"mu": 0.6}, lambda p, q: _akl(p, q, 0.6)),
}


def _reference(per_position, s: torch.Tensor, t: torch.Tensor) -> float:
    values = [
        per_position(_softmax(t[b, i].tolist()), _softmax(s[b, i].tolist()))
        for b in range(2)
        for i in range(5)
        if LABELS[b, i + 1] != IGNORE_INDEX
    ]
    assert len(values) == 5  # 3 + 2 response tokens
    return sum(values) / len(values)


@pytest.mark.parametrize("name", sorted(CASES))
def test_token_kd_loss_equals_independent_values_over_response_tokens(name):
    params, per_position = CASES[name]
    s, t = _logits(0), _logits(1)
    loss, logs = token_kd_loss(s, LABELS, t, divergence=name, **params)
    assert loss.item() == pytest.approx(_reference(per_position, s, t), rel=1e-9, abs=1e-12)
    assert logs["divergence"].item() == loss.item()


def test_teacher_is_detached_called_once_and_an_all_masked_batch_gives_zero():
    s = _logits(0).requires_grad_(True)
    t = _logits(1).requires_grad_(True)
    calls = []

    def teacher():
        calls.append(1)
        return t

    loss, _ = token_kd_loss(s, LABELS, teacher, divergence="jsd", beta=0.5)
    loss.backward()
    assert len(calls) == 1 and t.grad is None and torch.isfinite(s.grad).all()
    masked = torch.full_like(LABELS, IGNORE_INDEX)
    s2 = _logits(0).float().requires_grad_(True)
    zero, _ = token_kd_loss(s2, masked, _logits(1).float(), divergence="reverse_kl")
    zero.backward()
    assert zero.item() == 0.0 and torch.equal(s2.grad, torch.zeros_like(s2))


@pytest.mark.parametrize("name", sorted(TOPK_DIVERGENCES))
def test_teacher_top_k_with_k_equal_to_the_vocabulary_is_the_full_divergence(name):
    params = CASES[name][0]
    s, t = _logits(2), _logits(3)
    full, _ = token_kd_loss(s, LABELS, t, divergence=name, **params)
    top, _ = token_kd_loss(s, LABELS, t, divergence=name, teacher_top_k=V, **params)
    assert top.item() == pytest.approx(full.item(), rel=1e-9, abs=1e-12)


def test_teacher_top_k_is_the_divergence_between_the_bucketed_distributions():
    s, t = _logits(4), _logits(5)
    k = 3
    values = []
    for b in range(2):
        for i in range(5):
            if LABELS[b, i + 1] == IGNORE_INDEX:
                continue
            p, q = _softmax(t[b, i].tolist()), _softmax(s[b, i].tolist())
            top = sorted(range(V), key=lambda j: -p[j])[:k]
            pb = [p[j] for j in top] + [1 - sum(p[j] for j in top)]
            qb = [q[j] for j in top] + [1 - sum(q[j] for j in top)]
            values.append(_kl(pb, qb))
    got, _ = token_kd_loss(s, LABELS, t, divergence="forward_kl", teacher_top_k=k)
    assert got.item() == pytest.approx(sum(values) / len(values), rel=1e-9)
    full, _ = token_kd_loss(s, LABELS, t, divergence="forward_kl")
    assert got.item() < full.item()  # coarsening never raises an f-divergence


def test_token_kd_loss_refuses_a_parameter_the_divergence_does_not_take_and_akl_on_top_k():
    s, t = _logits(0), _logits(1)
    with pytest.raises(MinillmError, match="alpha: divergence=jsd takes beta, not alpha"):
        token_kd_loss(s, LABELS, t, divergence="jsd", alpha=0.1)
    with pytest.raises(MinillmError, match="teacher_top_k=3: divergence=akl needs the full distributions"):
        token_kd_loss(s, LABELS, t, divergence="akl", teacher_top_k=3)
    with pytest.raises(MinillmError, match="divergence='kl'; choose one of"):
        token_kd_loss(s, LABELS, t, divergence="kl")


# --------------------------------------------------------------------------- the on-policy mix


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_the_mix_draws_on_policy_batches_at_the_configured_rate(fraction):
    """A statistical check with a fixed seed: 4000 draws within 4 standard deviations of λ."""
    module = SimpleNamespace(on_policy_fraction=fraction, mix_gen=torch.Generator().manual_seed(5))
    n = 4000
    rate = sum(TokenKDModule.draw_on_policy(module) for _ in range(n)) / n
    assert abs(rate - fraction) < 4 * math.sqrt(fraction * (1 - fraction) / n)
    for fixed in (0.0, 1.0):  # no draw at the ends
        module = SimpleNamespace(on_policy_fraction=fixed, mix_gen=torch.Generator().manual_seed(5))
        assert {TokenKDModule.draw_on_policy(module) for _ in range(50)} == {bool(fixed)}
        assert torch.equal(module.mix_gen.get_state(), torch.Generator().manual_seed(5).get_state())


def test_student_batches_keep_the_prompts_and_hold_the_students_samples():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    student = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=30,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            initializer_range=0.5,
        )
    )
    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=1)
    gold = [Example([5, 6, 7], [8, 9, 1], 11), Example([12, 13], [14, 1], 4)]
    batch = collate_sft(gold, pad_token_id=0)
    prompts = prompts_of(batch)
    assert prompts == [[5, 6, 7], [12, 13]]
    examples = sample_student_examples(
        student, prompts, [11, 4], SamplingOptions(max_new_tokens=6, eos_token_id=1, pad_token_id=0),
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    left = torch.tensor([[5, 6, 7], [0, 12, 13]])
    reference = generate(
        student,
        left,
        (left != 0).long(),
        SamplingOptions(max_new_tokens=6, eos_token_id=1, pad_token_id=0),
        generator=torch.Generator().manual_seed(3),
    )
    for example, ids, mask in zip(examples, reference.response_ids, reference.response_mask, strict=True):
        assert example.response_ids == ids[mask.bool()].tolist()
    new = collate_examples(examples, tokenizer, "cpu")
    assert prompts_of(new) == prompts and new["index"].tolist() == [11, 4]
    for row, example in enumerate(examples):
        start = len(example.prompt_ids)
        assert new["labels"][row, start : start + len(example.response_ids)].tolist() == example.response_ids


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["objective=token_kd", "objective.divergence=kl"], r"^objective\.divergence='kl'; choose one of"),
        (
            ["objective=gkd", "objective.alpha=0.1"],
            r"^objective\.alpha=0\.1: divergence=jsd takes beta; set objective\.alpha=null",
        ),
        (
            ["objective=gkd", "objective.beta=1.5"],
            r"^objective\.beta=1\.5: jsd's beta must be in \[0\.0, 1\.0\]",
        ),
        (
            ["objective=token_kd", "objective.divergence=akl", "objective.mu=1.0"],
            r"^objective\.mu=1\.0: akl's mu",
        ),
        (
            ["objective=token_kd", "objective.divergence=akl", "objective.teacher_top_k=5"],
            r"^objective\.teacher_top_k=5: divergence=akl needs the full distributions",
        ),
        (
            ["objective=token_kd", "objective.teacher_top_k=0"],
            r"^objective\.teacher_top_k=0: must be a positive",
        ),
        (
            ["objective=gkd", "objective.on_policy_fraction=1.5"],
            r"^objective\.on_policy_fraction=1\.5: must be in",
        ),
        (
            ["objective=distillm", "objective.replay_capacity=0"],
            r"^objective\.replay_capacity=0: must be a positive",
        ),
        (["objective=distillm", "objective.loss_eps=-1"], r"^objective\.loss_eps=-1(\.0)?: must be >= 0"),
        (
            ["objective=distillm2", "objective.student_responses=often"],
            r"^objective\.student_responses='often'",
        ),
        (
            ["objective=distillm2", "objective.alpha=2"],
            r"^objective\.alpha=2(\.0)?: must be in \[0\.0, 1\.0\]",
        ),
        (["objective=distillm2", "objective.batch_size=0"], r"^objective\.batch_size=0: must be a positive"),
        (["objective=distillm2", "objective.top_p=0"], r"^objective\.top_p=0(\.0)?: must be in \(0, 1\]"),
        (
            ["objective=distillm2", "objective.normalize=mean"],
            r"^objective\.normalize='mean'; choose one of \['sequence', 'token'\]$",
        ),
        (
            ["objective=taid", "+objective.normalize=sequence"],
            r"^objective\.normalize \(set on the command line\) is read only by objective=distillm2",
        ),
        (
            ["objective=taid", "objective.t_start=0.9", "objective.t_end=0.5"],
            r"^objective\.t_start=0\.9: must not exceed objective\.t_end=0\.5",
        ),
        (["objective=taid", "objective.t_momentum=1.0"], r"^objective\.t_momentum=1\.0: must be in \[0, 1\)"),
        (
            ["objective=taid", "objective.schedule_steps=0"],
            r"^objective\.schedule_steps=0: must be a positive",
        ),
        (
            ["objective=gkd", "+objective.t_start=0.3"],
            r"^objective\.t_start \(set on the command line\) is read only by objective=taid",
        ),
        (
            ["objective=distillm", "+objective.on_policy_fraction=0.5"],
            r"^objective\.on_policy_fraction .* is read only by objective=token_kd or objective=gkd",
        ),
    ],
)
def test_each_new_key_is_validated_naming_it(compose, overrides, message):
    with pytest.raises(MinillmError, match=message):
        validate_config(compose(overrides))


def test_onpolicy_rkl_is_reverse_kld_with_per_token_rewards_and_no_stabilisers(compose):
    from minillm.objectives.policy_gradient import PGOptions
    from minillm.training.options import pg_options

    cfg = compose(["objective=onpolicy_rkl"])
    validate_config(cfg)
    o = cfg.objective
    assert o.module._target_ == compose(["objective=reverse_kld"]).objective.module._target_
    assert (o.teacher_mix_alpha, o.single_step, o.ppo_epochs, o.mini_batch_size) == (
        0.0,
        False,
        1,
        o.num_rollouts,
    )
    assert pg_options(o) == PGOptions(
        gamma=0.0,
        include_current=True,
        length_norm="none",
        whiten=False,
        reward_scale=1.0,
        reward_clip=None,
        clip_eps=0.2,  # never binds: one update per round, the ratio is 1
        single_step=False,
        single_step_weighted=False,
        ratio_weighted=True,
    )


# --------------------------------------------------------------------------- every preset end to end


def _rows(run_dir):
    with (run_dir / "csv" / "metrics.csv").open(newline="") as handle:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


def _column(rows, key):
    return [float(r[key]) for r in rows if key in r]


PRESETS = {
    "token_kd-gold": (["objective=token_kd"], ["train/divergence", "train/on_policy"]),
    "token_kd-teacher-topk": (
        [
            "objective=token_kd",
            "objective.train_on_teacher_samples=true",
            "objective.teacher_top_k=8",
            "objective.divergence=ab_divergence",
            "objective.alpha=0.5",
            "objective.beta=0.5",
        ],
        ["train/divergence"],
    ),
    "token_kd-student-akl": (
        ["objective=token_kd", "objective.on_policy_fraction=1.0", "objective.divergence=akl"],
        ["train/divergence", "train/on_policy"],
    ),
    "gkd": (["objective=gkd"], ["train/divergence", "train/on_policy"]),
    "distillm": (
        ["objective=distillm", "objective.init_threshold=1.0", "objective.replay_capacity=4"],
        ["train/fresh", "train/replayed", "train/sgo_threshold", "train/replay_size"],
    ),
    "distillm2-epoch": (["objective=distillm2"], ["train/skew_forward_kl", "train/skew_reverse_kl"]),
    "distillm2-batch": (
        ["objective=distillm2", "objective.student_responses=batch"],
        ["train/skew_forward_kl", "train/skew_reverse_kl", "train/student_length"],
    ),
    "taid": (["objective=taid"], ["train/taid_t", "train/taid_kl"]),
    "onpolicy_rkl": (["objective=onpolicy_rkl"], ["rollout/reward", "train/pg_loss", "train/clip_frac"]),
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_runs_end_to_end_in_smoke_mode(compose, tmp_path, preset):
    overrides, columns = PRESETS[preset]
    cfg = compose(smoke_overrides(tmp_path, *overrides, "logger=csv", "eval.compare=false"))
    results = train(cfg)
    assert results["global_step"] == 3
    assert 0.0 <= results["test/rougeL"] <= 100.0
    rows = _rows(tmp_path / "run")
    for column in [*columns, "train/loss"]:
        assert _column(rows, column), f"{column} not logged"
    assert all(math.isfinite(v) for v in _column(rows, "train/loss"))
    timing = json.loads((tmp_path / "run" / "timing.json").read_text())
    assert timing["optimizer_steps"] == 3 and timing["seconds_per_step"] > 0
    if preset == "distillm":  # φ = 1: two fresh batches fill the buffer of 4, then it is replayed from
        assert _column(rows, "train/fresh")[:1] == [1.0] and max(_column(rows, "train/replay_size")) == 4
    if preset == "token_kd-student-akl":
        assert _column(rows, "train/on_policy") == [1.0, 1.0, 1.0]
    if preset == "taid":
        t = _column(rows, "train/taid_t")
        assert t[0] == pytest.approx(0.4) and t == sorted(t) and t[-1] > t[0]
    if preset == "onpolicy_rkl":
        assert _column(rows, "train/clip_frac") == [0.0] * 3


def test_the_logged_on_policy_batches_are_the_seeded_draws(compose, tmp_path):
    """The mix end to end: each step's train/on_policy is the module generator's draw (seed + 5)."""
    cfg = compose(
        smoke_overrides(
            tmp_path,
            "objective=gkd",
            "trainer.max_steps=12",
            "logger=csv",
            "eval.compare=false",
            "eval.num_samples=2",
        )
    )
    train(cfg)
    logged = _column(_rows(tmp_path / "run"), "train/on_policy")
    generator = torch.Generator().manual_seed(cfg.seed + 5)
    assert logged == [float(torch.rand((), generator=generator) < 0.5) for _ in range(12)]
    assert 0 < sum(logged) < 12


# --------------------------------------------------------------------------- exact resume


RESUMABLE = {
    # φ = 1 and a buffer of 6 (batches of 4): fresh batches fill it, then fresh and replayed ones mix
    "distillm": ["objective=distillm", "objective.init_threshold=1.0", "objective.replay_capacity=6"],
    "gkd": ["objective=gkd"],
    "taid": ["objective=taid"],
    "distillm2-epoch": ["objective=distillm2", "data.n_train=24"],  # 6 batches: step 5 in the 1st epoch
}


@pytest.mark.parametrize("name", sorted(RESUMABLE))
def test_stop_and_resume_equals_straight_run(compose, tmp_path, name):
    extra = [
        *RESUMABLE[name],
        "trainer.max_steps=10",
        "logger=csv",
        "eval.compare=false",
        "eval.num_samples=2",
    ]

    def run(folder, *more):
        return train(compose(smoke_overrides(tmp_path, *extra, *more), run_dir=tmp_path / folder))

    straight = run("straight")
    with pytest.raises(RunInterrupted):
        run("stopped", "fit.stop_at_step=5")
    ckpt = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=False)["minillm"]
    if name == "distillm":  # the replay buffer is in the checkpoint, full
        assert len(state["buffer"]) == 6 and state["threshold"] == 1.0
    resumed = run("resume", f"ckpt_path={ckpt}")
    assert resumed["final_weights_sha1"] == straight["final_weights_sha1"]
    assert _rows(tmp_path / "straight") == _rows(tmp_path / "stopped")
    if name == "distillm":
        rows = _rows(tmp_path / "straight")
        assert sum(_column(rows, "train/replayed")[5:]) >= 1  # drawn from the restored buffer


# --------------------------------------------------------------------------- the study


def _study_arms() -> list[str]:
    from omegaconf import OmegaConf

    from .conftest import CONF

    params = OmegaConf.load(CONF / "experiment" / "methods_compare.yaml").hydra.sweeper.params
    return str(params["+arm"]).split(",")


def test_methods_compare_arms_and_budgets_compose_and_validate(compose):
    arms = _study_arms()
    assert len(arms) == 10
    objectives = set()
    for arm in arms:
        for budget, limits in (("equal_time", ("00:00:00:45", -1)), ("equal_steps", (None, 100))):
            cfg = compose(["experiment=methods_compare", f"+arm={arm}", f"budget={budget}"])
            validate_config(cfg)
            name = arm.split("/")[-1]
            assert cfg.run_name == f"{name}-{budget}-s0"
            assert (cfg.trainer.max_time, cfg.trainer.max_steps) == limits
            assert cfg.fit.num_threads == 1 and list(cfg.eval.seeds) == [0, 1, 2]
            objectives.add(cfg.objective.name)
            if cfg.objective.name in ("distillm", "taid"):  # their schedules span the equal-steps budget
                assert cfg.objective.schedule_steps == 100
    assert objectives == {
        "sft", "forward_kld", "seqkd", "reverse_kld", "onpolicy_rkl", "token_kd", "gkd", "distillm",
        "distillm2", "taid",
    }  # fmt: skip
    # SeqKD and DistiLLM-2 share one cache of teacher samples (same provenance keys)
    seqkd = compose(["experiment=methods_compare", "+arm=methods_compare/seqkd"]).objective
    distillm2 = compose(["experiment=methods_compare", "+arm=methods_compare/distillm2"]).objective
    for key in ("temperature", "max_new_tokens", "seed", "batch_size"):
        assert seqkd[key] == distillm2[key], key


def test_a_methods_compare_arm_runs_through_the_study_config(compose, tmp_path):
    cfg = compose(
        smoke_overrides(
            tmp_path,
            "experiment=methods_compare",
            "+arm=methods_compare/distillm",
            "budget=equal_steps",
            "logger=csv",
            "eval.num_samples=4",
            "eval.seeds=[0,1]",
        )
    )
    results = train(cfg)
    assert results["config"]["run_name"] == "distillm-equal_steps-s0" and results["global_step"] == 3
    assert json.loads((tmp_path / "run" / "timing.json").read_text())["optimizer_steps"] == 3
