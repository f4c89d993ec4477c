"""`make bench` on a tiny configuration: it runs, writes its JSON, counts forward tokens exactly, and
times training's own round (``MiniLLMRound``) with the options the composed ``objective`` group gives.

Speed is never asserted here (see docs/benchmarks.md); only the bookkeeping is. The chunked
full-vocabulary divergence equals the plain one in tests/test_divergences.py::test_chunked_equals_plain.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

import pytest
import torch

from minillm.bench.app import bench, run_bench, write_results
from minillm.bench.tables import render
from minillm.bench.trl_gkd import trl_target
from minillm.errors import MinillmError

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY_ARCH = [
    f"{key}.arch.{k}={v}"
    for key in ("teacher", "student")
    for k, v in dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    ).items()
]
TINY = [
    "teacher=tiny_llama",  # the run's presets, built from their (shrunk) architectures
    "student=tiny_llama",
    "tokenizer.vocab_size=50",
    *TINY_ARCH,
    "objective.num_rollouts=4",
    "prompt_len=3",
    "response_len=5",
    "objective.mini_batch_size=3",  # 2 minibatches (3 + 1 rows) per inner epoch
    "objective.ppo_epochs=2",
    "repeats=1",
    "warmup=1",
    "sweep.response_lens=[2,4]",
    "sweep.batch_size=2",
    "sweep.batch_sizes=[2,3]",
    "sweep.response_len=2",
    "fit.num_threads=1",
    "plain=true",
    "vocab_memory.vocab_size=64",
    "vocab_memory.batch_size=2",
    "vocab_memory.response_len=8",
    "vocab_memory.chunk_sizes=[3]",
    "trl_gkd.enabled=false",  # the TRL comparison has its own tests below
    "pairs.repeats=1",
    "pairs.warmup=0",
    "pairs.decode=null",  # the decode pair has its own test below (compiling is slow here)
    "pairs.fast_path=null",  # so has the whole round's fast path
]


def compose_bench(overrides: list[str], run_dir: Path):
    """conf/bench.yaml composed and resolved as `python -m minillm.bench` would."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, read_write

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="bench", overrides=[f"hydra.run.dir={run_dir}", *overrides], return_hydra_config=True
        )
        with read_write(cfg.hydra.runtime):
            cfg.hydra.runtime.output_dir = str(run_dir)
            cfg.hydra.runtime.cwd = str(run_dir)
        HydraConfig.instance().set_config(cfg)
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.create(OmegaConf.to_container(job, resolve=True))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("bench")
    cfg = compose_bench([*TINY, "save=true"], run_dir)
    out = run_bench(cfg)
    paths = write_results(out, cfg)
    return out, paths, cfg


