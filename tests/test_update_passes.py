"""``fit.compile_updates`` (minillm.training.update_passes): the round's updates with the student's
teacher-forced pass and the loss under torch.compile give the eager updates' losses and weights to float
rounding, keep the first inner step's PPO ratio exactly 1 where the old log-probs are rescored, and fall back
to eager updates with one logged line where compiling fails."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import re

import pytest
import torch

from minillm.models.tiny import build_model
from minillm.objectives.policy_gradient import RankPool
from minillm.rollout.options import SamplingOptions
from minillm.training import update_passes
from minillm.training.options import RoundOptions
from minillm.training.round import MiniLLMRound
from tests.test_on_policy import DROPOUT_STUDENTS, EOS, PROMPT_MASK, PROMPTS, TEACHER_ARCH, VOCAB
from tests.test_rollout import _bias_eos

# ragged prompts, rows finishing at different steps, two inner epochs of two minibatches (3 + 1 rows)
SAMPLING = SamplingOptions(max_new_tokens=7, eos_token_id=EOS, pad_token_id=EOS, temperature=0.7)
OPTIONS = RoundOptions(mini_batch_size=3, ppo_epochs=2, sampling=SAMPLING, grad_clip=1.0)


def _models(arch=TEACHER_ARCH):
    # heads biased toward EOS, so that rows finish at different steps
    student = _bias_eos(build_model(arch, VOCAB, eos_token_id=EOS, seed=1), 2.0, eos=EOS)
    teacher = _bias_eos(build_model(TEACHER_ARCH, VOCAB, eos_token_id=EOS, seed=2), 2.0, eos=EOS).eval()
    return student, teacher


def _round(student, teacher, options: RoundOptions, **kw) -> MiniLLMRound:
    # SGD: a weight's change is its gradient's (Adam's normalised step would magnify a float-rounding
    # difference in a near-zero gradient into a difference of the learning rate's size)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return MiniLLMRound(student, teacher, optimizer, scheduler, options, **kw)


def _run(rnd: MiniLLMRound, seed: int = 5, alpha: float = 0.2) -> dict[str, float]:
    return rnd(
        PROMPTS,
        PROMPT_MASK,
        alpha=alpha,
        rollout_gen=torch.Generator().manual_seed(seed),
        shuffle_gen=torch.Generator().manual_seed(seed + 1),
    )


def _record_loss_inputs(rnd: MiniLLMRound) -> list[tuple]:
    """Every update's (minibatch, new log-probs as the loss received them, the loss's logs)."""
    seen: list[tuple] = []
    real = rnd.passes.loss

    def loss(logits, teacher_logits, mb, logprobs):
        value, logs = real(logits, teacher_logits, mb, logprobs)
        seen.append((mb, logprobs.detach().clone(), {k: float(v) for k, v in logs.items()}))
        return value, logs

    rnd.passes.loss = loss
    return seen


@pytest.mark.parametrize(
    "backend",
    [
        "aot_eager",  # AOTAutograd's graphs run by torch's own kernels: the wiring, in seconds
        # the real compiler, whose fused kernels round differently from eager ones: there the exact ratio
        # holds only because rescoring runs the update's own compiled pass
        pytest.param("inductor", marks=pytest.mark.slow),  # ~60 s of compiling on the shared cores
    ],
)
def test_compiled_updates_match_eager_and_rescoring_keeps_the_first_ratio_exactly_one(
    monkeypatch, caplog, backend
):
    """One round of four updates each way from the same weights and seeds: the same rollouts, the logged
    losses and the weights after equal to float rounding (fused reductions sum in another order), and with the
    old log-probs rescored through the same compiled pass, the first update's new log-probs equal to the old
    ones bit for bit (ratio exactly 1)."""
    monkeypatch.setattr(update_passes, "BACKEND", backend)
    # wide enough that inductor's fused kernels and eager ones round apart (at width 32 they agree bitwise)
    student, teacher = _models({**TEACHER_ARCH, "hidden_size": 128, "intermediate_size": 256})
    # temperature 1 and α = 0 (below): the importance weights are exactly 1, so the loss's PPO ratio is
    # q_θ / q_old alone
    options = dataclasses.replace(
        OPTIONS, sampling=dataclasses.replace(SAMPLING, temperature=1.0), rescore_old_logprobs=True
    )
    eager = _round(copy.deepcopy(student), teacher, options)
    compiled = _round(student, teacher, dataclasses.replace(options, compile_updates=True))
    assert compiled.passes.active and not eager.passes.active
    seen = _record_loss_inputs(compiled)
    with caplog.at_level(logging.INFO, logger=update_passes.__name__):
        ref, got = _run(eager, alpha=0.0), _run(compiled, alpha=0.0)
    assert compiled.passes.failed is None, compiled.passes.failed
    assert any(
        "the first update (and any rescoring before it) took" in r.getMessage() for r in caplog.records
    )
    assert compiled.passes.first_seconds > 0
    for key in ("train/loss", "train/pg_loss", "train/single_step_loss", "train/grad_norm", "rollout/reward"):
        assert got[key] == pytest.approx(ref[key], rel=1e-4, abs=1e-6), key
    for a, b in zip(eager.student.parameters(), compiled.student.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert len(seen) == 4
    mb, logprobs, logs = seen[0]  # the first update: the weights the old log-probs were scored with
    valid = mb.response_mask.bool()
    assert valid.any() and not valid.all(), "the minibatch's rows should finish at different steps"
    assert torch.equal(logprobs[valid], mb.student_logprobs[valid])
    assert logs["ratio_mean"] == 1.0 and logs["clip_frac"] == 0.0  # the ratio the loss took
    mb, logprobs, logs = seen[1]  # after one step the student has moved
    assert (logprobs - mb.student_logprobs)[mb.response_mask.bool()].abs().max() > 0
    assert logs["ratio_mean"] != 1.0


def _failing_backward_backend():
    """An AOTAutograd backend whose forward graphs run as traced and whose backward graphs fail to compile."""
    from torch._dynamo.backends.common import aot_autograd

    def forward_compiler(gm, example_inputs):
        return gm

    def backward_compiler(gm, example_inputs):
        raise RuntimeError("backward lowering failed on purpose")

    return aot_autograd(fw_compiler=forward_compiler, bw_compiler=backward_compiler)


def _out_of_memory_backend(gm, example_inputs):
    """A backend whose compiled graphs run out of memory when called (as a padded minibatch may)."""

    def run(*args):
        raise torch.OutOfMemoryError("out of memory on purpose")

    return run


@pytest.mark.parametrize("where", ["dynamo", "backward", "out-of-memory"])
def test_a_failed_compile_runs_the_updates_eagerly_with_one_logged_line(monkeypatch, caplog, where):
    """A compiler error in tracing, or in lowering the backward (compiled with the forward, so it is caught
    before any gradient flows), or a compiled pass out of memory (its minibatch padded to the bucket), turns the
    passes eager for the rest of the fit: one warning naming the error, and the round's results those of the
    eager updates exactly."""

    def broken(gm, example_inputs):
        raise RuntimeError("tracing failed on purpose")

    backends = {
        "dynamo": broken,
        "backward": _failing_backward_backend(),
        "out-of-memory": _out_of_memory_backend,
    }
    monkeypatch.setattr(update_passes, "BACKEND", backends[where])
    student, teacher = _models()
    eager = _round(copy.deepcopy(student), teacher, OPTIONS)
    compiled = _round(student, teacher, dataclasses.replace(OPTIONS, compile_updates=True))
    with caplog.at_level(logging.INFO, logger=update_passes.__name__):
        ref, got = _run(eager), _run(compiled)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "on purpose" in warnings[0] and "run eagerly" in warnings[0]
    assert not compiled.passes.active and "on purpose" in compiled.passes.failed
    assert got == ref
    for a, b in zip(eager.student.parameters(), compiled.student.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_compiled_loss_without_its_gradient_runs_the_updates_eagerly(monkeypatch, caplog):
    """A compiled loss that comes back without its graph (inductor did so for the loss without the single-step
    term) would fail at the backward, past the fallback: it is caught at the loss, in one warning, and the
    round's results are the eager updates' exactly."""
    monkeypatch.setattr(update_passes, "BACKEND", "aot_eager")
    student, teacher = _models()
    eager = _round(copy.deepcopy(student), teacher, OPTIONS)
    compiled = _round(student, teacher, dataclasses.replace(OPTIONS, compile_updates=True))
    real = compiled.passes._loss

    def detached(*args):
        value, logs = real(*args)
        return value.detach(), logs

    compiled.passes._loss = detached
    with caplog.at_level(logging.WARNING, logger=update_passes.__name__):
        ref, got = _run(eager), _run(compiled)
    assert [r.getMessage() for r in caplog.records] == [
        "fit.compile_updates: the compiled update failed (RuntimeError: the compiled loss came back without a "
        "gradient); the updates run eagerly"
    ]
    assert got == ref
    for a, b in zip(eager.student.parameters(), compiled.student.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow  # inductor compiles the student's pass and the loss: ~30 s on the shared cores
def test_the_loss_without_the_single_step_term_updates_compiled(monkeypatch):
    """objective=onpolicy_rkl (single_step false): under inductor the loss keeps its gradient and the updates
    match the eager ones to float rounding (a loss of pg + a constant zero came back without it)."""
    from minillm.objectives.policy_gradient import PGOptions

    options = dataclasses.replace(OPTIONS, pg=PGOptions.paper(single_step=False))
    assert not options.pg.single_step
    student, teacher = _models()
    eager = _round(copy.deepcopy(student), teacher, options)
    compiled = _round(student, teacher, dataclasses.replace(options, compile_updates=True))
    ref, got = _run(eager), _run(compiled)
    assert compiled.passes.active, compiled.passes.failed
    assert got["train/single_step_loss"] == 0.0
    for key in ("train/loss", "train/pg_loss", "train/grad_norm"):
        assert got[key] == pytest.approx(ref[key], rel=1e-4, abs=1e-6), key
    for a, b in zip(eager.student.parameters(), compiled.student.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_with_several_processes_the_updates_stay_eager_and_say_so(caplog):
    """A data-parallel pool (DDP / FSDP): compiled passes are not used, in one logged line."""
    student, teacher = _models()
    pool = RankPool(sum=lambda v: v.detach().clone(), max=lambda v: v.detach().clone())
    with caplog.at_level(logging.WARNING, logger=update_passes.__name__):
        rnd = _round(student, teacher, dataclasses.replace(OPTIONS, compile_updates=True), pool=pool)
    assert not rnd.passes.active
    assert [r.getMessage() for r in caplog.records] == [
        "fit.compile_updates: not with several processes (DDP, FSDP); the updates run eagerly"
    ]


def test_fit_compile_updates_reaches_the_round_through_the_module(compose, monkeypatch):
    """``fit.compile_updates=true`` in a run's config turns the round's passes compiled (AOTAutograd without
    code generation here); off by default."""
    from tests.test_on_policy import fit, make_module, module_config

    monkeypatch.setattr(update_passes, "BACKEND", "aot_eager")
    for flag in (False, True):
        overrides = ["objective.mini_batch_size=2", "objective.ppo_epochs=1", "objective.max_new_tokens=6"]
        cfg = module_config(compose, *overrides, *([f"fit.compile_updates={flag}"] if flag else []))
        student, teacher = _models()
        module = make_module(cfg, student, teacher)
        fit(module, max_steps=2)
        assert module._runner.options.compile_updates is flag
        assert module._runner.passes.active is flag


@pytest.mark.slow  # inductor compiles an OPT student's forward and backward: ~30 s on the shared cores
def test_an_opt_style_student_runs_compiled_updates_or_falls_back_in_one_line(caplog):
    """An OPT-style student (learned positions, its own attention) under inductor: the compiled updates match
    the eager ones to float rounding, or one logged line says they fell back."""
    arch = {**DROPOUT_STUDENTS["opt"], "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0}
    student, teacher = _models(arch)
    eager = _round(copy.deepcopy(student), teacher, OPTIONS)
    compiled = _round(student, teacher, dataclasses.replace(OPTIONS, compile_updates=True))
    with caplog.at_level(logging.WARNING, logger=update_passes.__name__):
        ref, got = _run(eager), _run(compiled)
    if compiled.passes.failed is not None:
        assert len(caplog.records) == 1
        assert got == ref
    else:
        assert not caplog.records
        assert got["train/loss"] == pytest.approx(ref["train/loss"], rel=1e-4, abs=1e-6)
        for a, b in zip(eager.student.parameters(), compiled.student.parameters(), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def _loss_inputs(seed: int, mask: torch.Tensor, vocab: int = 11):
    """Random (logits with gradient, teacher logits, minibatch) of ``mask``'s shape, whose old log-probs are
    the logits' own, slightly moved."""
    from minillm.rollout.sampler import Rollout, sampled_logprobs

    gen = torch.Generator().manual_seed(seed)
    b, t = mask.shape
    logits = torch.randn(b, t, vocab, generator=gen, requires_grad=True)
    ids = torch.randint(0, vocab, (b, t), generator=gen)
    old = (sampled_logprobs(logits, ids).detach() + 0.01 * torch.randn(b, t, generator=gen)) * mask
    mb = Rollout(
        prompt_ids=torch.ones(b, 2, dtype=torch.long),
        prompt_mask=torch.ones(b, 2, dtype=torch.long),
        response_ids=ids,
        response_mask=mask,
        student_logprobs=old,
        teacher_logprobs=(old - 0.3) * mask,
        mix_logprobs=(old + 0.05) * mask,
    )
    return logits, torch.randn(b, t, vocab, generator=gen), mb


