"""``sampler=vllm``: the refusals (default suite, no engine needed), and the engine against the trainer (slow,
skipped unless ``make install-vllm`` built .venv-vllm): the log-prob of every sampled token, the first token's
frequencies, a weight push (tied head and prefix cache included), and smoke runs that train, evaluate and resume.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minillm.errors import MinillmError
from minillm.rollout import vllm_engine
from minillm.rollout.generate import left_pad
from minillm.rollout.options import SamplingOptions

from .conftest import ROOT
from .test_smoke import smoke_overrides

ENGINE_PYTHON = os.environ.get("MINILLM_VLLM_PYTHON", str(ROOT / ".venv-vllm" / "bin" / "python"))
HAVE_ENGINE = vllm_engine.engine_installed(ENGINE_PYTHON)
needs_engine = pytest.mark.skipif(
    not HAVE_ENGINE, reason=f"no vLLM engine at {ENGINE_PYTHON}: `make install-vllm` builds it"
)
# Head size 32 (vLLM's CPU attention takes 32, 64, …): the tests' tiny models with 2 heads of 64 / 2. The teacher
# has the student's shape, so one engine serves both (each sampling pushes the model it is asked for).
SHAPE = [
    "student.arch.num_attention_heads=2",
    "student.arch.num_key_value_heads=2",
    "teacher.arch.hidden_size=64",
    "teacher.arch.intermediate_size=176",
    "teacher.arch.num_attention_heads=2",
    "teacher.arch.num_key_value_heads=2",
]


@pytest.fixture
def engine_found(monkeypatch):
    """The refusals past the install check, without an engine."""
    monkeypatch.setattr(vllm_engine, "engine_installed", lambda python: True)


def _validate(compose, *overrides):
    from minillm.config import validate_config

    validate_config(compose(smoke_overrides(compose.tmp_path, "sampler=vllm", *overrides)))


@pytest.fixture
def compose_vllm(compose, tmp_path):
    compose.tmp_path = tmp_path
    return compose


# ---------------------------------------------------------------- refusals (default suite)
def test_default_is_hf_and_starts_no_engine(compose, tmp_path):
    cfg = compose(smoke_overrides(tmp_path))
    assert cfg.sampler.name == "hf"
    assert vllm_engine.configure(cfg) is None and vllm_engine.current() is None


@pytest.mark.slow  # a whole process (the refusal's text is checked in the default suite below)
def test_vllm_without_the_engine_is_one_line_exit_2_naming_the_make_target(tmp_path):
    env = {**os.environ, "MINILLM_VLLM_PYTHON": str(tmp_path / "no-python")}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "minillm.run",
            "sampler=vllm",
            f"hydra.run.dir={tmp_path / 'run'}",
            "logger=none",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("error: sampler=vllm: no vLLM engine at sampler.python=")
    assert "make install-vllm" in lines[-1] and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["objective=reverse_kld", "objective.teacher_mix_alpha=0.2", *SHAPE],
            r"objective.teacher_mix_alpha=0.2: the engine .* use sampler=hf",
        ),
        (
            [
                "objective=reverse_kld",
                "objective.teacher_mix_alpha=0",
                "objective.alpha_schedule=linear",
                "objective.alpha_end=0.3",
                *SHAPE,
            ],
            r"objective.alpha_end=0.3: the engine",
        ),
        (["objective=onpolicy_rkl"], r"student: head size 16 .* CPU attention"),  # tiny_llama: 64 / 4 heads
        (
            ["objective=onpolicy_rkl", *SHAPE, "sampler.kv_cache_gib=100000"],
            r"sampler.kv_cache_gib=100000: more than this machine",
        ),
        (
            [
                "objective=onpolicy_rkl",
                *SHAPE,
                "sampler.max_model_len=2000000",
                "student.arch.max_position_embeddings=2000000",
            ],
            r"sampler.kv_cache_gib=1: one sequence of sampler.max_model_len=2000000 tokens of student needs 1.91 GiB",
        ),
        (
            ["objective=onpolicy_rkl", *SHAPE, "student.arch.model_type=gpt2"],
            r"student: sampler=vllm does not sample gpt2 models",
        ),
        (
            ["objective=onpolicy_rkl", *SHAPE, "student.lora.r=4"],
            r"student.lora.r: sampler=vllm pushes plain",
        ),
        (
            ["objective=onpolicy_rkl", *SHAPE, "sampler.gpu_memory_utilization=1.5"],
            r"sampler.gpu_memory_utilization=1.5: the engine's share of the GPU's memory, in \(0, 1\)",
        ),
    ],
    ids=[
        "alpha",
        "alpha-schedule",
        "head-size",
        "kv-machine",
        "kv-sequence",
        "architecture",
        "lora",
        "gpu-share",
    ],
)
def test_vllm_refusals_name_the_key(compose_vllm, engine_found, overrides, message):
    """Each refusal, past the install check; the install check itself: the next test."""
    with pytest.raises(MinillmError, match=message):
        _validate(compose_vllm, *overrides)


def test_the_embedded_pair_is_refused_by_its_head_size_before_any_model_loads(
    compose, tmp_path, engine_found, monkeypatch
):
    """The default (embedded) student and teacher have 4 heads of 8: vLLM's CPU attention cannot run them.
    ``train`` stops on the config, naming the folder and the head size, before it loads a model."""
    from minillm.models import loading
    from minillm.run import train

    def loads(*args, **kwargs):
        raise AssertionError("a model was loaded before the refusal")

    monkeypatch.setattr(loading, "load_models", loads)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU's head sizes
    cfg = compose([f"cache_dir={tmp_path / 'cache'}", "sampler=vllm", "objective=onpolicy_rkl"])
    assert cfg.student.name == "embedded-student" and cfg.sampler.name == "vllm"
    with pytest.raises(MinillmError) as err:
        train(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("student.path=") and "assets/embedded/student_init: head size 8" in message
    assert message.endswith("use sampler=hf")


def test_ddp_ranks_share_the_cores_between_their_engines(compose, tmp_path, monkeypatch):
    """``sampler.threads=null``: each rank's engine takes its share of the machine's cores (2 ranks on 2 cores:
    one thread each, not two engines of two threads); a set value is taken as it is."""
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    base = smoke_overrides(tmp_path, "sampler=vllm", *SHAPE)
    alone = compose(base)
    ddp = compose([*base, "strategy=ddp", "trainer.devices=2"])
    ddp3 = compose([*base, "strategy=ddp", "trainer.devices=3"])
    assert [vllm_engine.ranks_per_machine(c) for c in (alone, ddp, ddp3)] == [1, 2, 3]
    assert vllm_engine._settings(alone.sampler, alone)["threads"] == 6
    assert vllm_engine._settings(ddp.sampler, ddp)["threads"] == 3
    assert vllm_engine._settings(ddp3.sampler, ddp3)["threads"] == 2
    fixed = compose([*base, "strategy=ddp", "trainer.devices=2", "sampler.threads=5"])
    assert vllm_engine._settings(fixed.sampler, fixed)["threads"] == 5
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert vllm_engine.engine_threads(None, 2) == 1 and vllm_engine.engine_threads(None, 3) == 1


def test_the_engine_process_is_a_world_of_its_own(monkeypatch):
    """Under a launcher the engine sees none of the trainer's rank variables (vLLM would read them), and on
    CUDA only the GPU of its rank."""
    launcher = {
        "RANK": "1",
        "LOCAL_RANK": "1",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
    }
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    env = vllm_engine._world_of_its_own({**launcher, "HOME": "/h"})
    assert env == {"HOME": "/h"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert vllm_engine._world_of_its_own(launcher) == {"CUDA_VISIBLE_DEVICES": "6"}


def test_vllm_without_the_engine_names_the_make_target(compose_vllm, tmp_path):
    with pytest.raises(MinillmError, match=r"sampler=vllm: no vLLM engine at .*`make install-vllm`"):
        _validate(compose_vllm, "objective=onpolicy_rkl", *SHAPE, f"sampler.python={tmp_path / 'no-python'}")


def test_vllm_accepts_alpha_zero_and_the_shape_it_can_sample(compose_vllm, engine_found):
    _validate(compose_vllm, "objective=reverse_kld", "objective.teacher_mix_alpha=0", *SHAPE)
    _validate(compose_vllm, "objective=gkd", *SHAPE)


def test_evaluate_with_vllm_refuses_the_ngram_filter_and_ignores_the_objectives_alpha(
    compose, tmp_path, engine_found
):
    from minillm.config import validate_config

    base = smoke_overrides(tmp_path, "sampler=vllm", *SHAPE)
    validate_config(compose(base, config_name="evaluate"))  # reverse_kld's α = 0.2: evaluation trains nothing
    with pytest.raises(MinillmError, match="evaluate.no_repeat_ngram_size=3: the engine has no such filter"):
        validate_config(compose([*base, "evaluate.no_repeat_ngram_size=3"], config_name="evaluate"))


class _TokensFromNowhere(vllm_engine.VllmSampler):
    """An engine that starts no process: each row's ``max_new_tokens`` tokens drawn uniformly (the bench's
    bookkeeping needs what the trainer does with an engine's samples, not the engine)."""

    def __init__(self, vocab_size: int):
        super().__init__(python="none", kv_cache_gib=1, threads=1, max_model_len=64)
        self.vocab_size, self.calls = vocab_size, 0

    def sample_ids(self, model, prompts, sampling, *, generator):
        self.calls += 1
        ids = torch.randint(0, self.vocab_size, (len(prompts), sampling.max_new_tokens), generator=generator)
        return ids.tolist()


