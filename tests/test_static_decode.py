"""Static-cache decoding (``sampler.decode=static|compiled``, minillm.rollout.static_decode): the same tokens
and log-probs as the eager path for a seed, caches and compiled steps reused across rounds."""

from __future__ import annotations

import logging

import pytest
import torch
from omegaconf import OmegaConf

from minillm.errors import MinillmError
from minillm.rollout import static_decode
from minillm.rollout.options import SamplingOptions
from minillm.rollout.sampler import generate, sample_rollouts
from tests.test_rollout import EOS, PAD, VOCAB, _bias_eos, _prompts, _tiny

# Sampling settings that exercise every branch of the mixture sampler: a temperature, top-k and top-p on.
SAMPLING = dict(temperature=0.7, top_k=12, top_p=0.9)


@pytest.fixture(scope="module")
def pair():
    # an EOS bias so that rows finish at different steps (the finished rows keep being fed pads)
    return _bias_eos(_tiny("llama", seed=1), 2.0), _tiny("llama", seed=2)


def _rollout(mode: str, student, teacher, lengths: list[int], *, alpha: float, seed: int = 5, **kw):
    ids, mask = _prompts(lengths, seed=seed)
    with static_decode.decode_mode(mode):
        return sample_rollouts(
            student,
            teacher,
            ids,
            mask,
            SamplingOptions(
                max_new_tokens=12, eos_token_id=EOS, pad_token_id=PAD, teacher_mix_alpha=alpha, **SAMPLING
            ),
            generator=torch.Generator().manual_seed(seed),
            **kw,
        )


def _assert_same(new, ref) -> None:
    """Same tokens and masks; log-probs equal to float32 rounding (the static cache's attention sums over
    masked slots too, so the last bits may differ)."""
    assert torch.equal(new.response_ids, ref.response_ids)
    assert torch.equal(new.response_mask, ref.response_mask)
    for name in ("student_logprobs", "teacher_logprobs", "mix_logprobs"):
        a, b = getattr(new, name), getattr(ref, name)
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=2e-5, msg=name)


def _ragged(ref) -> None:
    """The fixture is only a test if rows have ragged prompts and finish at different steps."""
    lengths = ref.response_mask.sum(1)
    assert len(set(lengths.tolist())) > 1, "rows should finish at different steps"
    assert (ref.prompt_mask == 0).any(), "prompts should be left-padded"


@pytest.mark.parametrize(
    "alpha, kw",
    [(0.2, {}), (0.0, {"teacher_after_decoding": False}), (0.0, {})],
    ids=["alpha0.2-lockstep", "alpha0-lockstep", "alpha0-scored-after"],
)
def test_static_cache_gives_the_eager_tokens_and_logprobs(pair, alpha, kw):
    student, teacher = pair
    ref = _rollout("eager", student, teacher, [3, 7, 5, 1, 6], alpha=alpha, **kw)
    _ragged(ref)
    _assert_same(_rollout("static", student, teacher, [3, 7, 5, 1, 6], alpha=alpha, **kw), ref)


def test_rounds_of_other_shapes_reuse_the_caches_and_stay_exact(pair):
    """Round 2 has fewer rows and a shorter prompt (same buckets): the cache of round 1 is reused, so a
    slot or counter left over from round 1 would change its tokens. Round 3 takes a larger bucket."""
    student, teacher = pair
    shapes = [[3, 7, 5, 1, 6], [4, 2, 2], [5, 3, 1, 2, 7, 4, 4, 6, 2]]
    for round_, lengths in enumerate(shapes):
        ref = _rollout("eager", student, teacher, lengths, alpha=0.2, seed=10 + round_)
        _assert_same(_rollout("static", student, teacher, lengths, alpha=0.2, seed=10 + round_), ref)
    state = static_decode._states[student]
    assert {key[:2] for key in state.caches} >= {(8, 64), (16, 64)}


@pytest.mark.parametrize("kind", ["gpt2", "opt", "qwen2"])
def test_generate_with_a_static_cache_matches_eager_for_other_architectures(kind):
    model = _bias_eos(_tiny(kind, seed=3), 3.0)
    ids, mask = _prompts([3, 7, 5, 1], seed=4)

    def run(mode):
        with static_decode.decode_mode(mode):
            sampling = SamplingOptions(max_new_tokens=10, eos_token_id=EOS, pad_token_id=PAD, **SAMPLING)
            return generate(model, ids, mask, sampling, generator=torch.Generator().manual_seed(9))

    ref = run("eager")
    _ragged(ref)
    _assert_same(run("static"), ref)