def test_the_minillm_loss_takes_its_ratio_from_the_log_probs_the_student_pass_hands_it():
    """The round's loss computes the PPO ratio from the log-probs of the student's pass (those rescoring
    took, from the same compiled graph), not from a log-softmax of its own: with none handed over it takes
    the logits' own; shifted ones by δ multiply every token's ratio, and so its mean, by e^δ."""
    from minillm.rollout.sampler import sampled_logprobs
    from minillm.training.round import minillm_minibatch_loss

    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    logits, teacher_logits, mb = _loss_inputs(3, mask)
    # no clipping: a shift of the log-probs then reaches the logged ratio whole
    loss = minillm_minibatch_loss(
        dataclasses.replace(OPTIONS, pg=dataclasses.replace(OPTIONS.pg, clip_eps=None))
    )
    own = sampled_logprobs(logits, mb.response_ids)

    def logs(logprobs):
        return {k: float(v) for k, v in loss(logits, teacher_logits, mb, logprobs)[1].items()}

    base = logs(None)
    assert logs(own) == base
    assert logs(own + 0.2)["ratio_mean"] == pytest.approx(base["ratio_mean"] * math.exp(0.2), rel=1e-5)


def test_the_minillm_loss_traces_as_one_graph():
    """No data-dependent branch splits the compiled loss (whitening's empty-batch case and the logged masked
    maximum are branch-free): each split costs a graph of its own and its backward's hand-over."""
    from minillm.training.round import minillm_minibatch_loss

    logits, teacher_logits, mb = _loss_inputs(4, torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]]), vocab=9)
    loss = minillm_minibatch_loss(OPTIONS)
    explained = torch._dynamo.explain(loss)(logits, teacher_logits, mb, mb.student_logprobs.clone())
    assert explained.graph_break_count == 0, explained.break_reasons