def test_bench_counts_the_trainers_pass_over_the_engines_samples(tmp_path):
    """``make bench``'s α = 0 round with each sampler, forward tokens counted by hooks on the trainer's models:
    with the engine, the student's count holds the no-grad pass that records the log-probs (one whole prompt +
    response per row) besides the updates' passes; with our decoder, its decoding steps instead."""
    import dataclasses

    from minillm.bench.models import bench_models
    from minillm.bench.samplers import round_forward_tokens
    from minillm.bench.settings import make_runtime, step_settings
    from minillm.bench.step import step_runner

    from .test_bench import TINY, compose_bench

    cfg = compose_bench(TINY, tmp_path)
    runtime = make_runtime(cfg)
    models = bench_models(cfg, runtime)
    s = dataclasses.replace(step_settings(cfg, models.teacher, models.eos_token_id), alpha=0.0)
    engine = _TokensFromNowhere(models.vocab_size)
    rounds = {side: step_runner(models, runtime, cfg, s) for side in ("hf", "vllm")}
    counted = round_forward_tokens(rounds, models, runtime, engine, s)
    assert engine.calls == 1 and vllm_engine.current() is None  # the engine sampled the vllm round only
    b, p, t, epochs = 4, 3, 5, 2  # TINY: num_rollouts, prompt_len, response_len, ppo_epochs
    assert (s.batch_size, s.prompt_len, s.response_len, s.round.ppo_epochs) == (b, p, t, epochs)
    updates = epochs * b * (p + t)
    assert counted["hf"]["student"] == b * (p + t - 1) + updates == counted["hf"]["student_needed"]
    assert counted["vllm"]["student"] == b * (p + t) + updates == counted["vllm"]["student_needed"]
    assert counted["hf"]["met"] and counted["vllm"]["met"]
    assert counted["hf"]["teacher"] == counted["vllm"]["teacher"] == b * (p + t)


