"""End-to-end runs with `debug=smoke` on tiny random models: the whole pipeline in seconds."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from minillm.run import train

from .conftest import ROOT

TINY = ["student=tiny_llama", "teacher=tiny_random", "debug=smoke", "tokenizer.vocab_size=400"]


def smoke_overrides(tmp_path, *extra):
    return [*TINY, f"cache_dir={tmp_path / 'cache'}", *extra]


def run_cli(*args: str, cwd=ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m minillm.run ARGS`` as a user types it, in its own process (stdout and stderr kept)."""
    return subprocess.run(
        [sys.executable, "-m", "minillm.run", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_sft_smoke_run_writes_results_and_csv(compose, tmp_path):
    cfg = compose(smoke_overrides(tmp_path, "objective=sft", "logger=csv"))
    results = train(cfg)
    run_dir = tmp_path / "run"
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["global_step"] == 3
    for key in ("test/rougeL", "teacher/rougeL", "init/rougeL"):
        assert 0.0 <= saved[key] <= 100.0
    assert saved["test/valid_rate"] is not None
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "csv" / "metrics.csv").is_file()
    assert (run_dir / "best_model" / "config.json").is_file()
    assert "train/loss" in (run_dir / "csv" / "metrics.csv").read_text()
    assert results["eval"]["trained student"]["test"]["n"] == 8


def test_teacher_is_not_in_the_student_checkpoint(compose, tmp_path):
    cfg = compose(
        smoke_overrides(
            tmp_path, "objective=sft", "objective.kd_ratio=0.5", "logger=none", "eval.compare=false"
        )
    )
    train(cfg)
    import torch

    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    keys = list(ckpt["state_dict"])
    assert keys and all(k.startswith("student.") for k in keys)
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "best_model")
    n_opt = sum(len(g["params"]) for g in ckpt["optimizer_states"][0]["param_groups"])
    assert n_opt == len(list(student.parameters()))  # the optimizer holds the student's parameters only