def test_the_branch_free_masked_maximum():
    """The logged masked maximum: over the masked entries only (all negative here, so a fill of 0 would
    show), 0 with none; NaN at a masked entry propagates."""
    from minillm.objectives.policy_gradient import _masked_max

    values = torch.tensor([[-3.0, -0.5, 7.0], [-2.0, 9.0, -1.5]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    assert _masked_max(values, mask) == -0.5
    assert _masked_max(values, torch.zeros_like(mask)) == 0.0
    assert torch.isnan(_masked_max(values.masked_fill(mask.bool() & (values < -2.5), float("nan")), mask))


def test_padding_a_minibatch_to_its_bucket_keeps_its_loss_and_gradient():
    """The compiled passes take the minibatch padded to its shape bucket (prompt columns on the left, response
    columns on the right, under a zero mask): the eager loss, its logs and the gradient are those of the
    unpadded minibatch to float rounding."""
    student, teacher = _models()
    state = _round(student, teacher, OPTIONS).start(
        PROMPTS,
        PROMPT_MASK,
        alpha=0.2,
        rollout_gen=torch.Generator().manual_seed(5),
        shuffle_gen=torch.Generator().manual_seed(6),
    )
    mb = state.buffer.minibatch(state.order[0])
    big = update_passes.padded(mb)
    assert big.prompt_ids.shape[1] == 16 and big.response_ids.shape[1] == 16
    assert mb.response_ids.shape[1] < 16 and mb.prompt_ids.shape[1] < 16
    student.eval()
    loss = MiniLLMRound(student, teacher, None, None, OPTIONS).loss
    results = []
    for batch in (mb, big):
        student.zero_grad()
        logits, logprobs = update_passes.student_pass(student, batch, True)
        value, logs = loss(logits, batch.teacher_logits, batch, logprobs)
        value.backward()
        results.append((value.detach(), logs, [p.grad.clone() for p in student.parameters()]))
    (a, logs_a, grads_a), (b, logs_b, grads_b) = results
    torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
    for key in logs_a:
        torch.testing.assert_close(logs_b[key], logs_a[key], rtol=1e-5, atol=1e-6, msg=key)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(gb, ga, rtol=1e-5, atol=1e-7)


def test_rounds_of_other_lengths_within_a_bucket_compile_nothing_more(monkeypatch, caplog):
    """Shape buckets: a second round whose responses and prompts have other lengths, within the same buckets,
    runs on the graphs the first compiled (Dynamo's own count of graphs does not move). A later update that
    compiles a new bucket says so with its seconds (the round's 1-row minibatch after the first update's 3 rows);
    one that compiles nothing says nothing."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(update_passes, "BACKEND", "aot_eager")
    student, teacher = _models()
    rnd = _round(student, teacher, dataclasses.replace(OPTIONS, compile_updates=True))
    lengths = []
    real = rnd.passes.shaped
    rnd.passes.shaped = lambda mb: lengths.append(mb.response_ids.shape[1]) or real(mb)

    def new_buckets() -> list[str]:
        lines = [r.getMessage() for r in caplog.records if "of a new shape bucket" in r.getMessage()]
        caplog.clear()
        return lines

    with caplog.at_level(logging.INFO, logger=update_passes.__name__):
        _run(rnd, seed=5)
        (line,) = new_buckets()
        assert re.fullmatch(
            r"fit\.compile_updates: an update of a new shape bucket \(1 rows, 16 prompt and 16 response columns\) "
            r"took \d+\.\d s, compiling included",
            line,
        ), line
        graphs = counters["stats"]["unique_graphs"]
        first = set(lengths)
        _run(rnd, seed=9)
        assert new_buckets() == []
    assert set(lengths) - first, "the second round should bring response lengths the first did not have"
    assert counters["stats"]["unique_graphs"] == graphs
    assert rnd.passes.active


def test_the_masked_maximum_of_integers_and_of_nothing():
    """Integer values take their type's lowest value as the fill (an infinity cannot be one), and an empty
    tensor has no maximum: 0, as the masked maximum of no entries."""
    from minillm.objectives.policy_gradient import _masked_max

    values = torch.tensor([[-7, -3, 5]])
    assert _masked_max(values, torch.tensor([[1, 1, 0]])) == -3
    assert _masked_max(values[:, :0], torch.ones(1, 0, dtype=torch.long)) == 0


def test_a_loss_without_the_ratio_rescores_and_updates_compiled(monkeypatch):
    """A loss the round is told does not read the log-probs (GKD's single-step term, as the bench's GKD step
    runs it), with rescoring on: the compiled pass returns logits alone, rescoring takes the log-probs of those
    logits, and the round runs compiled to its end."""
    from minillm.bench.step import single_step_only

    monkeypatch.setattr(update_passes, "BACKEND", "aot_eager")
    student, teacher = _models()
    options = dataclasses.replace(OPTIONS, compile_updates=True, rescore_old_logprobs=True)
    rnd = _round(student, teacher, options, loss=single_step_only(None), loss_logprobs=False)
    logs = _run(rnd)
    assert rnd.passes.active and rnd.passes.failed is None
    assert logs["train/single_step_loss"] > 0


@pytest.mark.slow  # inductor compiles a dropout student's forward and backward: ~30 s on the shared cores
@pytest.mark.parametrize("model_type", ["llama", "opt"])
def test_with_dropout_on_a_compiled_pass_draws_the_eager_masks(model_type):
    """``objective.disable_dropout=false``: inductor draws the dropout masks with eager's kernels from the same
    generator (its own random numbers would be another realisation), so a minibatch already at its bucket's
    shape gives the eager pass's logits to float rounding and leaves the generator where eager leaves it."""
    from minillm.rollout.sampler import Rollout

    student = build_model(DROPOUT_STUDENTS[model_type], VOCAB, eos_token_id=EOS, seed=1).train()
    gen = torch.Generator().manual_seed(0)
    rows, width = 3, update_passes.MIN_BUCKET  # prompt and response at the smallest bucket: nothing padded
    response_mask = (torch.arange(width) < torch.tensor([[width], [9], [4]])).long()
    mb = Rollout(
        prompt_ids=torch.randint(1, VOCAB, (rows, width), generator=gen),
        prompt_mask=torch.ones(rows, width, dtype=torch.long),
        response_ids=torch.randint(1, VOCAB, (rows, width), generator=gen) * response_mask,
        response_mask=response_mask,
        student_logprobs=torch.zeros(rows, width),
        teacher_logprobs=None,
        mix_logprobs=torch.zeros(rows, width),
        pad_token_id=EOS,
    )
    passes = update_passes.UpdatePasses(student, loss=None, logprobs=True, compiled=True)
    assert update_passes.padded(mb).response_ids.shape == mb.response_ids.shape

    def run(fn, seed):
        torch.manual_seed(seed)
        logits, logprobs = fn(mb)
        return logits.detach(), logprobs.detach(), torch.rand(4)

    compiled = run(passes.forward, 7)
    assert passes.failed is None, passes.failed
    eager = run(lambda m: update_passes.student_pass(student, m, True), 7)
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(compiled[1], eager[1], rtol=1e-4, atol=1e-5)
    assert torch.equal(compiled[2], eager[2]), "the generator moved on differently"
    other = run(lambda m: update_passes.student_pass(student, m, True), 8)
    assert (other[0] - eager[0]).abs().max() > 1e-3, "another seed should drop other units: is dropout on?"


def test_on_cpu_the_compiled_passes_run_with_deterministic_algorithms_and_restore_them(monkeypatch):
    """Each compiled call (rescoring, forward, loss) runs with torch's deterministic algorithms on (warnings
    only, no NaN fill), and leaves them as they were."""
    monkeypatch.setattr(update_passes, "BACKEND", "aot_eager")
    student, teacher = _models()
    rnd = _round(student, teacher, dataclasses.replace(OPTIONS, compile_updates=True))
    seen = []

    def recording(real):
        def call(*args):
            seen.append(
                (
                    torch.are_deterministic_algorithms_enabled(),
                    torch.is_deterministic_algorithms_warn_only_enabled(),
                    torch.utils.deterministic.fill_uninitialized_memory,
                )
            )
            return real(*args)

        return call

    rnd.passes._forward, rnd.passes._loss = recording(rnd.passes._forward), recording(rnd.passes._loss)
    _run(rnd)
    assert rnd.passes.active and len(seen) == 8  # 4 updates × (forward, loss)
    assert set(seen) == {(True, True, False)}
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory
    with pytest.raises(RuntimeError, match="inside"), update_passes._deterministic(torch.zeros(1)):
        raise RuntimeError("inside")  # an error in a compiled call: restored all the same
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory


def test_deterministic_lowering_replaces_the_embeddings_atomic_adds():
    """Why the passes compile under deterministic algorithms: inductor lowers the embedding's gradient (an
    accumulating scatter) to a parallel loop of atomic adds, whose order, and so the gradient's last bits, changed
    between runs at 2 threads; under them it calls torch's own kernel (serial on CPU)."""
    from torch._inductor.utils import run_and_get_code

    from minillm.rollout.static_decode import own_code

    embedding = torch.nn.Embedding(50, 8)
    ids = torch.randint(0, 50, (4, 16), generator=torch.Generator().manual_seed(0))

    def loss(x):
        return embedding(x).square().sum()

    def code(deterministic: bool) -> str:
        # a code object of its own each time: its own compiled graphs (no torch._dynamo.reset() mid-suite)
        compiled = torch.compile(own_code(loss, f"loss_{deterministic}"), backend="inductor", dynamic=False)

        def run():
            with torch._functorch.config.patch(force_non_lazy_backward_lowering=True):
                return compiled(ids)

        with update_passes._deterministic(ids) if deterministic else contextlib.nullcontext():
            return "\n".join(run_and_get_code(run)[1])

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # inductor writes atomic adds only for a parallel loop (the suite runs at 1)
    try:
        assert "atomic_add" in code(False)  # the test's premise: the plain lowering races
        assert "atomic_add" not in code(True)
    finally:
        torch.set_num_threads(threads)