@pytest.mark.slow  # dynamo tracing two models: 20-40 s on the shared cores
def test_compiled_steps_trace_once_per_bucket_and_match_eager(pair, monkeypatch):
    """dynamo traces the per-token step (backend "eager": no code generation, so the test stays fast);
    a later round with another batch size in the same bucket compiles nothing new."""
    monkeypatch.setattr(static_decode, "BACKEND", "eager")
    student, teacher = _bias_eos(_tiny("llama", seed=1), 2.0), _tiny("llama", seed=2)  # fresh: no graphs yet
    ref = _rollout("eager", student, teacher, [3, 7, 5, 1, 6], alpha=0.2)
    _assert_same(_rollout("compiled", student, teacher, [3, 7, 5, 1, 6], alpha=0.2), ref)
    assert static_decode.compilations(student) == 1
    assert static_decode.compilations(teacher) == 1
    ref = _rollout("eager", student, teacher, [2, 4, 4, 1, 3, 5, 2], alpha=0.2, seed=6)
    _assert_same(_rollout("compiled", student, teacher, [2, 4, 4, 1, 3, 5, 2], alpha=0.2, seed=6), ref)
    assert static_decode.compilations(student) == 1, "a batch of 7 in the bucket of 8 recompiled"
    assert static_decode.compilations(teacher) == 1


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast-copy"])
def test_a_model_decoded_with_compiled_steps_is_freed_with_its_caches_and_steps(monkeypatch, autocast):
    """The compiled step lives in the model's entry of the weakly keyed state: were it to hold the model
    strongly, every model a process ever decoded (a multirun's jobs, a test's fits) would stay alive with its
    caches and graphs. Under autocast the low-precision copy's own entry must go with it."""
    import gc
    import weakref

    monkeypatch.setattr(static_decode, "BACKEND", "eager")
    model = _tiny("llama", seed=4)
    ids, mask = _prompts([3, 5, 2], seed=2)
    sampling = SamplingOptions(max_new_tokens=5, eos_token_id=EOS, pad_token_id=PAD, **SAMPLING)
    with static_decode.decode_mode("compiled"), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for seed in range(2):  # the second decoding runs the warm step
            generate(model, ids, mask, sampling, generator=torch.Generator().manual_seed(seed))
    states = static_decode.states(model)
    assert len(states) == (2 if autocast else 1) and sum(s.compilations for s in states) == 1
    entries = [weakref.ref(s) for s in states]
    gone = weakref.ref(model)
    del model, states
    gc.collect()
    assert gone() is None, "the model outlived its last reference: its compiled step holds it"
    assert all(entry() is None for entry in entries), "the model's decoding state (caches, steps) outlived it"


def test_a_failed_compile_falls_back_to_eager_steps_with_one_logged_line(pair, monkeypatch, caplog):
    def broken(model):
        def step(*args):
            raise RuntimeError("no compiler for this model\nsecond line of the compiler's message")

        return step

    monkeypatch.setattr(static_decode, "_compile", broken)
    student, teacher = _tiny("opt", seed=1), _tiny("opt", seed=2)
    ref = _rollout("eager", student, teacher, [3, 7, 5, 1, 6], alpha=0.2)
    with caplog.at_level(logging.INFO, logger="minillm.rollout.static_decode"):
        for _ in range(2):  # a second round: still eager, nothing logged again
            _assert_same(_rollout("compiled", student, teacher, [3, 7, 5, 1, 6], alpha=0.2), ref)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # one per model, each one line
    assert all("\n" not in line and "no compiler for this model" in line for line in lines)
    assert "OPTForCausalLM" in lines[0]


def test_a_model_without_static_cache_support_decodes_eagerly_with_one_logged_line(monkeypatch, caplog):
    def unsupported(*args):
        raise NotImplementedError("this architecture has no static cache\nmore detail")

    monkeypatch.setattr(static_decode, "_forward", unsupported)
    student, teacher = _bias_eos(_tiny("gpt2", seed=1), 2.0), _tiny("gpt2", seed=2)
    ref = _rollout("eager", student, teacher, [3, 7, 5, 1, 6], alpha=0.2)
    with caplog.at_level(logging.INFO, logger="minillm.rollout.static_decode"):
        for _ in range(2):  # a second round goes straight to the eager path, nothing logged again
            _assert_same(_rollout("static", student, teacher, [3, 7, 5, 1, 6], alpha=0.2), ref)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # one per model
    assert all("\n" not in line and "has no static cache" in line for line in lines)
    assert "GPT2LMHeadModel cannot decode over a static cache" in lines[0]


