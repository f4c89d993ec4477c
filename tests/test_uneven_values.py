"""Issue 25's last item: parameters of the estimators and their wiring checked at uneven values.

Each test here covers a parameter the rest of the suite reached only at values where a wrong formula gives
the right answer (a ratio of 0.5, a temperature of 1 or 2, one-token responses, no top-k / top-p with a
teacher mixed in), against a value computed independently in float64 (plain Python loops over tokens and
vocabulary entries, no library code). Each was checked to fail under the mutations its docstring names
(scratch edits, reverted) that left green the files which tested that code before: test_policy_gradient,
_divergences, _token_kd, _pretrain_loss, _on_policy, _rollout, _evaluation, _bench, _training_optim,
_architecture, _config and the hinton_kd smoke run.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate

from minillm.rollout.options import SamplingOptions
from minillm.rollout.sampler import Rollout, generate, sample_rollouts

from .test_rollout import EOS, PAD, VOCAB, _bias_eos, _prompts, _teacher_forced, _tiny

F64 = torch.float64


# --------------------------------------------------------------------------- plain-Python helpers


def _log_softmax(row: list[float], tau: float = 1.0) -> list[float]:
    scaled = [x / tau for x in row]
    top = max(scaled)
    log_z = top + math.log(sum(math.exp(x - top) for x in scaled))
    return [x - log_z for x in scaled]


def _softmax(row: list[float], tau: float = 1.0) -> list[float]:
    return [math.exp(x) for x in _log_softmax(row, tau)]


def _kl(a: list[float], b: list[float]) -> float:
    return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True) if x > 0)


def _nucleus(probs: list[float], top_k: int, top_p: float) -> list[float]:
    """``probs`` restricted to its top_k most likely entries (0: all), renormalised, then to the smallest
    prefix (in decreasing order) whose mass reaches top_p (an entry stays while the mass before it is below
    top_p), renormalised again."""
    order = sorted(range(len(probs)), key=lambda v: -probs[v])
    kept = order[:top_k] if top_k > 0 else order
    mass = sum(probs[v] for v in kept)
    nucleus, before = [], 0.0
    for v in kept:
        if before / mass < top_p:
            nucleus.append(v)
        before += probs[v]
    total = sum(probs[v] for v in nucleus)
    return [probs[v] / total if v in nucleus else 0.0 for v in range(len(probs))]


def _sampled_from(s_row, t_row, alpha: float, tau: float, top_k: int, top_p: float) -> list[float]:
    """The distribution MiniLLM samples a token from: p̃ = α·p_τ + (1−α)·q_τ (teacher p, student q, each at
    temperature τ), then top-k / top-p filtered and renormalised."""
    q, p = _softmax(s_row, tau), _softmax(t_row, tau)
    return _nucleus([alpha * x + (1 - alpha) * y for x, y in zip(p, q, strict=True)], top_k, top_p)


def _tv(a: list[float], b: list[float]) -> float:
    return 0.5 * sum(abs(x - y) for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------------- supervised presets


def _supervised_batch():
    gen = torch.Generator().manual_seed(7)
    student = torch.randn(2, 6, 5, generator=gen, dtype=F64) * 2
    teacher = torch.randn(2, 6, 5, generator=gen, dtype=F64) * 2
    # ragged: 4 response tokens in the first row, 2 in the second (prompt and padding at -100)
    labels = torch.tensor([[-100, -100, 3, 1, 4, 0], [-100, -100, -100, 2, 0, -100]])
    return student, teacher, labels


def _supervised_by_hand(student, teacher, labels, kd_ratio: float, tau: float) -> tuple[float, float, float]:
    """(CE, KL(p_τ‖q_τ), (1 − r)·CE + r·τ²·KL), means over the response tokens, in plain Python."""
    ce, kl, n = 0.0, 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):  # position t predicts label t + 1
            target = int(labels[b, t + 1])
            if target == -100:
                continue
            s, p_row = student[b, t].tolist(), teacher[b, t].tolist()
            ce -= _log_softmax(s)[target]
            kl += _kl(_softmax(p_row, tau), _softmax(s, tau))
            n += 1
    ce, kl = ce / n, kl / n
    return ce, kl, (1 - kd_ratio) * ce + kd_ratio * tau**2 * kl


@pytest.mark.parametrize(
    ("preset", "tau"), [("forward_kld", 1.0), ("seqkd", 1.0), ("hinton_kd", 0.7)], ids=str
)
def test_supervised_preset_losses_at_kd_ratio_0_2(compose, preset, tau):
    """``objective.loss`` as the supervised module instantiates it from the preset, at kd_ratio = 0.2 (the
    presets' default 0.5 cannot tell (1 − r)·CE + r·KL from r·CE + (1 − r)·KL) and, for hinton_kd, at
    τ = 0.7 (its preset's τ = 2 and r = 0.5 are also temperature_kd_loss's own defaults, so a key the preset
    fails to pass on goes unseen at them). Loss and logged terms against plain Python. Mutations caught:
    supervised_loss passing 1 − kd_ratio; its ce_loss / kd_kl logs swapped; hinton_kd.yaml's loss node
    without its temperature or its kd_ratio line."""
    overrides = [f"objective={preset}", "objective.kd_ratio=0.2"]
    if preset == "hinton_kd":
        overrides.append(f"objective.temperature={tau}")
    loss_fn = instantiate(compose(overrides).objective.loss, _convert_="all")
    student, teacher, labels = _supervised_batch()
    loss, logs = loss_fn(student, labels, lambda: teacher)
    ce, kl, total = _supervised_by_hand(student, teacher, labels, 0.2, tau)
    assert float(logs["ce_loss"]) == pytest.approx(ce, rel=1e-6)  # the cross-entropy runs in float32
    assert float(logs["kd_kl"]) == pytest.approx(kl, rel=1e-9)
    assert float(loss) == pytest.approx(total, rel=1e-6)
    # the test can tell the swapped weights apart
    assert abs((0.2 * ce + 0.8 * tau**2 * kl) - total) > 1e-2


# --------------------------------------------------------------------------- MiniLLM's L_PT term as wired


def test_the_modules_pretrain_term_at_pt_kd_ratio_0_2(compose):
    """L_PT as ``OnPolicyModule`` computes it (objective.pt_kd_ratio read from the composed config, the
    block shifted by one, the teacher's logits on the same block), at pt_kd_ratio = 0.2: the default 0.5
    (also what test_on_policy's update test runs) cannot tell (1 − r)·LM + r·KL from its swap.
    Against plain Python on the models' logits. Mutation caught: the module passing 1 − pt_kd_ratio."""
    from minillm.models.tiny import build_model
    from minillm.training.on_policy import OnPolicyModule

    from .test_on_policy import PT_BLOCK, TEACHER_ARCH
    from .test_on_policy import VOCAB as PT_VOCAB

    obj = compose(["objective=reverse_kld", "objective.pt_coef=1.0", "objective.pt_kd_ratio=0.2"]).objective
    student = build_model(TEACHER_ARCH, PT_VOCAB, eos_token_id=0, seed=1).double().eval()
    teacher = build_model(TEACHER_ARCH, PT_VOCAB, eos_token_id=0, seed=2).double().eval()
    module = SimpleNamespace(
        student=student,
        teacher=SimpleNamespace(model=teacher),
        obj=obj,
        chunk_size=None,
        _pretrain_batch=lambda: PT_BLOCK,
    )
    loss, logs = OnPolicyModule._next_pretrain_loss(module)
    with torch.no_grad():
        s_logits, t_logits = (m(input_ids=PT_BLOCK).logits for m in (student, teacher))
    lm, kl, n = 0.0, 0.0, 0
    for b in range(PT_BLOCK.shape[0]):
        for t in range(PT_BLOCK.shape[1] - 1):
            s, p_row = s_logits[b, t].tolist(), t_logits[b, t].tolist()
            lm -= _log_softmax(s)[int(PT_BLOCK[b, t + 1])]
            kl += _kl(_softmax(p_row), _softmax(s))
            n += 1
    lm, kl = lm / n, kl / n
    assert float(logs["pt_lm_loss"]) == pytest.approx(lm, rel=1e-6)
    assert float(logs["pt_kd_kl"]) == pytest.approx(kl, rel=1e-9)
    assert float(loss.detach()) == pytest.approx(0.8 * lm + 0.2 * kl, rel=1e-6)
    assert abs((0.2 * lm + 0.8 * kl) - (0.8 * lm + 0.2 * kl)) > 1e-2  # the swap is visible here


def test_the_alpha_and_lr_horizon_counts_the_updates_rounds_take():
    """``OnPolicyModule.total_steps`` (the horizon of the α schedule without objective.alpha_steps, and of
    the lr schedule) at sizes that do not divide: 10 rollouts in minibatches of 4 over 3 inner epochs is 9
    updates a round (the buffer's own minibatch order, counted here), 5 rounds an epoch, 2 epochs: 90 (floor and
    ceil differ here; in the suite's fits they agree). Mutations caught: floor for ceil; ppo_epochs left out."""
    from minillm.rollout.buffer import RolloutBuffer
    from minillm.training.on_policy import OnPolicyModule

    rows = 10
    zeros = torch.zeros(rows, 2)
    buffer = RolloutBuffer()
    buffer.add(
        Rollout(torch.ones(rows, 1, dtype=torch.long), torch.ones(rows, 1), zeros, zeros, zeros, zeros, zeros)
    )
    per_round = len(buffer.minibatch_order(4, 3))
    assert per_round == 9
    module = SimpleNamespace(
        trainer=SimpleNamespace(max_steps=-1, max_epochs=2),
        datamodule_ref=SimpleNamespace(train_dataloader=lambda: [None] * 5),
        obj=SimpleNamespace(num_rollouts=rows, mini_batch_size=4, ppo_epochs=3),
    )
    assert OnPolicyModule.total_steps(module) == 5 * 2 * per_round


# --------------------------------------------------------------------------- the round's rollout logs


def test_rollout_logs_on_ragged_rows_at_alpha_0_3():
    """``rollout_logs`` on four rows of 5, 2, 1 and 3 tokens (the first cut at max_new_tokens, the others
    closed by EOS), sampled from a teacher mix α = 0.3, against plain Python: per-token means over the 11
    tokens, per-row means over the 4 rows. test_on_policy checks the two KL logs on one-token rows, where a
    mean per token and a mean per row agree. Mutations caught: the reward (and KL) logs divided by the rows,
    the length by the tokens, the importance weights taken outside the mask."""
    from minillm.training.round import rollout_logs

    alpha, eos = 0.3, 1
    gen = torch.Generator().manual_seed(4)
    lengths = [5, 2, 1, 3]
    mask = (torch.arange(5)[None] < torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(2, 9, (4, 5), generator=gen)
    for row, n in enumerate(lengths[1:], start=1):
        ids[row, n - 1] = eos
    ids = ids.masked_fill(mask == 0, 0)
    student = -torch.rand(4, 5, generator=gen, dtype=F64) * 3
    teacher = student + 0.2 + torch.rand(4, 5, generator=gen, dtype=F64)  # the teacher prefers these tokens
    mix = torch.logaddexp(teacher + math.log(alpha), student + math.log(1 - alpha))
    student, teacher, mix = (x * mask for x in (student, teacher, mix))
    prompt = torch.ones(4, 1, dtype=torch.long)
    rollout = Rollout(prompt, torch.ones_like(prompt), ids, mask, student, teacher, mix)
    logs = rollout_logs(rollout, alpha, eos_token_id=eos)

    tokens = [(b, t) for b in range(4) for t in range(lengths[b])]
    w = {k: math.exp(float(student[k]) - float(mix[k])) for k in tokens}
    reward = sum(float(teacher[k]) - float(student[k]) for k in tokens) / len(tokens)
    expected = {
        "rollout/reward": reward,
        "rollout/reverse_kl": -reward,
        "rollout/reverse_kl_iw": sum(w[k] * (float(student[k]) - float(teacher[k])) for k in tokens) / 11,
        "rollout/length": sum(lengths) / 4,
        "rollout/finished": 3 / 4,
        "rollout/importance_weight": sum(w.values()) / 11,
        "rollout/importance_weight_max": max(w.values()),
        "rollout/alpha": alpha,
    }
    assert expected["rollout/importance_weight_max"] < 1.0  # so a weight of 1 taken past EOS would show
    assert logs == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------- sampling with a teacher and filters

ALPHA, TAU, TOP_K, TOP_P = 0.3, 0.7, 10, 0.7


def _uneven_sampling(max_new_tokens: int) -> SamplingOptions:
    """The teacher mix, temperature, top-k and top-p at this section's uneven values."""
    return SamplingOptions(
        max_new_tokens=max_new_tokens,
        teacher_mix_alpha=ALPHA,
        eos_token_id=EOS,
        pad_token_id=PAD,
        temperature=TAU,
        top_k=TOP_K,
        top_p=TOP_P,
    )


def _first_token_logits(model, token: int) -> list[float]:
    with torch.no_grad():
        return model(input_ids=torch.tensor([[token]])).logits[0, -1].double().tolist()


def _filter_components_then_mix(s_row, t_row) -> list[float]:
    """A plausible wrong sampler: each model's tempered distribution filtered on its own, then mixed."""
    q = _nucleus(_softmax(s_row, TAU), TOP_K, TOP_P)
    p = _nucleus(_softmax(t_row, TAU), TOP_K, TOP_P)
    return [ALPHA * x + (1 - ALPHA) * y for x, y in zip(p, q, strict=True)]


def _nucleus_without_renormalising(s_row, t_row) -> list[float]:
    """Another: top-p's cumulative mass read from the mixture before top-k's renormalisation."""
    q, p = _softmax(s_row, TAU), _softmax(t_row, TAU)
    mix = [ALPHA * x + (1 - ALPHA) * y for x, y in zip(p, q, strict=True)]
    kept, before = [], 0.0
    for v in sorted(range(len(mix)), key=lambda v: -mix[v])[:TOP_K]:
        if before < TOP_P:
            kept.append(v)
        before += mix[v]
    total = sum(mix[v] for v in kept)
    return [mix[v] / total if v in kept else 0.0 for v in range(len(mix))]


def _nucleus_without_the_crossing_token(s_row, t_row) -> list[float]:
    """Another: the nucleus cut where the mass INCLUDING a token passes top_p (the top token always kept)."""
    q, p = _softmax(s_row, TAU), _softmax(t_row, TAU)
    mix = [ALPHA * x + (1 - ALPHA) * y for x, y in zip(p, q, strict=True)]
    top = sorted(range(len(mix)), key=lambda v: -mix[v])[:TOP_K]
    mass = sum(mix[v] for v in top)
    kept, through = [], 0.0
    for v in top:
        through += mix[v]
        if through / mass <= TOP_P or not kept:
            kept.append(v)
    total = sum(mix[v] for v in kept)
    return [mix[v] / total if v in kept else 0.0 for v in range(len(mix))]


def test_first_token_with_a_teacher_mixed_in_under_top_k_and_top_p():
    """α = 0.3, τ = 0.7, top_k = 10, top_p = 0.7 together: the filters act on the tempered MIXTURE, top-p on
    the mass renormalised after top-k, and the recorded log p̃ is the filtered, renormalised mixture's.
    The suite samples with top-k / top-p only from the student alone, and top-p only at 1 and 1e-6.
    8000 first tokens against the distribution enumerated here over the 50-token vocabulary, which is far
    from each wrong variant (the test can tell). Mutations caught that the suite missed: the components
    filtered before mixing; top-p's mass not renormalised after top-k; the crossing token dropped from the
    nucleus. (It also catches log p̃ recorded from the unfiltered mixture, as test_rollout's greedy test
    does.)"""
    student, teacher = _tiny("llama", seed=1), _tiny("llama", seed=2)
    s_row, t_row = _first_token_logits(student, 7), _first_token_logits(teacher, 7)
    want = _sampled_from(s_row, t_row, ALPHA, TAU, TOP_K, TOP_P)
    support = {v for v, x in enumerate(want) if x > 0}
    assert 1 < len(support) < TOP_K  # both filters bind
    wrong = {
        "components filtered": _filter_components_then_mix(s_row, t_row),
        "top-p not renormalised": _nucleus_without_renormalising(s_row, t_row),
        "crossing token dropped": _nucleus_without_the_crossing_token(s_row, t_row),
        "α swapped": _sampled_from(s_row, t_row, 1 - ALPHA, TAU, TOP_K, TOP_P),
        "temperature 1": _sampled_from(s_row, t_row, ALPHA, 1.0, TOP_K, TOP_P),
    }
    for name, other in wrong.items():
        assert _tv(want, other) > 0.1, name

    n = 8000
    prompt_ids = torch.full((n, 1), 7, dtype=torch.long)
    r = sample_rollouts(
        student,
        teacher,
        prompt_ids,
        torch.ones_like(prompt_ids),
        _uneven_sampling(1),
        generator=torch.Generator().manual_seed(0),
    )
    tokens = r.response_ids[:, 0]
    assert set(tokens.tolist()) <= support
    counts = torch.bincount(tokens, minlength=VOCAB).double()
    freq = (counts / n).tolist()
    assert _tv(freq, want) < 0.03
    for name, other in wrong.items():
        assert _tv(freq, other) > 0.07, name
    log_want = torch.tensor([math.log(x) if x > 0 else -math.inf for x in want], dtype=F64)
    torch.testing.assert_close(r.mix_logprobs[:, 0].double(), log_want[tokens], atol=1e-5, rtol=1e-5)
    # what rewards and the PPO ratio read stays at temperature 1, unfiltered
    log_q, log_p = (torch.tensor(_log_softmax(row), dtype=F64) for row in (s_row, t_row))
    torch.testing.assert_close(r.student_logprobs[:, 0].double(), log_q[tokens], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r.teacher_logprobs[:, 0].double(), log_p[tokens], atol=1e-5, rtol=1e-5)


def _check_against_teacher_forced(rollout, student, teacher, alpha, tau, top_k, top_p):
    """Every recorded per-token value of ``rollout`` against one teacher-forced pass of each model: the
    temperature-1 log-probs of both, and log p̃ of the filtered tempered mixture (plain Python per position);
    all of them, and the kept teacher logits, 0 after each row's end."""
    m = rollout.response_mask.bool()
    s_ref, s_logits = _teacher_forced(student, rollout)
    t_ref, t_logits = _teacher_forced(teacher, rollout)
    torch.testing.assert_close(rollout.student_logprobs[m], s_ref[m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rollout.teacher_logprobs[m], t_ref[m], atol=1e-5, rtol=1e-5)
    for b, t in m.nonzero().tolist():
        row = _sampled_from(s_logits[b, t].tolist(), t_logits[b, t].tolist(), alpha, tau, top_k, top_p)
        token = int(rollout.response_ids[b, t])
        assert row[token] > 0, (b, t)
        assert float(rollout.mix_logprobs[b, t]) == pytest.approx(math.log(row[token]), abs=1e-5), (b, t)
    for name in ("student_logprobs", "teacher_logprobs", "mix_logprobs"):
        assert (getattr(rollout, name)[~m] == 0).all(), name
    if rollout.teacher_logits is not None:
        torch.testing.assert_close(rollout.teacher_logits[m].float(), t_logits[m], atol=1e-5, rtol=1e-5)
        assert (rollout.teacher_logits[~m] == 0).all()


def test_lockstep_teacher_mixed_rollout_with_ragged_eos_rows():
    """The teacher decoding in lockstep (α = 0.3, τ = 0.7, top-k and top-p on) with rows that end at EOS at
    different steps: in the suite ragged EOS rows are sampled only at α = 0 and without filters. Per-token
    values against teacher-forced passes at every step of every row, and 0 after EOS. Mutations caught that
    the suite missed: the components filtered before mixing; top-p's mass not renormalised after top-k; the
    crossing token dropped from the nucleus. (It also catches the teacher's log-probs, the mixture's or the
    kept teacher logits left unmasked after EOS, as test_rollout's α = 0 tests do.)"""
    student = _bias_eos(_tiny("gpt2", seed=5), bias=4.0)
    teacher = _bias_eos(_tiny("gpt2", seed=6), bias=2.0)
    prompt_ids, prompt_mask = _prompts([3, 5, 2, 4, 1, 3, 2, 5])
    r = sample_rollouts(
        student,
        teacher,
        prompt_ids,
        prompt_mask,
        _uneven_sampling(30),
        generator=torch.Generator().manual_seed(1),
        keep_teacher_logits=True,
        teacher_after_decoding=False,
    )
    lengths = r.response_mask.sum(1)
    assert len(set(lengths.tolist())) > 2 and int(lengths.min()) < r.response_ids.shape[1]
    for row, n in enumerate(lengths.tolist()):
        assert int(r.response_ids[row, n - 1]) == EOS or n == r.response_ids.shape[1]
    _check_against_teacher_forced(r, student, teacher, ALPHA, TAU, TOP_K, TOP_P)


def test_a_round_samples_with_its_configured_alpha_temperature_top_k_and_top_p(compose):
    """``MiniLLMRound.start`` as training builds it (``RoundOptions.from_config`` of the composed reverse_kld
    objective with temperature 0.7, top_k 10, top_p 0.7) at α = 0.3: the round's rollout is the one drawn
    from that filtered tempered mixture. The suite runs rounds at temperature 1 without filters only.
    Mutations caught: objective.temperature not read into the options; the round passing temperature 1,
    top_k 0, top_p 1 or α = 0 to the sampler."""
    from minillm.training.options import RoundOptions
    from minillm.training.round import MiniLLMRound

    obj = compose(
        ["objective=reverse_kld", "objective.max_new_tokens=5", f"objective.temperature={TAU}",
         f"objective.top_k={TOP_K}", f"objective.top_p={TOP_P}"]
    ).objective  # fmt: skip
    options = RoundOptions.from_config(
        obj, grad_clip=None, eos_token_id=EOS, pad_token_id=PAD, keep_teacher_logits=True
    )
    student, teacher = _tiny("llama", seed=1), _tiny("llama", seed=2)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    prompt_ids, prompt_mask = _prompts([3, 1, 4, 2])
    state = MiniLLMRound(student, teacher, optimizer, None, options).start(
        prompt_ids, prompt_mask, alpha=ALPHA, rollout_gen=torch.Generator().manual_seed(0),
        shuffle_gen=torch.Generator().manual_seed(1),
    )  # fmt: skip
    r = state.buffer.rollout()
    assert r.response_mask.sum() > 8
    _check_against_teacher_forced(r, student.eval(), teacher, ALPHA, TAU, TOP_K, TOP_P)


# --------------------------------------------------------------------------- token-level KD's student samples


def test_token_kd_student_batches_are_sampled_at_the_configured_temperature():
    """``TokenKDModule.student_batch`` (GKD's on-policy batches) at objective.temperature = 0.7: the
    responses are what the student samples at 0.7 from the module's generator, not at 1 (the only value
    the suite samples them at). Mutations caught: student_batch or sample_student_examples dropping the
    temperature."""
    from minillm.data.datasets import Example, collate_sft
    from minillm.training.token_kd import TokenKDModule

    student = _tiny("llama", seed=3)
    tokenizer = SimpleNamespace(pad_token_id=PAD, eos_token_id=EOS)
    gold = [Example([5, 6, 7], [8, 9, EOS], 11), Example([12, 13], [14, EOS], 4), Example([20], [EOS], 2)]
    objective = {"max_new_tokens": 8, "temperature": TAU}  # as TokenKDModule reads objective.*
    sampling = SamplingOptions.from_config(objective, eos_token_id=EOS, pad_token_id=PAD)
    module = SimpleNamespace(
        student=student, tokenizer=tokenizer, sampling=sampling, sample_gen=torch.Generator().manual_seed(3),
        device="cpu",
    )  # fmt: skip
    batch = TokenKDModule.student_batch(module, collate_sft(gold, pad_token_id=PAD))
    left = torch.tensor([[5, 6, 7], [PAD, 12, 13], [PAD, PAD, 20]])

    def sampled(tau: float) -> list[list[int]]:
        out = generate(
            student,
            left,
            (left != PAD).long(),
            SamplingOptions(max_new_tokens=8, eos_token_id=EOS, pad_token_id=PAD, temperature=tau),
            generator=torch.Generator().manual_seed(3),
        )
        return [
            ids[mask.bool()].tolist() for ids, mask in zip(out.response_ids, out.response_mask, strict=True)
        ]

    responses = [
        [t for t, label in zip(ids.tolist(), labels.tolist(), strict=True) if label != -100]
        for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True)
    ]
    assert responses == sampled(TAU)
    assert sampled(1.0) != sampled(TAU)  # the test can tell the temperatures apart


# --------------------------------------------------------------------------- MiniLLM's logged ratio statistics


def test_logged_ratio_statistics_include_the_importance_weight_on_padded_rows():
    """``minillm_loss``'s logged ``ratio_mean``, ``clip_frac`` and ``advantage_mean`` on
    padded rows sampled at α = 0.3 with q_old ≠ q_θ (the paper preset: unwhitened advantages, return from
    t+1 over the summed token count), against plain Python: ratio_t = q_θ/q_old · q_old/p̃, the quantity
    the PPO clip acts on. The suite reads ratio_mean only at α = 0, where w_t = 1. Mutation caught: the
    logged ratio without w_t."""
    from minillm.objectives.policy_gradient import PGOptions, minillm_loss

    from .test_policy_gradient import padded_batch

    batch = padded_batch(0)
    options = PGOptions.paper()
    _, logs = minillm_loss(**batch, options=options)
    mask, logq = batch["mask"], batch["logprobs"].detach()
    lengths = mask.sum(1).tolist()
    ratios, taken, advs = [], [], []
    for b, length in enumerate(lengths):
        old = batch["old_logprobs"][b].tolist()
        rewards = [float(batch["teacher_logprobs"][b, k]) - old[k] for k in range(length)]
        for t in range(length):
            future = rewards[t + 1 : length]
            adv = sum(future) / max(len(future), 1)
            ratio = math.exp(float(logq[b, t]) - old[t]) * math.exp(
                old[t] - float(batch["mix_logprobs"][b, t])
            )
            clipped = min(max(ratio, 1 - options.clip_eps), 1 + options.clip_eps)
            ratios.append(ratio)
            taken.append(-adv * clipped > -adv * ratio)
            advs.append(adv)
    assert 0 < sum(taken) < len(taken)  # the clip binds on some tokens, not all
    assert float(logs["ratio_mean"]) == pytest.approx(sum(ratios) / len(ratios), rel=1e-9)
    assert float(logs["clip_frac"]) == pytest.approx(sum(taken) / len(taken), rel=1e-9)
    assert float(logs["advantage_mean"]) == pytest.approx(sum(advs) / len(advs), rel=1e-9, abs=1e-12)
    unweighted = [
        math.exp(float(logq[b, t] - batch["old_logprobs"][b, t])) for b, t in mask.nonzero().tolist()
    ]
    assert abs(sum(unweighted) / len(unweighted) - sum(ratios) / len(ratios)) > 1e-2  # the test can tell


# --------------------------------------------------------------------------- the teacher cache's budget


def test_the_teacher_cache_budget_counts_rollouts_tokens_vocabulary_and_bytes():
    """``keep_teacher_logits``: a round's kept teacher distributions are num_rollouts × max_new_tokens ×
    vocabulary values in the output layer's dtype (here 6 × 7 × 50 bf16 values: 4200 bytes). The suite sets
    only budgets of 0 (never kept) and the default (always kept at its sizes), where any formula decides
    the same. A budget just above and just below the size decides each way. Mutations caught: the element
    size left out; the hidden size read for the vocabulary."""
    from omegaconf import OmegaConf

    from minillm.training.options import keep_teacher_logits

    head = torch.nn.Linear(8, 50, bias=False).to(torch.bfloat16)  # weight (vocabulary 50, hidden 8)
    teacher = SimpleNamespace(get_output_embeddings=lambda: head)
    mib = 6 * 7 * 50 * 2 / 2**20

    def decide(budget):
        obj = OmegaConf.create(
            {"num_rollouts": 6, "max_new_tokens": 7, "cache_teacher_logits": True, "teacher_cache_mb": budget}
        )
        return keep_teacher_logits(obj, teacher)

    keep, need = decide(mib * 1.01)
    assert keep and need == pytest.approx(mib, rel=1e-12)
    assert decide(mib * 0.99)[0] is False
    assert decide(None)[0] is True