def test_bench_writes_every_field(results):
    out, paths, cfg = results
    assert paths == [Path(cfg.output_dir) / "bench.json", Path(cfg.save_dir) / "bench.json"]
    saved = json.loads(paths[1].read_text())
    assert set(saved) == {
        "machine",
        "models",
        "rollout",
        "steps",
        "sweep",
        "vocab_memory",
        "targets",
        "settings",
        "trl_gkd",
        "samplers",
        "pairs",
    }
    assert saved["trl_gkd"] == {"skipped": "trl_gkd.enabled=false"}
    assert saved["samplers"] == {"skipped": "samplers.enabled=false"}  # hf vs vllm: only when asked
    from minillm.training.precision import bf16_supported

    build = saved["pairs"]["round_build"]
    assert (build["old"], build["new"]) == ("rebuilt every step", "built once")
    precision = saved["pairs"]["precision"]
    if bf16_supported("cpu"):
        assert (precision["old"], precision["new"]) == ("fp32", "bf16-mixed")
    else:
        assert precision == {"skipped": "this cpu has no native bf16"}
    for pair in (build, precision) if "skipped" not in precision else (build,):
        times = pair["seconds"]
        assert [len(v) for v in times.values()] == [1, 1] and all(t > 0 for v in times.values() for t in v)
        first, second = times.values()
        assert pair["speedup"] == pytest.approx(first[0] / second[0])
        assert len(pair["load_avg_before"]) == len(pair["load_avg_after"]) == 3
    by_name = {t["target"]: t for t in saved["targets"]}
    (built_once,) = [t for name, t in by_name.items() if name.startswith("MiniLLM step: round built once")]
    (bf16_row,) = [t for name, t in by_name.items() if name.startswith("MiniLLM step: bf16-mixed ≥ 1.5×")]
    assert built_once["value"] == build["speedup"] and built_once["ok"] == (build["speedup"] >= 1.0)
    assert bf16_row["value"] == precision.get("speedup")
    vm = saved["vocab_memory"]
    assert vm["shape"] == [2, 8, 64] and [r["chunk_size"] for r in vm["rows"]] == [3, None]
    assert vm["max_abs_diff_vs_one_pass"] < 1e-6  # chunked: the same loss and gradient
    assert (
        saved["models"]["teacher"]["random_init"]
        and "teacher.path=null" in saved["models"]["teacher"]["source"]
    )
    assert set(saved["rollout"]["runs"]) == {
        "lockstep α=0.2",
        "lockstep α=0",
        "student alone",
        "teacher alone",
        "teacher one pass",
    }
    assert saved["rollout"]["tokens"] == 4 * 5
    assert saved["rollout"]["ratio_main"] > 0
    assert set(saved["steps"]) == {"minillm", "minillm_rescored", "gkd_equivalent", "gkd_one_teacher_pass"}
    for step in saved["steps"].values():
        assert step["seconds"] > 0 and step["memory"]["peak_mib"] > 0
        assert set(step["parts"]) == {"rollout", "teacher_scoring", "student_fwd_bwd", "optimizer", "other"}
        assert step["seconds"] == pytest.approx(sum(step["parts"].values()))
    assert saved["steps"]["minillm"]["parts"]["teacher_scoring"] == 0.0
    assert saved["steps"]["minillm_rescored"]["parts"]["teacher_scoring"] > 0.0
    assert saved["steps"]["minillm"]["updates"] == 2 * 2
    # sweep points: lengths 2, 4 at batch 2, batches 2, 3 at length 2 ((2, 2) measured once)
    assert [(p["batch_size"], p["response_len"]) for p in saved["sweep"]["points"]] == [
        (2, 2),
        (2, 4),
        (3, 2),
    ]
    assert saved["sweep"]["length_fit"]["r2"] == pytest.approx(1.0)  # two points fit exactly
    assert saved["sweep"]["length_fit"]["ratio_256_128"] is None
    # the plain-decoding reference is timed at every length of the length sweep (batch 2), not elsewhere
    assert [p.get("decode_bound_seconds", 0) > 0 for p in saved["sweep"]["points"]] == [True, True, False]
    assert {t["target"][:8] for t in saved["targets"]} >= {"lockstep", "teacher ", "student "}
    text = render(out, plain=True)
    for title in (
        "Rollout throughput",
        "Distillation step",
        "Step-time sweep",
        "Linearity",
        "Full-vocabulary single-step term",
        "Targets",
    ):
        assert title in text


def test_forward_tokens_equal_what_the_algorithm_needs(results):
    steps = results[0]["steps"]
    batch, prompt, response, epochs = 4, 3, 5, 2
    rollout = batch * (prompt + response - 1)  # the last sampled token is never fed back
    full_pass = batch * (prompt + response)  # one teacher-forced pass over every row
    cached = steps["minillm"]["forward_tokens"]
    assert cached["teacher"] == cached["teacher_needed"] == rollout  # teacher log-probs from the rollout
    assert cached["student"] == cached["student_needed"] == rollout + epochs * full_pass
    assert cached["teacher_passes_per_epoch"] == 0
    rescored = steps["minillm_rescored"]["forward_tokens"]
    assert rescored["teacher"] == rollout + epochs * full_pass  # one teacher pass per minibatch
    assert rescored["teacher_passes_per_epoch"] == 1
    gkd = steps["gkd_equivalent"]
    assert gkd["settings"]["alpha"] == 0.0 and not gkd["settings"]["pg_term"]
    assert gkd["forward_tokens"]["teacher"] == rollout
    assert gkd["forward_tokens"]["student"] == rollout + full_pass  # one update per batch
    one_pass = steps["gkd_one_teacher_pass"]
    assert one_pass["forward_tokens"]["teacher"] == full_pass  # scored after decoding, one forward
    assert one_pass["forward_tokens"]["student"] == rollout + full_pass
    assert one_pass["parts"]["teacher_scoring"] > 0


TRL_TINY = [*TINY, "trl_gkd.enabled=true", "trl_gkd.repeats=3", "trl_gkd.warmup=1"]