# ---------------------------------------------------------------- the engine against the trainer (slow)
def _model(scale: float):
    """A tied Llama with head size 32; ``scale`` multiplies the final norm, so the logits (and how peaked the
    next-token distribution is)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.model.norm.weight.mul_(scale)
    return model


@pytest.fixture(scope="module")
def engine():
    sampler = vllm_engine.VllmSampler(python=ENGINE_PYTHON, kv_cache_gib=1, threads=2, max_model_len=512)
    yield sampler
    sampler.close()


# Ragged prompts, two of them longer than a KV block (so the prefix cache holds them between calls).
PROMPTS = [list(range(3, 150)), [5, 9, 11], list(range(7, 80)), list(range(20, 190))]


def _engine_logprobs(engine, rollout) -> torch.Tensor:
    out = torch.zeros_like(rollout.student_logprobs)
    for row, values in enumerate(engine.last_engine_logprobs):
        out[row, : len(values)] = torch.tensor(values)
    return out


def _sample(engine, model, seed=0, **kw):
    prompt_ids, prompt_mask = left_pad(PROMPTS, 0)
    settings = dict(max_new_tokens=24, eos_token_id=2, pad_token_id=0, temperature=0.7, top_k=0, top_p=0.9)
    settings.update(kw)
    return engine.generate(
        model,
        prompt_ids,
        prompt_mask,
        SamplingOptions(**settings),
        generator=torch.Generator().manual_seed(seed),
    )


@pytest.mark.slow
@needs_engine
def test_engine_logprobs_equal_the_trainers_and_a_seed_repeats(engine):
    model = _model(scale=3.0)
    rollout = _sample(engine, model)
    lengths = rollout.response_mask.sum(1)
    assert lengths.min() >= 1 and rollout.response_mask.shape == rollout.response_ids.shape
    # the EOS is kept inside the mask, as our decoder does; nothing after it
    for row, n in enumerate(lengths.tolist()):
        ids = rollout.response_ids[row, :n].tolist()
        assert 2 not in ids[:-1] and (n == 24 or ids[-1] == 2)
    diff = (_engine_logprobs(engine, rollout) - rollout.student_logprobs).abs().max().item()
    assert diff < 1e-4, diff
    # the trainer's pass also gave the sampled-from log-prob (temperature 0.7, top-p 0.9): never below the
    # temperature-1 one for a kept token here, and 0 outside the mask
    assert torch.all(rollout.mix_logprobs[rollout.response_mask == 0] == 0)
    again = _sample(engine, model)
    assert torch.equal(again.response_ids, rollout.response_ids)
    other = _sample(engine, model, seed=1)
    assert not torch.equal(other.response_ids, rollout.response_ids)


def _chi2(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's statistic of ``counts`` against ``probs`` over the tokens with mass; inf if a token without
    mass was drawn."""
    n = counts.sum()
    if bool((counts[probs == 0] > 0).any()):
        return float("inf")
    keep = probs > 0
    expected = n * probs[keep]
    return float(((counts[keep] - expected) ** 2 / expected).sum())