def test_sampler_decode_is_read_from_the_config_and_checked():
    old = static_decode.mode()
    try:
        assert (
            static_decode.configure(OmegaConf.create({"sampler": {"name": "hf", "decode": "static"}}))
            == "static"
        )
        assert static_decode.configure(OmegaConf.create({"sampler": {"name": "hf"}})) == "eager"
        with pytest.raises(
            MinillmError, match=r"sampler.decode='fast': must be one of eager, static, compiled"
        ):
            static_decode.check(OmegaConf.create({"sampler": {"decode": "fast"}}))
    finally:
        static_decode.set_mode(old)


def test_buckets():
    assert [static_decode.batch_bucket(b) for b in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 16]
    assert [static_decode.length_bucket(n) for n in (1, 64, 65, 200)] == [64, 64, 128, 256]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["llama", "gpt2", "opt"])
def test_inductor_compiled_step_matches_eager_or_falls_back_in_one_line(kind, caplog):
    """The real compiler (CPU inductor): Llama-, GPT-2- and OPT-style students either run compiled steps
    (same tokens, one graph, none more for a second round of another batch size) or say in one line that
    they fell back."""
    student, teacher = _bias_eos(_tiny(kind, seed=1), 2.0), _tiny(kind, seed=2)
    with caplog.at_level(logging.INFO, logger="minillm.rollout.static_decode"):
        for seed, lengths in ((5, [3, 7, 5, 1, 6]), (6, [2, 4, 4, 1, 3, 5, 2])):
            ref = _rollout("eager", student, teacher, lengths, alpha=0.2, seed=seed)
            _assert_same(_rollout("compiled", student, teacher, lengths, alpha=0.2, seed=seed), ref)
    fell_back = [r for r in caplog.records if r.levelno >= logging.WARNING]
    if fell_back:
        assert len(fell_back) <= 2 and static_decode._states[student].failed is not None
    else:
        assert static_decode.compilations(student) == 1
        assert static_decode.compilations(teacher) == 1


def test_warm_compiled_steps_skip_guards_and_what_the_guards_would_catch_is_in_their_key(monkeypatch):
    """After a step key's first call, its compiled step runs without Dynamo's guards (GUARD_SKIP). A decoding
    under bf16 autocast, or with a forward hook added, after fp32 ones that warmed the same bucket must not run
    the warm fp32 graph: it gets a step of its own (compiled, guarded on first use) and the numbers of the same
    cache's eager steps; a LoRA (peft) model never skips its guards. (No low-precision copy here: the same
    model decodes under autocast.)"""
    monkeypatch.setattr(static_decode, "BACKEND", "eager")
    monkeypatch.setattr(static_decode, "SHADOW", False)
    model = _bias_eos(_tiny("llama", seed=7), 2.0)
    ids, mask = _prompts([3, 7, 5, 1, 6], seed=8)

    def run(mode, seed=3):
        with static_decode.decode_mode(mode):
            sampling = SamplingOptions(max_new_tokens=10, eos_token_id=EOS, pad_token_id=PAD, **SAMPLING)
            return generate(model, ids, mask, sampling, generator=torch.Generator().manual_seed(seed))

    for seed in (3, 4):
        _assert_same(run("compiled", seed), run("eager", seed))
    state = static_decode._states[model]
    assert state.unguarded_calls > 0 and len(state.compiled) == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):  # against the same cache's eager steps: bf16 rounds the
        ref, new = run("static"), run("compiled")  # static cache's attention unlike the dynamic one's
    assert torch.equal(new.response_ids, ref.response_ids)
    torch.testing.assert_close(new.student_logprobs, ref.student_logprobs, rtol=0, atol=2e-5)
    fp32 = run("static")
    assert (ref.student_logprobs - fp32.student_logprobs).abs().max() > 1e-3  # bf16 is not fp32 here
    assert len(state.compiled) == 2
    shift = torch.linspace(-2.0, 2.0, VOCAB)

    def hook(module, args, out):  # a hook that changes the logits (and so the tokens)
        out.logits = out.logits + shift
        return out

    handle = model.register_forward_hook(hook)
    try:
        ref, unguarded = run("static"), state.unguarded_calls
        new = run("compiled")
    finally:
        handle.remove()
    assert not torch.equal(ref.response_ids, fp32.response_ids)
    _assert_same(new, ref)
    assert len(state.compiled) == 3 and state.unguarded_calls == unguarded  # a hooked model keeps its guards
    lora = _bias_eos(_tiny("llama", seed=9), 2.0)
    lora.peft_config = {}  # what static_decode looks for
    model = lora
    for _ in range(2):
        run("compiled")
    assert static_decode._states[lora].unguarded_calls == 0