def test_trl_ratio_comes_from_alternating_steps_in_one_run(tmp_path):
    """TRL's GKDTrainer step and ours run in turn in this process, and the ratio is median ÷ median of
    those timings: no figure from another time or machine enters it."""
    pytest.importorskip("trl")
    from minillm.bench.models import bench_models
    from minillm.bench.settings import gkd_one_pass, make_runtime, step_settings
    from minillm.bench.trl_gkd import TRL_STEP
    from minillm.bench.trl_gkd import trl_gkd_comparison as compare

    cfg = compose_bench([*TRL_TINY, "trl_gkd.decode=static"], tmp_path)  # our step on the static cache
    runtime = make_runtime(cfg)
    models = bench_models(cfg, runtime)
    s = gkd_one_pass(step_settings(cfg, models.teacher, models.eos_token_id))
    out = compare(models, runtime, cfg, s)

    assert out["decode"] == "static" and "sampler.decode=static)" in trl_target(out)["target"]
    from minillm.rollout import static_decode
    from minillm.rollout.sampler import _unwrap

    assert (
        static_decode._states.get(_unwrap(models.student)) is not None
    )  # our steps decoded on the static cache
    assert out["ours"] == TRL_STEP and out["settings"]["round"]["teacher_after_decoding"]
    assert not out["activation_checkpointing"]  # TRL's default (True) would recompute the forward
    timeline = out["timeline"]
    assert [e["side"] for e in timeline] == ["trl", "ours"] * 4  # 1 warm-up pair + 3 timed, alternating
    starts = [e["start"] for e in timeline]
    assert starts == sorted(starts)
    for before, after in zip(timeline, timeline[1:], strict=False):  # one ends before the next begins
        assert before["start"] + before["seconds"] <= after["start"] + 1e-6
    assert out["trl_seconds"] == [e["seconds"] for e in timeline[2::2]]
    assert out["ours_seconds"] == [e["seconds"] for e in timeline[3::2]]
    median = statistics.median
    assert out["speedup"] == median(out["trl_seconds"]) / median(out["ours_seconds"])
    pairs = [t / o for t, o in zip(out["trl_seconds"], out["ours_seconds"], strict=True)]
    assert out["pair_ratios"] == pairs
    assert (out["pair_ratio_min"], out["pair_ratio_max"]) == (min(pairs), max(pairs))
    assert trl_target(out)["value"] == out["speedup"]
    assert out["torch_threads"] == 1  # fit.num_threads=1 of TINY, for both sides


def test_trl_comparison_is_skipped_with_its_reason_when_trl_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "trl", None)  # `import trl` raises ImportError, as without TRL
    results = bench(compose_bench([*TRL_TINY, "vocab_memory.enabled=false"], tmp_path))
    assert results["trl_gkd"]["skipped"].startswith("TRL is not importable (")
    row = results["targets"][-1]
    assert row["target"].startswith("GKD-equivalent step") and row["value"] is None and row["ok"] is None
    out = capsys.readouterr().out
    assert "TRL GKDTrainer comparison skipped: TRL is not importable (" in out
    target_line = next(line for line in out.splitlines() if line.startswith("GKD-equivalent step"))
    assert target_line.split()[-2:] == ["—", "skipped"]
    assert "GKD step against TRL" not in out  # no table of TRL figures


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["device=cuda"], "device=cuda: no CUDA device"),
        (["dtype=bf16"], "dtype=bf16: this cpu has no native bf16"),
        (["compile=true"], "compile=true: part of the CUDA path"),
        (["objective.compile_decode=true"], "objective.compile_decode=true: the benchmark does not read it"),
        (["objective.teacher_mix_alpha=1.5"], r"objective.teacher_mix_alpha=1.5: must lie in \[0, 1\]"),
        (["objective.num_rollouts=0"], "objective.num_rollouts=0: must be a positive integer"),
        (
            ["objective.max_new_tokens=9"],
            "objective.max_new_tokens=9: make bench decodes exactly response_len=5",
        ),
        (["objective.pt_coef=1.0"], "objective.pt_coef=1.0: make bench times the round without L_PT"),
        (
            ["teacher.path=/nonexistent/teacher"],
            "teacher.path=/nonexistent/teacher: model path does not exist",
        ),
    ],
)
def test_bad_settings_fail_clearly(tmp_path, overrides, message):
    if "device=cuda" in overrides and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from minillm.training.precision import bf16_supported

    if "dtype=bf16" in overrides and bf16_supported("cpu"):
        pytest.skip("this CPU has native bf16: dtype=bf16 runs here")
    cfg = compose_bench([*TINY, *overrides], tmp_path)
    with pytest.raises(MinillmError, match=message):
        run_bench(cfg)