@pytest.mark.slow
@needs_engine
def test_first_token_frequencies_match_the_trainers_softmax(engine):
    model = _model(scale=3.0)
    prompt = [5, 9, 11, 13]
    temperature, top_k, n = 0.7, 6, 3000
    tokens = engine.sample_ids(
        model,
        [prompt] * n,
        SamplingOptions(
            max_new_tokens=1, eos_token_id=None, pad_token_id=0, temperature=temperature, top_k=top_k
        ),
        generator=torch.Generator().manual_seed(0),
    )
    counts = torch.bincount(torch.tensor([t[0] for t in tokens]), minlength=256).double()
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0, -1].double()

    def top_k_softmax(tau: float, k: int) -> torch.Tensor:
        scaled = logits / tau
        kth = torch.topk(scaled, k).values[-1]
        return torch.softmax(scaled.masked_fill(scaled < kth, float("-inf")), dim=-1)

    # 6 cells: chi2(5) exceeds 25.7 with probability 1e-4
    right = top_k_softmax(temperature, top_k)
    assert right.max() < 0.9  # a spread the test can see (not one token taking everything)
    assert _chi2(counts, right) < 25.7
    # the same counts are far from a wrong temperature and from no top-k: the test has the power to fail
    assert _chi2(counts, top_k_softmax(1.0, top_k)) > 100
    assert _chi2(counts, top_k_softmax(0.5, top_k)) > 100
    assert _chi2(counts, torch.softmax(logits / temperature, dim=-1)) > 100


@pytest.mark.slow
@needs_engine
@pytest.mark.parametrize(
    "broken", [None, "repack_head", "reset_cache"], ids=["push", "no-head-repack", "no-cache-reset"]
)
def test_a_weight_push_moves_the_engine(engine, broken):
    """Perturb every weight (the embedding, which is the tied head, included), push, and the engine's log-probs
    are the new trainer's. Each trap, skipped on purpose, must break that: the engine then keeps sampling from
    the old head, or serves the prompts' KV computed under the old weights."""
    model = _model(scale=3.0)
    _sample(engine, model)  # the engine holds these weights, and the long prompts' KV in its prefix cache
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    pushes = engine.pushes
    if broken:
        setattr(engine, broken, False)
    try:
        rollout = _sample(engine, model)
    finally:
        engine.repack_head = engine.reset_cache = True
    assert engine.pushes == pushes + 1
    diff = (_engine_logprobs(engine, rollout) - rollout.student_logprobs).abs().max().item()
    if broken is None:
        assert diff < 1e-4, diff
    else:
        assert diff > 1e-2, (
            f"{broken} skipped and the engine still agrees ({diff}): the test has lost its power"
        )


@pytest.mark.slow
@needs_engine
def test_no_push_while_the_weights_are_unchanged(engine):
    model = _model(scale=3.0)
    _sample(engine, model)
    pushes = engine.pushes
    _sample(engine, model, seed=3)
    assert engine.pushes == pushes
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(1.01)  # in place, as an optimizer step
    _sample(engine, model, seed=3)
    assert engine.pushes == pushes + 1


# ---------------------------------------------------------------- smoke runs (slow)
def _vllm_run(compose, tmp_path, name, *extra):
    from minillm.run import train

    overrides = smoke_overrides(tmp_path, "sampler=vllm", f"sampler.python={ENGINE_PYTHON}", *SHAPE, *extra)
    return train(compose(overrides, run_dir=tmp_path / name))


