"""Rollout engine: teacher-mixed lockstep sampling with KV caches, and the rollout buffer."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from minillm.errors import MinillmError
from minillm.rollout.buffer import RolloutBuffer
from minillm.rollout.options import SamplingOptions
from minillm.rollout.sampler import Rollout, draw, generate, sample_rollouts

VOCAB = 50
PAD, EOS = 0, 1


def _tiny(kind: str, seed: int, vocab: int = VOCAB) -> nn.Module:
    """A tiny random causal LM; initializer_range is large so logits are far from uniform."""
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, initializer_range=0.3)
    if kind == "gpt2":
        config = GPT2Config(
            n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=EOS, eos_token_id=EOS, **common
        )
        return GPT2LMHeadModel(config).eval()
    # the Llama-style decoders (llama, qwen2, mistral) share one shape
    decoder = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        **common,
    )
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(tie_word_embeddings=False, **decoder))
    elif kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**decoder))
    elif kind == "mistral":  # a sliding window of 8: a short decoding runs past it
        from transformers import MistralConfig, MistralForCausalLM

        model = MistralForCausalLM(MistralConfig(sliding_window=8, **decoder))
    elif kind == "opt":
        cfg = OPTConfig(
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            word_embed_proj_dim=32,
            **common,
        )
        model = OPTForCausalLM(cfg)
    else:
        raise ValueError(kind)
    return model.eval()


def _prompts(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded random prompts (tokens 2.., so never PAD or EOS)."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), PAD, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, width - n :] = torch.randint(2, VOCAB, (n,), generator=g)
        mask[i, width - n :] = 1
    return ids, mask


def _bias_eos(model: nn.Module, bias: float, eos: int = EOS) -> nn.Module:
    """Give the model's head a bias toward ``eos`` (replaces lm_head with an untied, biased copy)."""
    old = model.lm_head
    head = nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[eos] = bias
    model.lm_head = head
    return model