def test_a_supervised_objective_is_refused(tmp_path):
    """objective=sft has no rollouts: composition refuses bench's objective.num_rollouts for it, in one line."""
    from minillm.cli import hydra_error_line

    tiny = [o for o in TINY if not o.startswith("objective.")]  # sft has no minibatches nor inner epochs
    with pytest.raises(Exception) as refused:
        compose_bench([*tiny, "objective=sft"], tmp_path)
    assert hydra_error_line(refused.value) == (
        "objective.num_rollouts (set by bench) is read only by objective=reverse_kld or objective=onpolicy_rkl, "
        "and objective=sft ignores it: bench runs with objective=reverse_kld (or another of those), not "
        "objective=sft"
    )


def test_bench_autocast_is_lightnings():
    """The bench's bf16 regions autocast as Lightning's bf16-mixed training does: without autocast's cache of
    cast weights (a round's optimizer steps change them in place inside one region, so a cached cast would be
    stale, and training pays the cast on every forward)."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    from minillm.bench.settings import Runtime

    with Runtime(torch.device("cpu"), "bf16", False).autocast():
        ours = (
            torch.is_autocast_enabled("cpu"),
            torch.get_autocast_dtype("cpu"),
            torch.is_autocast_cache_enabled(),
        )
    with MixedPrecision("bf16-mixed", "cpu").autocast_context_manager():
        theirs = (
            torch.is_autocast_enabled("cpu"),
            torch.get_autocast_dtype("cpu"),
            torch.is_autocast_cache_enabled(),
        )
    assert ours == theirs == (True, torch.bfloat16, False)


def test_records_name_the_commit_they_timed(results):
    """Each record says which code it timed (``git describe --always --dirty`` of the checkout), or null outside
    a git checkout."""
    import re
    import shutil

    from minillm.bench.app import source_commit

    out, _, _ = results
    assert out["machine"]["commit"] == source_commit()
    if shutil.which("git") and (Path(__file__).resolve().parents[1] / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{7,}(-dirty)?", out["machine"]["commit"])


def test_cli_reports_errors_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench(compose_bench([*TINY, "objective.num_rollouts=0"], tmp_path))
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == "error: objective.num_rollouts=0: must be a positive integer"
    )


def test_bench_times_the_training_round_with_the_objectives_options(tmp_path, monkeypatch):
    """The timed round is training's ``MiniLLMRound`` (every update goes through it), with the options a run
    builds from the same ``objective`` and ``optim`` keys: here a non-default variant, minibatch and clip."""
    from minillm.bench.models import bench_models
    from minillm.bench.settings import make_runtime, step_settings
    from minillm.bench.step import measure_step
    from minillm.objectives.policy_gradient import PGOptions
    from minillm.training.options import RoundOptions
    from minillm.training.round import MiniLLMRound

    overrides = ["objective.variant=paper", "objective.mini_batch_size=2", "grad_clip=0.5"]
    cfg = compose_bench([*TINY, *overrides], tmp_path)
    runtime = make_runtime(cfg)
    models = bench_models(cfg, runtime)
    s = step_settings(cfg, models.teacher, models.eos_token_id)
    expected = RoundOptions.from_config(
        cfg.objective,
        grad_clip=cfg.grad_clip,
        eos_token_id=None,
        pad_token_id=models.eos_token_id,
        keep_teacher_logits=True,
    )
    assert s.round == expected
    assert (s.round.pg, s.round.mini_batch_size, s.round.grad_clip) == (PGOptions.paper(), 2, 0.5)
    assert s.round.disable_dropout and s.round.sampling.max_new_tokens == s.response_len == 5

    updates = []
    real = MiniLLMRound.update

    def update(self, mb):
        updates.append((self.options, len(mb)))
        return real(self, mb)

    monkeypatch.setattr(MiniLLMRound, "update", update)
    out = measure_step(models, runtime, cfg, s, repeats=1, warmup=0, detail=False)
    assert updates == [(s.round, 2)] * 4  # 2 inner epochs × 2 minibatches of 2 of the 4 rollouts
    assert out["updates"] == 4


def test_bench_builds_the_round_once_as_training_does_and_per_step_on_request(tmp_path, monkeypatch):
    """``step_runner`` keeps one ``MiniLLMRound`` across timed steps (training builds it once per fit);
    ``build_per_step=True`` (the old path, for the comparison) rebuilds it from the config each step, with
    the same options."""
    from minillm.bench.measure import Clock
    from minillm.bench.models import bench_models
    from minillm.bench.settings import make_runtime, step_settings
    from minillm.bench.step import step_runner
    from minillm.training.round import MiniLLMRound

    cfg = compose_bench([*TINY, "objective.variant=paper", "grad_clip=0.5"], tmp_path)
    runtime = make_runtime(cfg)
    models = bench_models(cfg, runtime)
    s = step_settings(cfg, models.teacher, models.eos_token_id)
    built = []
    real_init = MiniLLMRound.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        built.append(self.options)

    monkeypatch.setattr(MiniLLMRound, "__init__", init)
    once = step_runner(models, runtime, cfg, s)
    for _ in range(3):
        once(Clock(runtime))
    assert built == [s.round]
    built.clear()
    per_step = step_runner(models, runtime, cfg, s, build_per_step=True)
    for _ in range(3):
        per_step(Clock(runtime))
    assert built == [s.round] * 3


def test_pairs_only_times_the_old_and_new_paths_alone(tmp_path):
    """``pairs_only=true`` (large models): only the alternated pairs, their targets and the machine."""
    from minillm.bench.tables import render

    out = run_bench(compose_bench([*TINY, "pairs_only=true"], tmp_path))
    assert set(out) == {"machine", "models", "pairs", "targets", "settings"}
    assert [t["target"].split(":")[0] for t in out["targets"]] == ["MiniLLM step", "MiniLLM step"]
    text = render(out, plain=True)
    assert "MiniLLM step, round rebuilt every step against built once, timed alternately" in text
    assert "rebuilt every step ÷ built once" in text
    assert (
        0
        < out["pairs"]["round_build"]["rebuild_seconds"]
        < min(out["pairs"]["round_build"]["seconds"]["rebuilt every step"])
    )
    assert all(
        peak > 0 for pair in out["pairs"].values() if "peak_mib" in pair for peak in pair["peak_mib"].values()
    )
    precision_only = run_bench(
        compose_bench([*TINY, "pairs_only=true", "pairs.round_build=false", "pairs.draw=false"], tmp_path)
    )
    assert set(precision_only["pairs"]) == {"precision"} and len(precision_only["targets"]) == 1


def test_decode_pair_times_the_lockstep_rollout_eager_against_the_static_cache(tmp_path, monkeypatch):
    """``pairs.decode=static``: the lockstep rollout at the round's α, eager and static alternated, the same
    tokens on both sides, its target row and table; the other pairs can be switched off. The eager side draws
    with torch.multinomial (``pairs.old_draw=multinomial``, the path before issue 22) unless told otherwise."""
    from minillm.bench.tables import render

    calls = []
    multinomial = torch.multinomial
    monkeypatch.setattr(torch, "multinomial", lambda *a, **k: calls.append(1) or multinomial(*a, **k))
    args = [
        *TINY,
        "pairs_only=true",
        "pairs.precision=false",
        "pairs.round_build=false",
        "pairs.decode=static",
        "pairs.draw=false",
    ]
    out = run_bench(compose_bench([*args, "pairs.repeats=2"], tmp_path))
    decode = out["pairs"]["decode"]
    assert set(out["pairs"]) == {"decode"}
    assert (decode["old"], decode["new"]) == ("eager, torch.multinomial", "static")
    assert len(calls) == 3 * 5  # the eager side's 3 rollouts (1 untimed) of 5 tokens; none on the static side
    assert [len(v) for v in decode["seconds"].values()] == [2, 2] and decode["warmup"] == 1
    assert decode["same_tokens"] is True and decode["compilations"] == 0  # static: nothing compiled
    (row,) = out["targets"]
    assert row["target"].startswith(
        "lockstep α=0.2 rollout: sampler.decode=static ≥ 1.5× eager, torch.multinomial"
    )
    assert row["value"] == decode["speedup"] and row["ok"] == (decode["speedup"] >= 1.5)
    text = render(out, plain=True)
    assert "Lockstep rollout, sampler.decode=eager against the static cache, timed alternately" in text
    assert "eager, torch.multinomial ÷ static" in text and "0 graphs, same tokens" in text
    calls.clear()
    today = run_bench(compose_bench([*args, "pairs.repeats=1", "pairs.old_draw=draw"], tmp_path))
    assert (
        today["pairs"]["decode"]["old"] == "eager" and today["pairs"]["decode"]["same_tokens"] and not calls
    )
    with pytest.raises(MinillmError, match="pairs.old_draw='exp'"):
        run_bench(compose_bench([*args, "pairs.old_draw=exp"], tmp_path))
    with pytest.raises(MinillmError, match="pairs.decode='fast'"):
        run_bench(compose_bench([*args, "pairs.decode=fast"], tmp_path))


# the fast-path pair alone, decoding over the static cache (nothing compiled: fast)
FAST_PATH_ARGS = [
    *TINY,
    "pairs_only=true",
    "pairs.precision=false",
    "pairs.round_build=false",
    "pairs.fast_path=static",
    "pairs.fast_path_precision=bf16-mixed",  # auto (the default) has a test of its own
    "pairs.fast_path_updates=eager",  # the fast path's compiled updates: the test of their own, below
    "pairs.draw=false",
]


def test_fast_path_pair_times_the_whole_round_fp32_eager_against_bf16_with_the_static_cache(tmp_path):
    """``pairs.fast_path=static``: the whole round in fp32 with eager decoding against bf16 mixed precision with
    the static cache, alternated (the first pair untimed), its ≥ 1.5× target row and its table."""
    from minillm.bench.tables import render
    from minillm.training.precision import bf16_supported

    args = FAST_PATH_ARGS
    out = run_bench(compose_bench([*args, "pairs.repeats=2"], tmp_path))
    (row,) = out["targets"]
    fast = out["pairs"]["fast_path"]
    assert row["target"].startswith(
        "MiniLLM round: bf16-mixed + sampler.decode=static ≥ 1.5× faster than fp32"
    )
    if not bf16_supported("cpu"):
        assert "skipped" in fast and row["ok"] is None
        return
    assert set(out["pairs"]) == {"fast_path"} and (fast["old"], fast["new"]) == (
        "fp32 eager, torch.multinomial",
        "bf16-mixed static",
    )
    assert [len(v) for v in fast["seconds"].values()] == [2, 2] and fast["warmup"] == 1
    assert fast["compilations"] == 0 and fast["compile_failed"] == []  # static: nothing compiled
    assert row["value"] == fast["speedup"] and row["ok"] == (fast["speedup"] >= 1.5)
    text = render(out, plain=True)
    assert "MiniLLM round, fp32 eager against the fast path" in text
    assert "fp32 eager, torch.multinomial ÷ bf16-mixed static" in text and "0 graphs" in text
    with pytest.raises(MinillmError, match="pairs.fast_path='fast'"):
        run_bench(compose_bench([*args, "pairs.fast_path=fast"], tmp_path))


def test_draw_pair_times_torch_multinomial_against_the_samplers_draw_with_the_same_tokens(tmp_path):
    """``pairs.draw`` (on by default): 200 draws per side from the same seed, alternated; the same tokens, a
    table with a "same tokens" row; no target of its own."""
    from minillm.bench.tables import render

    args = [*TINY, "pairs_only=true", "pairs.precision=false", "pairs.round_build=false", "pairs.decode=null"]
    out = run_bench(compose_bench([*args, "pairs.repeats=2", "pairs.warmup=0"], tmp_path))
    pair = out["pairs"]["draw"]
    assert set(out["pairs"]) == {"draw"} and (pair["old"], pair["new"]) == ("torch.multinomial", "draw")
    assert pair["same_tokens"] is True and pair["settings"] == {
        "batch_size": 4,
        "vocab_size": 50,
        "calls": 200,
    }
    assert [len(v) for v in pair["seconds"].values()] == [2, 2] and out["targets"] == []
    text = render(out, plain=True)
    assert "One token per row drawn 200 times: torch.multinomial against the sampler's draw" in text
    assert "torch.multinomial ÷ draw" in text and "same tokens" in text


def test_fast_path_pair_in_fp32_times_fp32_eager_against_fp32_with_the_static_cache(tmp_path):
    """``pairs.fast_path_precision=32-true`` (where bf16 measured slower): both sides in fp32, the fast one
    decoding over the static cache; named so in the pair, its target row and the README's line; a precision
    it does not know is refused naming the key."""
    args = FAST_PATH_ARGS
    out = run_bench(compose_bench([*args, "pairs.repeats=2", "pairs.fast_path_precision=32-true"], tmp_path))
    (row,) = out["targets"]
    fast = out["pairs"]["fast_path"]
    assert row["target"].startswith("MiniLLM round: 32-true + sampler.decode=static ≥ 1.5× faster than fp32")
    assert (fast["old"], fast["new"]) == ("fp32 eager, torch.multinomial", "fp32 static")
    assert fast["settings"]["precision"] == "32-true"
    assert row["value"] == fast["speedup"] and row["ok"] == (fast["speedup"] >= 1.5)
    with pytest.raises(MinillmError, match="pairs.fast_path_precision='bf16'"):
        run_bench(compose_bench([*args, "pairs.fast_path_precision=bf16"], tmp_path))


def test_fast_path_pair_with_compiled_updates_records_their_compile_and_each_sides_split(
    tmp_path, monkeypatch
):
    """``pairs.fast_path_updates=compiled`` (the default): the fast side's round compiles its update passes
    (AOTAutograd without code generation here) in the untimed pair; the record gives that first update's
    seconds, no failure, each side's median split, and the target row names ``fit.compile_updates``."""
    from minillm.training import update_passes

    monkeypatch.setattr(update_passes, "BACKEND", "aot_eager")
    args = [a for a in FAST_PATH_ARGS if not a.startswith("pairs.fast_path_updates")]
    overrides = [*args, "pairs.repeats=2", "pairs.fast_path_precision=32-true"]
    out = run_bench(compose_bench(overrides, tmp_path))
    (row,) = out["targets"]
    fast = out["pairs"]["fast_path"]
    assert row["target"].startswith(
        "MiniLLM round: 32-true + sampler.decode=static + fit.compile_updates ≥ 1.5×"
    )
    assert fast["new"] == "fp32 static + compiled updates" and fast["settings"]["updates"] == "compiled"
    assert fast["update_compile_seconds"] > 0 and fast["update_compile_failed"] == []
    for side in (fast["old"], fast["new"]):
        parts = fast["parts_ms"][side]
        assert parts["total"] > 0 and parts["rollout"] > 0 and parts["student_fwd_bwd"] > 0
        assert parts["total"] >= parts["rollout"] + parts["student_fwd_bwd"]
    with pytest.raises(MinillmError, match="pairs.fast_path_updates='fused'"):
        run_bench(compose_bench([*overrides, "pairs.fast_path_updates=fused"], tmp_path))