@pytest.mark.slow  # a real process without credentials or stdin (tests/test_wandb_offline.py covers the logic in process)
def test_wandb_offline_run_directory_without_credentials(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env.update(HOME=str(tmp_path), HF_HUB_OFFLINE="1")
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "minillm.run",
            *smoke_overrides(
                tmp_path,
                "objective=sft",
                "logger=wandb",
                "eval.compare=false",
                "trainer.max_steps=1",
                f"hydra.run.dir={run_dir}",
            ),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert offline_runs, f"no offline W&B run in {run_dir / 'wandb'}"
    assert (run_dir / "results.json").is_file()


# The command's contract (exit 2, the one line on stderr, no traceback) through a real process. The model-path and
# batch-size messages are also checked in process (tests/test_reliability.py), so their processes run with
# make test-slow (.ci/run runs both suites).
SLOW = pytest.mark.slow
BAD_INPUTS = [
    (
        ["data=jsonl", "data.path=/nonexistent/data.jsonl"],
        "error: /nonexistent/data.jsonl: data file does not exist",
    ),
    pytest.param(
        ["student=hf", "student.path=/nonexistent/model"],
        "error: student.path=/nonexistent/model: model path does not exist",
        marks=SLOW,
    ),
    pytest.param(["data.batch_size=-1"], "error: data.batch_size=-1: must be a positive integer", marks=SLOW),
    (
        ["select.monitor=val/valid_rate", "eval.val_samples=0"],
        "error: select.monitor=val/valid_rate: needs validation generations, but eval.val_samples=0",
    ),
    pytest.param(  # in process: test_a_monitor_nothing_logs_is_refused_before_any_model_loads
        ["select.monitor=val/valid", "objective=sft", "trainer.max_steps=1"],
        "error: select.monitor=val/valid: objective=sft never logs it; choose one of ['val/loss', "
        "'val/rougeL', 'val/valid_rate', 'val/length']",
        marks=SLOW,
    ),
]


@pytest.mark.parametrize("overrides, message", BAD_INPUTS)
def test_bad_input_is_one_line_error(tmp_path, overrides, message):
    out = run_cli(*smoke_overrides(tmp_path, *overrides), f"hydra.run.dir={tmp_path / 'run'}", "logger=none")
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("named", ["absolute", "hydra-resolver"])
def test_a_fresh_run_into_a_folder_holding_a_run_is_refused_before_hydra_writes_there(tmp_path, named):
    """Hydra writes .hydra/ (config, overrides) and its log into the run folder before the task starts: a refused
    second run must not leave its overrides over the first run's (minillm.report labels runs by them). The folder
    may be named through Hydra's own resolver (${hydra:runtime.cwd}/...), which resolves only once Hydra's config
    is registered."""
    run_dir = tmp_path / "run"
    folder = str(run_dir) if named == "absolute" else "${hydra:runtime.cwd}/run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "results.json").write_text("{}")
    (run_dir / ".hydra" / "overrides.yaml").write_text("- objective=sft\n")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    out = run_cli(
        *smoke_overrides(tmp_path),
        f"hydra.run.dir={folder}",
        "logger=none",
        cwd=ROOT if named == "absolute" else tmp_path,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"error: hydra.run.dir={run_dir} already holds a run (results.json)" in out.stderr
    assert "Traceback" not in out.stderr
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_a_refused_resume_and_an_evaluation_into_a_run_leave_its_hydra_files_and_log_as_they_were(
    compose, tmp_path
):
    """Hydra writes .hydra/ and appends to run.log before the task: a resume refused by its checks (another
    objective) puts them back; minillm.evaluate into a folder holding a run is refused before any write."""
    run_dir = tmp_path / "run"
    train(compose(smoke_overrides(tmp_path, "objective=sft", "logger=none", "eval.compare=false")))
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text("- objective=sft\n")
    (run_dir / "run.log").write_text("the first run's log\n")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    out = run_cli(
        *smoke_overrides(tmp_path, "objective=forward_kld"),
        f"hydra.run.dir={run_dir}",
        "ckpt_path=last",
        "logger=none",
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "checkpoint is from objective=sft, this run is objective=forward_kld" in out.stderr
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    out = subprocess.run(
        [sys.executable, "-m", "minillm.evaluate", *smoke_overrides(tmp_path), "evaluate.model=init",
         f"hydra.run.dir={run_dir}", "logger=none"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"error: hydra.run.dir={run_dir} already holds a run or an evaluation (results.json" in out.stderr
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_a_run_folder_whose_log_cannot_be_written_is_one_line(tmp_path):
    """Hydra opens the run's log file before the task starts: a folder where it cannot (read-only, or run.log taken
    by a folder) gave logging's traceback."""
    run_dir = tmp_path / "run"
    (run_dir / "run.log").mkdir(parents=True)
    out = run_cli(*smoke_overrides(tmp_path), f"hydra.run.dir={run_dir}", "logger=none")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "error: hydra.run.dir: output directory cannot be written (its log file: " in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("objective", ["forward_kld", "seqkd", "reverse_kld", "hinton_kd"])
def test_every_objective_runs_end_to_end(compose, tmp_path, objective):
    extra = ["objective.pt_coef=1.0"] if objective == "reverse_kld" else []  # exercise the L_PT path too
    cfg = compose(
        smoke_overrides(tmp_path, f"objective={objective}", "logger=csv", "eval.compare=false", *extra)
    )
    results = train(cfg)
    assert results["global_step"] == 3
    assert 0.0 <= results["test/rougeL"] <= 100.0
    metrics = (tmp_path / "run" / "csv" / "metrics.csv").read_text()
    expected = {
        "forward_kld": ["train/kd_kl", "train/ce_loss"],
        "hinton_kd": ["train/kd_kl", "train/ce_loss"],
        "seqkd": ["train/loss"],
        "reverse_kld": [
            "rollout/reward",
            "rollout/reverse_kl",
            "rollout/length",
            "rollout/importance_weight",
            "train/pg_loss",
            "train/single_step_loss",
            "train/pt_loss",
            "train/clip_frac",
            "train/grad_norm",
            "val/rougeL",
        ],
    }[objective]
    header = metrics.splitlines()[0].split(",")
    for name in expected:
        assert name in header, f"{name} not logged"


def _train_rows(run_dir) -> list[dict]:
    import csv

    with open(run_dir / "csv" / "metrics.csv") as handle:
        return [row for row in csv.DictReader(handle) if row.get("train/single_step_loss")]


def test_memory_options_train_the_same_student(compose, tmp_path, caplog):
    """A teacher cache over budget (one teacher pass per minibatch instead) and the chunked
    full-vocabulary term change memory, not the numbers: the same losses step by step."""
    import logging

    runs = {}
    for name, extra in (
        ("default", []),
        ("bounded", ["objective.teacher_cache_mb=0", "objective.chunk_size=2", "objective.pt_coef=1.0"]),
        ("default_pt", ["objective.pt_coef=1.0"]),
    ):
        run_dir = tmp_path / name
        cfg = compose(
            smoke_overrides(tmp_path, "objective=reverse_kld", "logger=csv", "eval.compare=false", *extra),
            run_dir=run_dir,
        )
        with caplog.at_level(logging.INFO, logger="minillm.training.on_policy"):
            caplog.clear()
            train(cfg)
        runs[name] = (_train_rows(run_dir), caplog.text)
    assert "kept from the rollout" in runs["default"][1]
    assert "re-scored with one teacher pass per minibatch" in runs["bounded"][1]
    bounded, reference = runs["bounded"][0], runs["default_pt"][0]
    assert len(bounded) == len(reference) >= 1  # one row per round: the means over its 3 updates
    for a, b in zip(bounded, reference, strict=True):
        for key in (
            "train/loss",
            "train/single_step_loss",
            "train/pg_loss",
            "train/pt_loss",
            "train/grad_norm",
        ):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-6), key


def test_reduced_precision_teacher_runs_end_to_end(compose, tmp_path):
    """The CUDA setting fit.teacher_dtype=bf16 (here on CPU, slow but tiny): bf16 teacher logits go
    through mixed sampling, the cached-logit single-step term and L_PT's KD without a dtype error."""
    cfg = compose(
        smoke_overrides(
            tmp_path,
            "objective=reverse_kld",
            "objective.pt_coef=1.0",
            "fit.teacher_dtype=bf16",
            "logger=csv",
            "eval.compare=false",
        )
    )
    results = train(cfg)
    assert results["global_step"] == 3
    rows = _train_rows(tmp_path / "run")
    assert rows and all(math.isfinite(float(r["train/loss"])) for r in rows)


@pytest.mark.slow
def test_compiled_decoding_trains_the_same_student(compose, tmp_path):
    """objective.compile_decode (meant for CUDA) wraps the rollout's models in torch.compile: the same
    rollouts and updates as eager decoding, up to float rounding (slow: compiling takes minutes on CPU)."""
    rows = {}
    for name, extra in (("eager", []), ("compiled", ["objective.compile_decode=true"])):
        cfg = compose(
            smoke_overrides(tmp_path, "objective=reverse_kld", "logger=csv", "eval.compare=false", *extra),
            run_dir=tmp_path / name,
        )
        train(cfg)
        rows[name] = _train_rows(tmp_path / name)
    assert len(rows["eager"]) == len(rows["compiled"]) >= 1
    for a, b in zip(rows["eager"], rows["compiled"], strict=True):
        for key in ("train/loss", "train/single_step_loss", "train/grad_norm"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-3, abs=1e-5), key


def test_end_of_run_table_states_intervals_and_the_paired_difference(compose, tmp_path, capsys):
    """eval.compare=true: each row's validity with its 95% interval over prompts, the trained − init
    differences (paired over the same prompts) in results.json and under the table; a teacher evaluation
    cached before the per-prompt scores existed is evaluated again, not reused without them."""
    import numpy as np

    cfg = compose(smoke_overrides(tmp_path, "objective=sft", "logger=csv", "eval.seeds=[0,1]"))
    first = train(cfg)
    split = first["eval"]["trained student"]["test"]
    init = first["eval"]["student init"]["test"]
    assert len(split["valid_per_prompt"]) == len(split["rougeL_per_prompt"]) == split["n"] == 8
    for prefix in ("teacher", "init", "test"):
        lo, hi = first[f"{prefix}/valid_rate_ci95"]
        assert lo <= first[f"{prefix}/valid_rate"] <= hi
    pairs = [
        (t, i)
        for t, i in zip(split["valid_per_prompt"], init["valid_per_prompt"], strict=True)
        if None not in (t, i)
    ]
    assert first["compare/valid_diff"] == pytest.approx(float(np.mean([t - i for t, i in pairs])))
    assert first["compare/valid_prompts"] == len(pairs)
    rouge = np.array(split["rougeL_per_prompt"]) - np.array(init["rougeL_per_prompt"])
    assert first["compare/rougeL_diff"] == pytest.approx(float(rouge.mean()))
    for key in ("valid", "rougeL"):
        lo, hi = first[f"compare/{key}_diff_ci95"]
        assert lo <= first[f"compare/{key}_diff"] <= hi
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["compare/valid_diff_ci95"] == first["compare/valid_diff_ci95"]
    out = capsys.readouterr().out
    teacher = first["eval"]["teacher"]["test"]
    lo, hi = teacher["valid_rate_ci95"]
    assert f"{teacher['valid_rate']:.1f} [{lo:.1f}, {hi:.1f}]" in out
    diff, (lo, hi) = first["compare/valid_diff"], first["compare/valid_diff_ci95"]
    assert (
        f"trained − init validity: {diff:+.1f} points [{lo:.1f}, {hi:.1f}] "
        f"(paired bootstrap over the {len(pairs)} test prompts × 2 sampling seeds)"
    ) in out
    assert "trained − init Rouge-L: " in out
    assert "(beyond noise: the 95% interval of the difference excludes 0)." in out

    # an entry of the eval cache written before the per-prompt scores: evaluated again and rewritten
    (entry,) = (tmp_path / "cache" / "eval").glob("*.json")  # the teacher's (the random init is not cached)
    old = json.loads(entry.read_text())
    for key in ("valid_per_prompt", "rougeL_per_prompt", "valid_rate_ci95", "rougeL_ci95"):
        old.pop(key)
    entry.write_text(json.dumps(old))
    second = train(compose(smoke_overrides(tmp_path, "objective=sft", "logger=none", "eval.seeds=[0,1]"),
                           run_dir=tmp_path / "again"))  # fmt: skip
    assert second["eval"]["teacher"]["test"]["valid_per_prompt"] == teacher["valid_per_prompt"]
    assert "valid_per_prompt" in json.loads(entry.read_text())
    assert second["compare/valid_diff"] == first["compare/valid_diff"]


def test_validity_selection_on_a_fixed_validation_slice(compose, tmp_path, monkeypatch):
    """select.monitor=val/valid_rate select.mode=max selects the checkpoint of the best validation
    validity; every validation samples the same first eval.val_samples valid prompts with the same seed."""
    import csv

    import minillm.evaluation.sampled as evaluation

    real, calls = evaluation.evaluate_model, []

    def spy(model, tokenizer, examples, records, options, **kwargs):
        if kwargs.get("name") == "val":
            calls.append(([e.index for e in examples], options.seeds))
        return real(model, tokenizer, examples, records, options, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate_model", spy)  # called through: the spy only records
    cfg = compose(
        smoke_overrides(
            tmp_path,
            "objective=sft",
            "logger=csv",
            "eval.compare=false",
            "select.monitor=val/valid_rate",
            "select.mode=max",
        )
    )
    results = train(cfg)
    assert len(calls) == 3  # one validation per step (debug=smoke)
    assert len(calls[0][0]) == cfg.eval.val_samples
    assert all(call == calls[0] for call in calls)
    assert calls[0][1] == (0,)
    with open(tmp_path / "run" / "csv" / "metrics.csv") as handle:
        rates = [float(r["val/valid_rate"]) for r in csv.DictReader(handle) if r.get("val/valid_rate")]
    assert len(rates) == 3
    assert results["best_score"] == pytest.approx(max(rates))
    assert results["best_checkpoint"].endswith("best.ckpt")


def test_validity_monitor_needs_a_checker_in_the_validation_slice():
    from omegaconf import OmegaConf

    from minillm.data.datasets import Example
    from minillm.errors import MinillmError
    from minillm.evaluation.callbacks import check_sampled_monitor

    cfg = OmegaConf.create({"select": {"monitor": "val/valid_rate"}, "eval": {"val_samples": 2}})
    examples = [Example([5], [1], 0), Example([6], [1], 1)]
    records = [{"check": None}, {}]
    with pytest.raises(MinillmError, match="none of the first 2 valid prompts .* has a validity checker"):
        check_sampled_monitor(cfg, examples, records)
    check_sampled_monitor(cfg, examples, [{"check": None}, {"check": {"type": "exact", "answers": ["a"]}}])
    cfg.select.monitor = "val/rougeL"
    check_sampled_monitor(cfg, examples, records)  # Rouge-L needs no checker


def test_a_monitor_nothing_logs_is_refused_before_any_model_loads(compose, tmp_path, monkeypatch):
    import minillm.models.loading
    import minillm.models.prepare
    from minillm.errors import MinillmError

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the monitor was checked")

    monkeypatch.setattr(minillm.models.prepare, "prepare_models", no_model)
    monkeypatch.setattr(minillm.models.loading, "load_models", no_model)
    cfg = compose(smoke_overrides(tmp_path, "objective=reverse_kld", "select.monitor=val/nope"))
    with pytest.raises(MinillmError) as err:
        train(cfg)
    assert str(err.value) == (
        "select.monitor=val/nope: objective=reverse_kld never logs it; choose one of ['val/loss', "
        "'val/rougeL', 'val/valid_rate', 'val/length'] (eval.callbacks.enabled=true adds ['val/exaccerr', "
        "'val/ece', 'val/label_acc', 'val/distinct4'])"
    )
    cfg = compose(smoke_overrides(tmp_path, "select.monitor=val/ece", "eval.callbacks.enabled=true"))
    with pytest.raises(AssertionError, match="a model was loaded"):  # accepted: the run goes on to load
        train(cfg)


def test_the_monitor_candidates_are_what_a_run_logs_and_a_capped_split_prints_its_size(
    compose, tmp_path, capsys, caplog
):
    """The candidates come from the classes that log them; a run with every source on logs exactly them
    at validation. eval.num_samples above the test split's size prints the prompts evaluated."""
    import csv

    from minillm.evaluation.callbacks import monitor_candidates

    cfg = compose(
        smoke_overrides(tmp_path, "objective=forward_kld", "logger=csv", "eval.compare=false",
                        "trainer.max_steps=1", "eval.num_samples=1000", "eval.callbacks.enabled=true",
                        "eval.callbacks.n_prompts=2", "eval.callbacks.max_new_tokens=12")
    )  # fmt: skip
    with caplog.at_level("WARNING"):
        results = train(cfg)
    with (tmp_path / "run" / "csv" / "metrics.csv").open(newline="") as handle:
        logged = {k for row in csv.DictReader(handle) for k, v in row.items() if k.startswith("val/") and v}
    assert logged == set(monitor_candidates(cfg))
    n = results["eval"]["trained student"]["test"]["n"]
    assert 0 < n < 1000
    assert f"test split, {n} prompts, seeds [0]:" in capsys.readouterr().out
    capped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("eval.num_samples=1000")]
    assert len(capped) == 1 and f"the test split has {n} prompts" in capped[0]


OBJECTIVES = sorted(p.stem for p in (ROOT / "conf" / "objective").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_trains_under_bf16_mixed(compose, tmp_path, monkeypatch, objective):
    """trainer.precision=bf16-mixed (the choice of trainer.precision=auto on a CPU where bf16 measured
    faster): every objective's updates, rollouts, teacher scoring (the teacher held in bf16 by
    fit.teacher_dtype=auto), validation and end-of-run evaluation run under bf16 autocast, with finite
    float32 losses."""
    import torch

    from minillm.evaluation import sampled

    autocast_seen = []
    real_metrics = sampled._sampled_metrics

    def metrics(*args, **kwargs):
        autocast_seen.append(torch.is_autocast_enabled("cpu"))
        return real_metrics(*args, **kwargs)

    monkeypatch.setattr(sampled, "_sampled_metrics", metrics)

    cfg = compose(
        smoke_overrides(
            tmp_path,
            f"objective={objective}",
            "trainer.precision=bf16-mixed",
            "logger=csv",
            "eval.compare=false",
        )
    )
    from minillm.models.loading import teacher_dtype

    assert teacher_dtype(cfg) == torch.bfloat16
    results = train(cfg)
    assert results["global_step"] == 3
    import csv

    with open(tmp_path / "run" / "csv" / "metrics.csv") as handle:
        losses = [float(row["train/loss"]) for row in csv.DictReader(handle) if row.get("train/loss")]
    assert losses and all(math.isfinite(v) for v in losses)
    assert autocast_seen and all(autocast_seen)  # the trained student's end-of-run evaluation


def test_with_a_validation_after_every_batch_the_best_checkpoint_is_the_best_validation(compose, tmp_path):
    """trainer.val_check_interval=1 (an int, as debug=smoke sets): Lightning took it for 1.0 (once per epoch) and
    saved checkpoints only at the epoch's end, so best.ckpt held the last of six validations, whichever was best."""
    import csv

    from minillm.safe_load import load_checkpoint

    cfg = compose(
        smoke_overrides(
            tmp_path, "objective=forward_kld", "logger=csv", "eval.compare=false", "trainer.max_steps=6",
            # the largest loss: the tiny pair's validation loss falls at every step, so the best is the first
            "trainer.val_check_interval=1", "select.monitor=val/loss", "select.mode=max",
        )
    )  # fmt: skip
    train(cfg)
    run_dir = tmp_path / "run"
    with open(run_dir / "csv" / "metrics.csv") as handle:
        losses = [float(r["val/loss"]) for r in csv.DictReader(handle) if r.get("val/loss")]
    assert len(losses) == 6 and losses.index(max(losses)) < 5, losses  # the test's premise: not the last
    state = load_checkpoint(run_dir / "checkpoints" / "best.ckpt")["callbacks"]
    (best,) = [v for k, v in state.items() if "'monitor': 'val/loss'" in k]
    assert float(best["best_model_score"]) == pytest.approx(max(losses), rel=1e-6)