def _generate(model, mode: str, *, seed: int = 3, new_tokens: int = 10, lengths=(3, 7, 5, 1, 6)):
    ids, mask = _prompts(list(lengths), seed=8)
    with static_decode.decode_mode(mode):
        sampling = SamplingOptions(max_new_tokens=new_tokens, eos_token_id=EOS, pad_token_id=PAD, **SAMPLING)
        return generate(model, ids, mask, sampling, generator=torch.Generator().manual_seed(seed))


def test_warm_steps_across_inference_mode_and_a_changed_tensor_guard_keep_decoding_compiled(
    monkeypatch, caplog
):
    """Lightning validates under torch.inference_mode: a bucket warmed under no_grad gets a step (and a cache) of
    its own there, and a no_grad decoding after it still works (a cache filled under inference mode would refuse
    its in-place updates). Where a tensor guard would fail, Dynamo refuses the unguarded call (a stand-in raises
    its error here): that key keeps its guards from then on, said in one line, and decoding stays compiled and
    right."""
    monkeypatch.setattr(static_decode, "BACKEND", "eager")
    model = _bias_eos(_tiny("llama", seed=11), 2.0)
    for _ in range(2):
        _assert_same(_generate(model, "compiled"), _generate(model, "static"))
    state = static_decode._states[model]
    with torch.inference_mode():
        _assert_same(_generate(model, "compiled"), _generate(model, "static"))
    _assert_same(_generate(model, "compiled", seed=4), _generate(model, "static", seed=4))
    assert state.failed is None and len(state.compiled) == 2 and state.unguarded_calls > 0
    # a stand-in for Dynamo's refusal (what it raises under the skipping stance when a tensor guard fails)
    (key,) = [k for k in state.warm if not k[6]]  # the no_grad step, not the inference-mode one
    step, refused = state.compiled[key], []

    def refusing(*args):
        if torch._dynamo.eval_frame._stance.skip_guard_eval_unsafe and not refused:
            refused.append(1)
            raise RuntimeError(
                "Recompilation triggered with skip_guard_eval_unsafe stance. This usually means …"
            )
        return step(*args)

    state.compiled[key] = refusing
    with caplog.at_level(logging.INFO, logger="minillm.rollout.static_decode"):
        for _ in range(2):
            _assert_same(_generate(model, "compiled", seed=5), _generate(model, "static", seed=5))
    assert refused and state.failed is None and state.guarded == {key} and key not in state.warm
    assert sum("keeps its guards" in r.getMessage() for r in caplog.records) == 1


def test_a_cache_first_filled_under_inference_mode_does_not_break_a_later_decoding_outside_it():
    """A bucket first decoded under torch.inference_mode (Lightning's validation) and then outside it (a
    rollout): each mode has a cache of its own, so the second decoding's in-place updates are allowed."""
    model = _bias_eos(_tiny("llama", seed=13), 2.0)
    with torch.inference_mode():
        inside = _generate(model, "static")
    _assert_same(_generate(model, "static"), inside)
    _assert_same(_generate(model, "static"), _generate(model, "eager"))


def test_a_sliding_window_model_keeps_its_guards_and_decodes_past_its_window(monkeypatch):
    """A sliding-window cache layer keeps a Python int that a graph bakes in: such a model never skips its
    guards, and decoding past the window gives the static cache's eager numbers."""
    monkeypatch.setattr(static_decode, "BACKEND", "eager")
    model = _tiny("mistral", seed=12)
    for seed in (3, 4):
        new = _generate(model, "compiled", seed=seed, new_tokens=12, lengths=(4, 2, 3))
        ref = _generate(model, "static", seed=seed, new_tokens=12, lengths=(4, 2, 3))
        assert new.response_ids.shape[1] + 4 > 8  # past the window
        _assert_same(new, ref)
    state = static_decode._states[model]
    assert state.failed is None and state.unguarded_calls == 0 and not state.warm