def test_fast_path_precision_auto_chooses_as_trainer_precision_auto_and_records_why(tmp_path):
    """``pairs.fast_path_precision=auto`` (the default): bf16-mixed where the device has bf16 and the student's
    forward + backward measured faster under it (by trainer.precision=auto's margin), else 32-true; the probe's
    two times go in the record."""
    from minillm.training.precision import AUTO_MARGIN, bf16_supported

    args = [a for a in FAST_PATH_ARGS if not a.startswith("pairs.fast_path_precision")]
    out = run_bench(compose_bench([*args, "pairs.repeats=1", "pairs.fast_path_precision=auto"], tmp_path))
    settings = out["pairs"]["fast_path"]["settings"]
    probe = settings["precision_auto"]
    if not bf16_supported("cpu"):
        assert settings["precision"] == "32-true" and probe == {"no_native_bf16": "cpu"}
        return
    faster = probe["bf16_seconds"] <= AUTO_MARGIN * probe["fp32_seconds"]
    assert settings["precision"] == ("bf16-mixed" if faster else "32-true")
    with pytest.raises(MinillmError, match="pairs.fast_path_precision='fp16'"):
        run_bench(compose_bench([*args, "pairs.fast_path_precision=fp16"], tmp_path))


def test_dtype_bf16_times_the_round_as_bf16_mixed_training_runs_it(tmp_path):
    """dtype=bf16 (on a CPU with native bf16): the teacher's weights in bf16, the round under bf16 autocast
    with its old log-probs rescored: the student's forward tokens are the fp32 round's plus one pass."""
    from minillm.bench.models import bench_models
    from minillm.bench.settings import make_runtime, step_settings
    from minillm.bench.step import measure_step
    from minillm.training.precision import bf16_supported

    if not bf16_supported("cpu"):
        pytest.skip("this CPU has no native bf16")
    cfg = compose_bench([*TINY, "dtype=bf16"], tmp_path)
    runtime = make_runtime(cfg)
    models = bench_models(cfg, runtime)
    s = step_settings(cfg, models.teacher, models.eos_token_id)
    assert models.teacher.lm_head.weight.dtype == torch.bfloat16 and s.round.rescore_old_logprobs
    out = measure_step(models, runtime, cfg, s, repeats=1, warmup=0, detail=True)
    tokens = out["forward_tokens"]
    fp32_needed = s.with_round(rescore_old_logprobs=False).needed_tokens()["student"]
    assert tokens["student"] == tokens["student_needed"] == fp32_needed + 4 * (3 + 5)