def _teacher_forced(model: nn.Module, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the response tokens and the logits predicting them, from one full forward pass."""
    input_ids, attention_mask, position_ids = rollout.full_input()
    p, t = rollout.prompt_ids.shape[1], rollout.response_ids.shape[1]
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    logits = logits[:, p - 1 : p + t - 1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, rollout.response_ids.unsqueeze(-1)).squeeze(-1)
    return logp, logits


def _tv(counts: torch.Tensor, probs: torch.Tensor) -> float:
    return 0.5 * (counts / counts.sum() - probs).abs().sum().item()


# ---------------------------------------------------------------- sampling distribution


@pytest.fixture(scope="module")
def pair():
    return _tiny("llama", seed=1), _tiny("llama", seed=2)


# 0.2 and 0.8 are the values that tell α·p + (1−α)·q from its swap (1−α)·p + α·q; 0.5 cannot, and 0 and 1
# take other code paths.
@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_first_token_follows_mixture(pair, alpha):
    """The first token is drawn from p̃ = α·p + (1−α)·q (teacher p, student q), and its recorded log p̃ is
    that mixture's; frequencies over 8000 draws lie within sampling noise of p̃ and far from the swap."""
    student, teacher = pair
    n = 8000
    prompt_ids = torch.full((n, 1), 7, dtype=torch.long)
    prompt_mask = torch.ones_like(prompt_ids)
    with torch.no_grad():
        q = torch.softmax(student(input_ids=prompt_ids[:1]).logits[0, -1].float(), -1)
        p = torch.softmax(teacher(input_ids=prompt_ids[:1]).logits[0, -1].float(), -1)
    assert 0.5 * (p - q).abs().sum() > 0.3, "fixture models too similar for the test to discriminate"
    mix = alpha * p + (1 - alpha) * q

    g = torch.Generator().manual_seed(0)
    r = sample_rollouts(
        student,
        teacher,
        prompt_ids,
        prompt_mask,
        SamplingOptions(max_new_tokens=1, teacher_mix_alpha=alpha, eos_token_id=EOS, pad_token_id=PAD),
        generator=g,
    )
    tokens = r.response_ids[:, 0]
    counts = torch.bincount(tokens, minlength=VOCAB).float()
    assert _tv(counts, mix) < 0.04
    other = q if alpha > 0 else p
    assert _tv(counts, other) > 0.1 or alpha == 0.5
    swapped = (1 - alpha) * p + alpha * q
    assert _tv(counts, swapped) > 0.1 or alpha == 0.5
    torch.testing.assert_close(r.mix_logprobs[:, 0], mix.log()[tokens], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r.student_logprobs[:, 0], q.log()[tokens], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r.teacher_logprobs[:, 0], p.log()[tokens], atol=1e-5, rtol=1e-5)
    assert r.response_mask.all()


def test_alpha_zero_ignores_teacher_for_sampling_but_records_it(pair):
    student, teacher = pair
    prompt_ids, prompt_mask = _prompts([3, 1, 4, 2])
    sampling = SamplingOptions(max_new_tokens=6, teacher_mix_alpha=0.0, eos_token_id=EOS, pad_token_id=PAD)
    without = sample_rollouts(
        student, None, prompt_ids, prompt_mask, sampling, generator=torch.Generator().manual_seed(5)
    )
    with_t = sample_rollouts(
        student, teacher, prompt_ids, prompt_mask, sampling, generator=torch.Generator().manual_seed(5)
    )
    assert without.teacher_logprobs is None
    assert torch.equal(without.response_ids, with_t.response_ids)
    torch.testing.assert_close(without.student_logprobs, with_t.student_logprobs)
    # With alpha = 0 the sampled-from distribution is the student's own.
    torch.testing.assert_close(with_t.mix_logprobs, with_t.student_logprobs)
    ref, _ = _teacher_forced(teacher, with_t)
    m = with_t.response_mask.bool()
    torch.testing.assert_close(with_t.teacher_logprobs[m], ref[m], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- KV cache == full forward


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen2", "opt"])
def test_incremental_logprobs_match_full_forward(kind):
    student, teacher = _tiny(kind, seed=3), _tiny(kind, seed=4)
    prompt_ids, prompt_mask = _prompts([2, 6, 4, 1], seed=1)
    r = sample_rollouts(
        student,
        teacher,
        prompt_ids,
        prompt_mask,
        SamplingOptions(max_new_tokens=7, teacher_mix_alpha=0.3, eos_token_id=None, pad_token_id=PAD),
        generator=torch.Generator().manual_seed(0),
        keep_teacher_logits=True,
    )
    assert r.response_ids.shape == (4, 7) and r.response_mask.all()
    s_ref, _ = _teacher_forced(student, r)
    t_ref, t_logits = _teacher_forced(teacher, r)
    torch.testing.assert_close(r.student_logprobs, s_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r.teacher_logprobs, t_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r.teacher_logits.float(), t_logits, atol=1e-5, rtol=1e-5)
    # mix_logprobs lie between the two components' log-probs (a mixture is a convex combination).
    lo = torch.minimum(r.student_logprobs, r.teacher_logprobs) - 1e-5
    hi = torch.maximum(r.student_logprobs, r.teacher_logprobs) + 1e-5
    assert ((r.mix_logprobs >= lo) & (r.mix_logprobs <= hi)).all()


@pytest.mark.parametrize("kind", ["llama", "opt"])
def test_teacher_mixed_sampling_at_a_temperature_records_temperature_one_logprobs(kind):
    """Sampling at τ = 0.7 with the teacher mixed in (α = 0.3): the tokens come from α·p_τ + (1−α)·q_τ, but
    the recorded teacher and student log-probs (what rewards and the PPO ratio read) are those of the
    temperature-1 distributions, equal to a full teacher-forced forward of each model. The mixture's
    log-prob is the tempered mixture's, checked against one computed here from the two forwards."""
    student, teacher = _tiny(kind, seed=5), _tiny(kind, seed=6)
    prompt_ids, prompt_mask = _prompts([3, 5, 1, 4], seed=2)
    alpha, tau = 0.3, 0.7
    r = sample_rollouts(
        student,
        teacher,
        prompt_ids,
        prompt_mask,
        SamplingOptions(
            max_new_tokens=6, teacher_mix_alpha=alpha, eos_token_id=None, pad_token_id=PAD, temperature=tau
        ),
        generator=torch.Generator().manual_seed(0),
    )
    assert r.response_mask.all()
    s_ref, s_logits = _teacher_forced(student, r)
    t_ref, t_logits = _teacher_forced(teacher, r)
    torch.testing.assert_close(r.teacher_logprobs, t_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r.student_logprobs, s_ref, atol=1e-5, rtol=1e-5)
    tempered = alpha * torch.softmax(t_logits / tau, -1) + (1 - alpha) * torch.softmax(s_logits / tau, -1)
    mix_ref = tempered.log().gather(-1, r.response_ids.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(r.mix_logprobs, mix_ref, atol=1e-5, rtol=1e-5)
    # the test can tell the two temperatures apart: the tempered log-probs differ from the recorded ones
    t_tempered = torch.log_softmax(t_logits / tau, -1).gather(-1, r.response_ids.unsqueeze(-1)).squeeze(-1)
    assert (t_tempered - t_ref).abs().max() > 1e-2


def test_one_forward_per_model_per_token_no_prefix_recompute(pair):
    student, teacher = pair
    seen = {"student": [], "teacher": []}
    hooks = [
        m.register_forward_hook(
            lambda mod, args, kwargs, out, k=k: seen[k].append(kwargs["input_ids"].shape[1]), with_kwargs=True
        )
        for k, m in (("student", student), ("teacher", teacher))
    ]
    try:
        prompt_ids, prompt_mask = _prompts([5, 3])
        r = sample_rollouts(
            student,
            teacher,
            prompt_ids,
            prompt_mask,
            SamplingOptions(max_new_tokens=6, teacher_mix_alpha=0.2, eos_token_id=None, pad_token_id=PAD),
            generator=torch.Generator().manual_seed(0),
        )
    finally:
        for h in hooks:
            h.remove()
    assert r.response_ids.shape[1] == 6
    # Prefill over the prompt, then one single-token step per further token (the last token is not fed).
    assert seen["student"] == seen["teacher"] == [5, 1, 1, 1, 1, 1]


# ---------------------------------------------------------------- EOS handling


@pytest.mark.parametrize("pad_id", [PAD, EOS])  # pad == eos is the GPT-2 convention
def test_rows_stop_at_eos_and_are_masked_after(pad_id):
    student = _bias_eos(_tiny("gpt2", seed=5), bias=4.0)
    teacher = _tiny("gpt2", seed=6)
    prompt_ids, prompt_mask = _prompts([3, 5, 2, 4, 1, 3, 2, 5])
    max_new = 40
    r = sample_rollouts(
        student,
        teacher,
        prompt_ids,
        prompt_mask,
        SamplingOptions(max_new_tokens=max_new, teacher_mix_alpha=0.0, eos_token_id=EOS, pad_token_id=pad_id),
        generator=torch.Generator().manual_seed(1),
    )
    t = r.response_ids.shape[1]
    assert t < max_new, "loop should end early once every row has emitted EOS"
    lengths = r.response_mask.sum(1)
    assert len(set(lengths.tolist())) > 1, "fixture should make rows finish at different steps"
    assert lengths.max() == t
    for row in range(len(r)):
        n = int(lengths[row])
        ids = r.response_ids[row]
        assert ids[n - 1] == EOS, "the EOS itself is inside the mask"
        assert (ids[: n - 1] != EOS).all()
        assert (ids[n:] == pad_id).all()
        assert r.response_mask[row, :n].all() and not r.response_mask[row, n:].any()
        assert (r.student_logprobs[row, n:] == 0).all() and (r.teacher_logprobs[row, n:] == 0).all()
    # Rows still running after others finished are unaffected by the pad tokens fed to finished rows.
    s_ref, _ = _teacher_forced(student, r)
    m = r.response_mask.bool()
    torch.testing.assert_close(r.student_logprobs[m], s_ref[m], atol=1e-5, rtol=1e-5)


def test_all_rows_finish_at_first_token():
    student = _bias_eos(_tiny("llama", seed=7), bias=100.0)
    prompt_ids, prompt_mask = _prompts([2, 3])
    calls = []
    hook = student.register_forward_hook(lambda *a: calls.append(1))
    try:
        r = generate(
            student,
            prompt_ids,
            prompt_mask,
            SamplingOptions(max_new_tokens=20, eos_token_id=EOS, pad_token_id=PAD),
        )
    finally:
        hook.remove()
    assert r.response_ids.tolist() == [[EOS], [EOS]]
    assert r.response_mask.tolist() == [[1], [1]]
    assert len(calls) == 1


# ---------------------------------------------------------------- reproducibility, modes, options


def test_same_seed_same_rollout(pair):
    student, teacher = pair
    prompt_ids, prompt_mask = _prompts([3, 1, 4])
    sampling = SamplingOptions(max_new_tokens=8, teacher_mix_alpha=0.4, eos_token_id=EOS, pad_token_id=PAD)
    kw = dict(keep_teacher_logits=True)
    a = sample_rollouts(
        student, teacher, prompt_ids, prompt_mask, sampling, generator=torch.Generator().manual_seed(11), **kw
    )
    b = sample_rollouts(
        student, teacher, prompt_ids, prompt_mask, sampling, generator=torch.Generator().manual_seed(11), **kw
    )
    c = sample_rollouts(
        student, teacher, prompt_ids, prompt_mask, sampling, generator=torch.Generator().manual_seed(12), **kw
    )
    for name in (
        "response_ids",
        "response_mask",
        "student_logprobs",
        "teacher_logprobs",
        "mix_logprobs",
        "teacher_logits",
    ):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.response_ids, c.response_ids)


@pytest.mark.parametrize("shape", [(3, 37), (8, 2048), (5, 49152), (1, 7)])
def test_draw_is_torch_multinomial_token_for_token_and_leaves_the_generator_alike(shape):
    # draw() replaces torch.multinomial(p, 1) on CPU: the same tokens and the same generator state after, at
    # uneven, unnormalised probabilities with zeros (a top-k cut) and a near-point-mass row
    gen = torch.Generator().manual_seed(3)
    for trial in range(20):
        logits = torch.randn(shape, generator=gen) * (0.3 + trial)
        logits[0, : shape[1] // 3] = float("-inf")  # zeros in a row
        probs = torch.softmax(logits, -1) * 0.7
        a, b = torch.Generator().manual_seed(100 + trial), torch.Generator().manual_seed(100 + trial)
        expected = torch.multinomial(probs, 1, generator=a).squeeze(-1)
        got = draw(probs, b)
        assert torch.equal(got, expected)
        assert torch.equal(a.get_state(), b.get_state())
        assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))  # the next draws agree too


@pytest.mark.parametrize("layout", ["transposed", "float64", "bfloat16", "one row, 1-D"])
def test_draw_is_torch_multinomial_for_other_layouts_and_dtypes(layout):
    # a permuted (dense, not row-major) tensor, other dtypes, a 1-D distribution: the same tokens and state
    gen = torch.Generator().manual_seed(4)
    probs = torch.softmax(torch.randn(6, 300, generator=gen) * 2, -1)
    probs = {
        "transposed": torch.softmax(torch.randn(300, 6, generator=gen) * 2, 0).t(),
        "float64": probs.double(),
        "bfloat16": probs.bfloat16(),
        "one row, 1-D": probs[0],
    }[layout]
    a, b = torch.Generator().manual_seed(8), torch.Generator().manual_seed(8)
    expected = torch.multinomial(probs, 1, generator=a).squeeze(-1)
    assert torch.equal(draw(probs, b), expected) and torch.equal(a.get_state(), b.get_state())


def test_draw_refuses_a_row_with_no_distribution():
    probs = torch.softmax(torch.randn(3, 11), -1)
    for bad in (float("nan"), float("inf"), -0.1):
        broken = probs.clone()
        broken[1, 4] = bad
        with pytest.raises(RuntimeError, match="NaN, inf, negative or only zero"):
            draw(broken, torch.Generator().manual_seed(0))
    broken = probs.clone()
    broken[2] = 0.0
    with pytest.raises(RuntimeError, match="only zero"):
        draw(broken, torch.Generator().manual_seed(0))


def test_greedy_generate_is_deterministic_argmax(pair):
    student, _ = pair
    prompt_ids, prompt_mask = _prompts([4, 2, 3])
    greedy = SamplingOptions(max_new_tokens=6, eos_token_id=None, pad_token_id=PAD, temperature=0.0)
    a = generate(student, prompt_ids, prompt_mask, greedy, generator=torch.Generator().manual_seed(0))
    b = generate(student, prompt_ids, prompt_mask, greedy, generator=torch.Generator().manual_seed(99))
    assert torch.equal(a.response_ids, b.response_ids)
    assert a.teacher_logprobs is None and a.teacher_logits is None
    assert (a.mix_logprobs == 0).all()  # a point mass
    _, logits = _teacher_forced(student, a)
    assert torch.equal(logits.argmax(-1), a.response_ids)
    # top_k = 1 and a tiny top_p also reduce sampling to the argmax.
    for extra in (dict(top_k=1), dict(top_p=1e-6)):
        kw_s = dataclasses.replace(greedy, temperature=1.0, **extra)
        s = generate(student, prompt_ids, prompt_mask, kw_s, generator=torch.Generator().manual_seed(3))
        assert torch.equal(s.response_ids, a.response_ids), extra
        torch.testing.assert_close(s.mix_logprobs, torch.zeros_like(s.mix_logprobs))


def test_top_k_restricts_support_and_logprobs_stay_at_temperature_one(pair):
    student, _ = pair
    n = 2000
    prompt_ids = torch.full((n, 1), 9, dtype=torch.long)
    r = generate(
        student,
        prompt_ids,
        torch.ones_like(prompt_ids),
        SamplingOptions(max_new_tokens=1, eos_token_id=None, pad_token_id=PAD, temperature=0.7, top_k=3),
        generator=torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        logits = student(input_ids=prompt_ids[:1]).logits[0, -1].float()
    top3 = torch.topk(logits, 3).indices
    tokens = r.response_ids[:, 0]
    assert torch.isin(tokens, top3).all()
    filtered = torch.full_like(logits, float("-inf"))
    filtered[top3] = logits[top3] / 0.7
    torch.testing.assert_close(r.mix_logprobs[:, 0], torch.log_softmax(filtered, -1)[tokens])
    torch.testing.assert_close(r.student_logprobs[:, 0], torch.log_softmax(logits, -1)[tokens])


def test_train_mode_restored(pair):
    student, teacher = pair
    student.train()
    try:
        prompt_ids, prompt_mask = _prompts([2, 3])
        sample_rollouts(
            student,
            teacher,
            prompt_ids,
            prompt_mask,
            SamplingOptions(max_new_tokens=2, teacher_mix_alpha=0.2, eos_token_id=EOS, pad_token_id=PAD),
            generator=torch.Generator().manual_seed(0),
        )
        assert student.training and not teacher.training
    finally:
        student.eval()


def test_bad_arguments_name_the_argument(pair):
    """Bad options are refused when built (test_sampling_options_…); these are refused by the sampler."""
    student, teacher = pair
    prompt_ids, prompt_mask = _prompts([2, 3])
    mixed = SamplingOptions(max_new_tokens=2, eos_token_id=EOS, pad_token_id=PAD, teacher_mix_alpha=0.2)
    with pytest.raises(MinillmError, match="alpha"):
        dataclasses.replace(mixed, teacher_mix_alpha=1.5)
    with pytest.raises(MinillmError, match="max_new_tokens"):
        dataclasses.replace(mixed, max_new_tokens=0)
    with pytest.raises(MinillmError, match="teacher"):
        sample_rollouts(student, None, prompt_ids, prompt_mask, mixed)
    with pytest.raises(MinillmError, match="left-padded"):
        sample_rollouts(student, teacher, prompt_ids.flip(1), prompt_mask.flip(1), mixed)
    other = _tiny("llama", seed=8, vocab=VOCAB + 4)
    with pytest.raises(MinillmError, match="vocab"):
        sample_rollouts(student, other, prompt_ids, prompt_mask, mixed)


# ---------------------------------------------------------------- buffer


def _fake_rollout(batch: int, prompt_len: int, resp_len: int, offset: int, vocab: int = 5) -> Rollout:
    """Rows tagged by value (offset + row) so they can be tracked through shuffles."""
    tag = torch.arange(offset, offset + batch)
    prompt_ids = tag[:, None].repeat(1, prompt_len)
    prompt_mask = torch.ones(batch, prompt_len, dtype=torch.long)
    prompt_mask[0, 0] = 0
    response_mask = torch.ones(batch, resp_len, dtype=torch.long)
    response_mask[-1, -1] = 0
    lp = tag[:, None].float().repeat(1, resp_len) * response_mask
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=tag[:, None].repeat(1, resp_len),
        response_mask=response_mask,
        student_logprobs=-lp,
        teacher_logprobs=-2 * lp,
        mix_logprobs=-3 * lp,
        teacher_logits=torch.randn(batch, resp_len, vocab) * response_mask[..., None],
        pad_token_id=PAD,
    )


def test_minibatches_cover_every_row_once_per_epoch():
    rollout = _fake_rollout(11, 3, 6, offset=0)
    rollout.response_mask[:5, 4:] = 0  # the first five responses are 4 tokens long
    rollout.prompt_mask[:5, 0] = 0  # and their prompts 2
    buf = RolloutBuffer()
    buf.add(rollout)
    assert len(buf) == 11
    g = torch.Generator().manual_seed(0)
    order = buf.minibatch_order(4, 2, generator=g)
    assert [len(i) for i in order] == [4, 4, 3, 4, 4, 3]  # two passes of 11 rows in fours
    passes = []
    for indices in (order[:3], order[3:]):
        seen = []
        for mb in (buf.minibatch(i) for i in indices):
            seen += mb.response_ids[:, 0].tolist()
            # Each row keeps its own data: log-probs follow the row's tag.
            assert torch.equal(mb.student_logprobs[:, 0], -mb.response_ids[:, 0].float())
        assert sorted(seen) == list(range(11))
        passes.append(seen)
    assert passes[0] != passes[1]
    again = buf.minibatch_order(4, 2, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(order, again, strict=True))  # reproducible from the seed
    # A minibatch drops the padding columns it does not need.
    first = buf.minibatch(torch.arange(5))
    assert first.response_ids.shape[1] == 4 and first.prompt_ids.shape[1] == 2
    with pytest.raises(MinillmError, match="batch_size"):
        buf.minibatch_order(0)


def test_buffer_state_dict_round_trip(tmp_path):
    buf = RolloutBuffer()
    buf.add(_fake_rollout(5, 3, 4, offset=0))
    with pytest.raises(MinillmError, match="clear"):  # one round at a time
        buf.add(_fake_rollout(2, 3, 4, offset=10))
    path = tmp_path / "buf.pt"
    torch.save(buf.state_dict(), path)
    restored = RolloutBuffer()
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert len(restored) == 5
    for name, value in buf.rollout().__dict__.items():
        other = getattr(restored.rollout(), name)
        assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other, name
    restored.clear()
    assert len(restored) == 0 and restored.state_dict() == {"rollout": None}
    empty = RolloutBuffer()
    empty.load_state_dict({"rollout": None})
    assert len(empty) == 0


def test_alpha_zero_one_teacher_pass_equals_lockstep(pair):
    """At α = 0 the teacher scores the finished responses in one pass: same tokens, same teacher
    log-probs and logits as decoding it in lockstep."""
    student, teacher = pair
    prompt_ids, prompt_mask = _prompts([3, 1, 4, 2])
    sampling = SamplingOptions(max_new_tokens=7, teacher_mix_alpha=0.0, eos_token_id=EOS, pad_token_id=PAD)
    runs = [
        sample_rollouts(
            student,
            teacher,
            prompt_ids,
            prompt_mask,
            sampling,
            generator=torch.Generator().manual_seed(11),
            teacher_after_decoding=after,
            keep_teacher_logits=True,
        )
        for after in (False, True)
    ]
    lock, single = runs
    assert torch.equal(lock.response_ids, single.response_ids)
    assert torch.equal(lock.response_mask, single.response_mask)
    torch.testing.assert_close(lock.student_logprobs, single.student_logprobs)
    torch.testing.assert_close(lock.teacher_logprobs, single.teacher_logprobs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lock.teacher_logits, single.teacher_logits, atol=1e-4, rtol=1e-4)
    assert (single.teacher_logits[~single.response_mask.bool()] == 0).all()


# ---------------------------------------------------------------- sampling options


def test_sampling_options_read_the_config_node_and_refuse_bad_values():
    """``SamplingOptions.from_config`` reads max_new_tokens, temperature, top_k and top_p from the node it
    is given (defaults 1.0 / 0 / 1.0 where the node lacks them); each bad value is refused naming it."""
    from omegaconf import OmegaConf

    node = OmegaConf.create({"max_new_tokens": 7, "temperature": 0.7, "top_k": 3, "top_p": 0.8})
    got = SamplingOptions.from_config(node, eos_token_id=[EOS, 5], pad_token_id=PAD, teacher_mix_alpha=0.2)
    assert got == SamplingOptions(
        max_new_tokens=7,
        eos_token_id=(EOS, 5),
        pad_token_id=PAD,
        temperature=0.7,
        top_k=3,
        top_p=0.8,
        teacher_mix_alpha=0.2,
    )
    bare = SamplingOptions.from_config(
        {"max_new_tokens": 9}, eos_token_id=None, pad_token_id=PAD, max_new_tokens=4
    )
    assert (bare.max_new_tokens, bare.temperature, bare.top_k, bare.top_p, bare.teacher_mix_alpha) == (
        4,
        1.0,
        0,
        1.0,
        0,
    )
    for bad, name in (
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(temperature=-0.1), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.2), "top_p"),
        (dict(teacher_mix_alpha=-0.2), "alpha"),
    ):
        with pytest.raises(MinillmError, match=name):
            dataclasses.replace(got, **bad)


def test_generate_refuses_a_teacher_mix(pair):
    """``generate`` samples one model: options with α > 0 are refused, not silently sampled at α = 0."""
    student, _ = pair
    prompt_ids, prompt_mask = _prompts([2, 3])
    mixed = SamplingOptions(max_new_tokens=2, eos_token_id=EOS, pad_token_id=PAD, teacher_mix_alpha=0.2)
    with pytest.raises(MinillmError, match="teacher_mix_alpha"):
        generate(student, prompt_ids, prompt_mask, mixed)