@pytest.mark.parametrize("tied", [True, False], ids=["tied-output", "own-output"])
def test_under_autocast_compiled_steps_run_a_low_precision_copy_synced_after_every_update(monkeypatch, tied):
    """Under bf16 autocast the compiled steps run a copy whose linear weights are bf16 (a compiled graph would
    cast every fp32 weight on every token): the same tokens and log-probs as the live model's own (static,
    eager) steps under autocast, the copy's norms and embedding kept fp32; after an in-place update of the live
    weights (an optimizer step) the next decoding uses the new weights."""
    monkeypatch.setattr(static_decode, "BACKEND", "eager")
    model = _bias_eos(_tiny("llama", seed=14), 2.0)
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    with torch.autocast("cpu", dtype=torch.bfloat16):
        new = _generate(model, "compiled")
        monkeypatch.setattr(static_decode, "SHADOW", False)
        _assert_same(new, _generate(model, "static"))
        monkeypatch.setattr(static_decode, "SHADOW", True)
    shadow = static_decode._states[model].shadow
    assert shadow is not None and shadow.lm_head.weight.dtype == torch.bfloat16
    assert shadow.model.embed_tokens.weight.dtype == torch.float32
    assert shadow.model.norm.weight.dtype == torch.float32
    # an optimizer step, in place and outside the autocast region (as Lightning steps: autocast's own cache of
    # cast weights lives until its region ends, so an update inside it would leave eager steps on old weights)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.9).add_(0.01)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        new = _generate(model, "compiled", seed=4)
        monkeypatch.setattr(static_decode, "SHADOW", False)  # the live model itself, its own static steps
        ref = _generate(model, "static", seed=4)
        monkeypatch.setattr(static_decode, "SHADOW", True)
    _assert_same(new, ref)
    assert static_decode._states[model].shadow is shadow  # made once, synced in place
    assert static_decode.compilations(model) >= 1 and static_decode._states[shadow].compilations >= 1
    _assert_same(
        _generate(model, "compiled", seed=5), _generate(model, "static", seed=5)
    )  # fp32: no copy used


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_eager_decoding_under_lightnings_autocast_uses_the_copy_with_the_same_numbers(monkeypatch, mode):
    """Lightning's bf16-mixed autocast keeps no cache of cast weights, so eager decoding cast every linear
    weight on every token too: it decodes with the low-precision copy, bit for bit what autocast computes on the
    live model (the copy switched off: SHADOW = False)."""
    student, teacher = _bias_eos(_tiny("llama", seed=15), 2.0), _tiny("llama", seed=16)

    def rollout(shadow: bool):
        monkeypatch.setattr(static_decode, "SHADOW", shadow)
        with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
            return _rollout(mode, student, teacher, [3, 7, 5, 1, 6], alpha=0.2)

    ref, new = rollout(False), rollout(True)
    assert (
        static_decode._states[student].shadow is not None
        and static_decode._states[teacher].shadow is not None
    )
    for name in ("response_ids", "response_mask", "student_logprobs", "teacher_logprobs", "mix_logprobs"):
        assert torch.equal(getattr(new, name), getattr(ref, name)), name


def test_the_low_precision_copy_made_under_inference_mode_syncs_outside_it_and_follows_buffers(monkeypatch):
    """A copy first made during validation (inference mode) must take a later update outside it, parameters
    and buffers alike, and decode as the live model does; a torch.compile wrapper keeps decoding itself, and a
    subclass of nn.Linear (which may use its parameters outside F.linear) keeps fp32 parameters."""
    from minillm.rollout.sampler import _low_precision_decoder
    from minillm.rollout.static_decode import _low_precision_copy

    model = _bias_eos(_tiny("llama", seed=17), 2.0)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        _generate(model, "eager")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.1)
        model.model.rotary_emb.inv_freq.mul_(0.5)

    def run(shadow: bool):
        monkeypatch.setattr(static_decode, "SHADOW", shadow)
        with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
            return _generate(model, "eager", seed=6)

    new, ref = run(True), run(False)
    for name in ("response_ids", "student_logprobs"):
        assert torch.equal(getattr(new, name), getattr(ref, name)), name
    shadow = static_decode._states[model].shadow
    assert torch.equal(shadow.model.rotary_emb.inv_freq, model.model.rotary_emb.inv_freq)

    monkeypatch.setattr(static_decode, "SHADOW", True)
    compiled = torch.compile(model, backend="eager")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _low_precision_decoder(compiled) is compiled and _low_precision_decoder(model) is shadow

    class Scaled(torch.nn.Linear):
        def forward(self, x):
            return x @ self.weight.T + self.bias

    net = torch.nn.Sequential(torch.nn.Linear(4, 4), Scaled(4, 4))
    copy = _low_precision_copy(net, torch.bfloat16)
    assert copy[0].weight.dtype == torch.bfloat16 and copy[1].weight.dtype == torch.float32