def test_bench_loads_the_runs_default_models_with_the_runs_loader(tmp_path):
    """With no model overrides bench composes the run's default groups (teacher=embedded, student=embedded) and
    loads them through minillm.models.loading.load_models: the shipped folders, the student's tokenizer."""
    from omegaconf import OmegaConf

    from minillm.bench.models import bench_models
    from minillm.bench.settings import make_runtime
    from minillm.models.loading import load_models, load_tokenizer

    cfg = compose_bench(["fit.num_threads=1"], tmp_path)
    assets = Path(cfg.assets_dir)
    assert (cfg.teacher.path, cfg.student.path) == (str(assets / "teacher"), str(assets / "student_init"))
    models = bench_models(cfg, make_runtime(cfg))
    assert models.info["vocab_from"] == f"student.path={assets / 'student_init'}"
    for key in ("teacher", "student"):
        assert not models.info[key]["random_init"] and models.info[key]["source"] == cfg[key].path
    tokenizer = load_tokenizer(str(assets / "student_init"))
    assert models.eos_token_id == tokenizer.eos_token_id and models.vocab_size >= len(tokenizer)
    run_cfg = OmegaConf.merge(cfg, {"trainer": {"precision": "32-true"}})
    student, teacher = load_models(run_cfg, tokenizer)  # as minillm.run loads them
    for ours, theirs in ((models.student, student), (models.teacher, teacher)):
        mine, run = ours.state_dict(), theirs.state_dict()
        assert mine.keys() == run.keys() and all(torch.equal(mine[k], run[k]) for k in mine)
    assert not any(p.requires_grad for p in models.teacher.parameters()) and not models.teacher.training