@pytest.mark.slow
@needs_engine
@pytest.mark.parametrize(
    "objective",
    [
        ["objective=onpolicy_rkl"],
        ["objective=gkd", "objective.on_policy_fraction=1.0"],
        ["objective=reverse_kld", "objective.teacher_mix_alpha=0", "objective.mini_batch_size=2"],
        ["objective=seqkd", "objective.max_new_tokens=16", "objective.batch_size=16"],
    ],
    ids=["onpolicy_rkl", "gkd", "reverse_kld-alpha0", "seqkd"],
)
def test_smoke_runs_sample_through_the_engine(compose, tmp_path, objective):
    results = _vllm_run(compose, tmp_path, "run", "logger=csv", *objective)
    engine = vllm_engine.current()
    assert engine is not None and engine.pushes > 0  # the engine sampled, after weight pushes
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["global_step"] == results["global_step"] > 0
    for key in ("test/rougeL", "teacher/rougeL", "init/rougeL"):
        assert 0.0 <= saved[key] <= 100.0


@pytest.mark.slow
@needs_engine
def test_a_resumed_vllm_run_ends_with_the_straight_runs_weights_and_evaluates(compose, tmp_path):
    """Stopped after 2 of 4 steps and resumed, the run ends with the straight run's weights and scores. Each run
    gets a fresh engine, as a new process would (an engine kept across runs would carry its prefix cache)."""
    from omegaconf import OmegaConf

    from minillm.errors import RunInterrupted

    def fresh_engine():
        vllm_engine.configure(OmegaConf.create({"sampler": {"name": "hf"}}))  # closes the process's engine

    extra = ["logger=csv", "eval.compare=false", "objective=onpolicy_rkl", "trainer.max_steps=4"]
    engines = []
    straight = _vllm_run(compose, tmp_path, "straight", *extra)
    engines.append(vllm_engine.current())
    fresh_engine()
    with pytest.raises(RunInterrupted):
        _vllm_run(compose, tmp_path, "stopped", *extra, "fit.stop_at_step=2")
    engines.append(vllm_engine.current())
    fresh_engine()
    ckpt = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    resumed = _vllm_run(compose, tmp_path, "resume", *extra, f"ckpt_path={ckpt}")
    engines.append(vllm_engine.current())
    assert len({id(e) for e in engines}) == 3 and all(e.pushes > 0 for e in engines)
    assert resumed["global_step"] == straight["global_step"] == 4
    assert resumed["final_weights_sha1"] == straight["final_weights_sha1"]
    assert resumed["test/rougeL"] == straight["test/rougeL"]

    from minillm.evaluation.suite import run_evaluation

    overrides = smoke_overrides(
        tmp_path,
        "sampler=vllm",
        f"sampler.python={ENGINE_PYTHON}",
        *SHAPE,
        f"evaluate.path={tmp_path / 'straight'}",
    )
    cfg = compose([*overrides, "evaluate.metrics=[rouge]"], run_dir=tmp_path / "eval", config_name="evaluate")
    evaluated = run_evaluation(cfg)
    assert 0.0 <= evaluated["test/rougeL"] <= 100.0


@pytest.mark.slow  # two ranks, each with its own engine: minutes on a shared 2-core machine
@needs_engine
def test_each_ddp_rank_samples_with_its_own_engine_and_the_run_finishes(tmp_path):
    """``strategy=ddp trainer.devices=2`` over gloo on CPU with ``sampler=vllm``: Lightning launches the second
    rank, each rank starts an engine of its own (its own process and shared-memory folder) on its share of the
    cores, and the run ends with the configured steps."""
    import re

    run_dir = tmp_path / "run"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "MINILLM_VLLM_PYTHON": ENGINE_PYTHON,
    }
    env.pop("OMP_NUM_THREADS", None)  # the share is the engine's own choice here
    cmd = [sys.executable, "-m", "minillm.run", *smoke_overrides(tmp_path), "objective=onpolicy_rkl",
           "strategy=ddp", "trainer.devices=2", "logger=csv", "sampler=vllm", f"hydra.run.dir={run_dir}",
           *SHAPE]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["global_step"] == 3 and results["test/rougeL"] is not None
    starts = re.findall(
        r"sampler=vllm: rank (\d+) starts an engine \(process (\d+), (\d+) threads?\) in (\S+)",
        done.stdout + done.stderr,
    )
    ranks = {rank for rank, *_ in starts}
    assert ranks == {"0", "1"}, starts
    by_rank = {rank: (pid, threads, folder) for rank, pid, threads, folder in starts}
    assert by_rank["0"][0] != by_rank["1"][0]  # two trainer processes…
    assert Path(by_rank["0"][2]).parent != Path(by_rank["1"][2]).parent  # …each with its own scratch folder
    share = max(1, (os.cpu_count() or 1) // 2)
    assert {int(threads) for _, threads, _ in by_rank.values()} == {share}