def test_bench_takes_the_tokenizer_from_the_one_model_folder_and_builds_the_other(tmp_path):
    """student.path set, teacher=tiny_llama: the teacher is built from its architecture with the student's
    tokenizer's vocabulary and seed + 1, as a run builds it; fit.teacher_dtype casts it as in a run."""
    from minillm.bench.models import bench_models
    from minillm.bench.settings import make_runtime

    tiny = [o for o in TINY if not o.startswith(("student", "tokenizer"))]
    cfg = compose_bench([*tiny, "student=embedded", "fit.teacher_dtype=bf16"], tmp_path)
    models = bench_models(cfg, make_runtime(cfg))
    assert models.info["vocab_from"].startswith("student.path=")
    assert models.info["teacher"]["random_init"] and not models.info["student"]["random_init"]
    assert (
        models.teacher.get_output_embeddings().weight.shape[0] == models.vocab_size == len(models.tokenizer)
    )
    assert models.teacher.lm_head.weight.dtype == torch.bfloat16  # fit.teacher_dtype=bf16, as a run casts it
    assert models.student.lm_head.weight.dtype == torch.float32


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("teacher_path=/x", "use teacher=… (a preset of conf/teacher/) / teacher.path=…"),
        ("student_path=/x", "use student=… (a preset of conf/student/) / student.path=…"),
        ("tokenizer_path=/x", "use tokenizer.path=…"),
        ("vocab_size=50", "use tokenizer.vocab_size=…"),
        ("threads=1", "use fit.num_threads=…"),
        ("+random_init_fallback=false", "use teacher=tiny_llama / student=tiny_llama for a random init"),
    ],
)
def test_old_bench_keys_are_refused_naming_the_new_one(old, new):
    from minillm.bench.settings import refuse_renamed_keys

    with pytest.raises(
        MinillmError, match=f"^{re.escape(old)}: bench takes the run's keys; {re.escape(new)}"
    ):
        refuse_renamed_keys(["repeats=1", old])
    refuse_renamed_keys(["teacher.path=/x", "fit.num_threads=1", "samplers.threads=2"])  # the new keys pass


def test_the_command_refuses_an_old_key_in_one_line(tmp_path):
    import subprocess

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "minillm.bench", "teacher_path=/models/t", f"hydra.run.dir={tmp_path}"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: teacher_path=/models/t: bench takes the run's keys; use teacher=… (a preset of conf/teacher/) "
        "/ teacher.path=…"
    ]
