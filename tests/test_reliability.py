"""Reliability: every bad input of the issue gives one clear line, non-finite values are skipped and
then stop the run with a checkpoint, W&B never blocks, and a failing sweep job does not stop the sweep."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
import torch

from minillm.errors import MinillmError
from minillm.run import train

from .conftest import ROOT
from .test_smoke import smoke_overrides


def jsonl(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


GOOD = json.dumps({"instruction": "Name a colour.", "response": "Red."})


@pytest.fixture
def tokenizer_dir(tiny_tokenizer, tmp_path):
    folder = tmp_path / "tok"
    tiny_tokenizer.save_pretrained(str(folder))
    return folder


def hf_teacher(folder, tokenizer, *, vocab: int | None = None, nan: bool = False, with_tokenizer=None):
    """A tiny Llama saved as a Hugging Face folder (optionally with NaN weights or its own tokenizer)."""
    from minillm.models.tiny import build_model

    arch = dict(
        model_type="llama",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
    )
    model = build_model(arch, vocab or len(tokenizer), tokenizer.eos_token_id, seed=1)
    if nan:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
    model.save_pretrained(folder)
    if with_tokenizer is not None:
        with_tokenizer.save_pretrained(str(folder))
    return folder


def run(compose, tmp_path, *extra, run_dir=None):
    cfg = compose(smoke_overrides(tmp_path, "logger=csv", *extra), run_dir=run_dir)
    return train(cfg)


def test_every_bad_input_is_one_clear_line(compose, tmp_path, tokenizer_dir, tiny_tokenizer):
    from minillm.models.tiny import train_tokenizer

    empty = jsonl(tmp_path / "empty.jsonl", [])
    broken = jsonl(tmp_path / "broken.jsonl", [GOOD, "{not json"])
    no_response = jsonl(tmp_path / "noresp.jsonl", [GOOD, json.dumps({"instruction": "Hi."})])
    wide = hf_teacher(tmp_path / "wide", tiny_tokenizer, vocab=len(tiny_tokenizer) + 16)
    other_tok = train_tokenizer(["completely different text " * 20, "other words"], 300, tmp_path / "t2")
    foreign = hf_teacher(tmp_path / "foreign", tiny_tokenizer, with_tokenizer=other_tok)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    teacher_hf = ["teacher=hf", f"tokenizer.path={tokenizer_dir}", "objective=forward_kld"]
    cases = [
        (
            ["data=jsonl", f"data.path={tmp_path / 'missing.jsonl'}"],
            "missing.jsonl: data file does not exist",
        ),
        (["data=jsonl", f"data.path={empty}"], "empty.jsonl: data file is empty"),
        (["data=jsonl", f"data.path={broken}"], "broken.jsonl:2"),
        (["data=jsonl", f"data.path={no_response}"], "noresp.jsonl:2: record has no 'response'"),
        (["data.max_prompt_len=2"], r"all \d+ train prompts are longer than data.max_prompt_len=2 tokens"),
        ([*teacher_hf, f"teacher.path={wide}"], "teacher and student vocabularies differ"),
        ([*teacher_hf, f"teacher.path={foreign}"], "its tokenizer differs from the student's"),
        (["objective.teacher_mix_alpha=1.5"], r"objective.teacher_mix_alpha=1.5: must be in \[0.0, 1.0\]"),
        (["objective.clip_eps=0"], "objective.clip_eps=0.0: must be > 0"),
        (["objective=forward_kld", "objective.kd_ratio=-0.1"], "objective.kd_ratio=-0.1: must be in"),
        (["data.batch_size=0"], "data.batch_size=0: must be a positive integer"),
        (["objective.num_rollouts=-4"], "objective.num_rollouts=-4: must be a positive integer"),
        (["objective.variant=fancy"], r"objective.variant='fancy'; choose one of \['code', 'paper'\]"),
        (["objective.alpha_schedule=step"], "objective.alpha_schedule='step'; choose one of"),
        (["trainer.max_time=12s"], r"trainer.max_time='12s': give days:hours:minutes:seconds"),
        (
            ["objective=sft", "trainer.val_check_interval=100000"],
            r"trainer.val_check_interval=100000: must not exceed the training batches per epoch \(\d+ per",
        ),
        (["objective.chunk_size=0"], "objective.chunk_size=0: must be a positive integer"),
        (["objective.teacher_cache_mb=-1"], "objective.teacher_cache_mb=-1.0: must be a size in MiB"),
        (["fit.teacher_dtype=int8"], r"fit.teacher_dtype='int8'; choose one of"),
        (
            ["student=hf", "student.path=/no/such/model"],
            "student.path=/no/such/model: model path does not exist",
        ),
        (["student=hf", "student.path=someorg/some-model"], "HF_HUB_OFFLINE=1 forbids fetching it"),
    ]
    for overrides, message in cases:
        with pytest.raises(MinillmError, match=message):
            run(compose, tmp_path, *overrides)
    with pytest.raises(MinillmError, match="output directory cannot be written"):
        run(compose, tmp_path, run_dir=a_file / "run")


def test_validation_comes_before_any_model_is_loaded(compose, tmp_path, monkeypatch):
    import minillm.models.loading

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the config was validated")

    monkeypatch.setattr(minillm.models.loading, "load_model", no_loading)
    for bad in (["objective.clip_eps=-1"], ["objective.variant=x"], ["ckpt_path=/no/such.ckpt"]):
        with pytest.raises(MinillmError):
            run(compose, tmp_path, *bad)


def test_a_few_non_finite_updates_are_skipped_and_training_goes_on(compose, tmp_path, monkeypatch):
    import minillm.training.round

    real = minillm.training.round.minillm_loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        loss, logs = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan"), logs) if calls["n"] <= 2 else (loss, logs)

    monkeypatch.setattr(minillm.training.round, "minillm_loss", sometimes_nan)
    # 4 updates per round (4 inner epochs of one minibatch): round 1 = 2 skipped + 2 taken
    results = run(compose, tmp_path, "objective=reverse_kld", "trainer.max_steps=4", "eval.compare=false")
    assert results["global_step"] == 4
    metrics = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    skipped = [row.split(",")[header.index("train/skipped_updates")] for row in metrics[1:]]
    assert [float(v) for v in skipped if v] == [2.0, 0.0]
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())


@pytest.mark.parametrize("objective", ["reverse_kld", "forward_kld"])
def test_a_nan_teacher_stops_the_run_with_a_checkpoint(
    compose, tmp_path, tokenizer_dir, tiny_tokenizer, objective
):
    """NaN teacher log-probs (rollout mixing and rewards, or the KD target): every update is skipped,
    and after fit.max_bad_steps in a row the run stops with a checkpoint and one clear line."""
    teacher = hf_teacher(tmp_path / "nan-teacher", tiny_tokenizer, nan=True)
    with pytest.raises(MinillmError, match=r"3 consecutive updates with non-finite .* checkpoint saved to"):
        run(
            compose,
            tmp_path,
            f"objective={objective}",
            "teacher=hf",
            f"teacher.path={teacher}",
            f"tokenizer.path={tokenizer_dir}",
            "fit.max_bad_steps=3",
            "eval.compare=false",
        )
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["minillm"]["bad_steps"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())  # no NaN reached the student


def test_wandb_server_error_falls_back_to_offline(compose, tmp_path, monkeypatch, caplog):
    import wandb

    import minillm.loggers

    real_init = wandb.init
    modes = []

    def init(*args, **kwargs):
        modes.append(kwargs.get("mode"))
        if kwargs.get("mode") == "online":
            raise wandb.errors.CommError("500 Internal Server Error from the W&B server")
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(minillm.loggers, "wandb_logged_in", lambda: True)
    monkeypatch.delenv("WANDB_MODE", raising=False)  # restored (offline) after the test
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # never the real server (nothing is sent)
    # No reachability probe: this test is about an online start that fails (test_wandb_offline.py has it
    # against real local servers).
    cfg = compose(smoke_overrides(tmp_path, "logger=wandb", "logger.probe_timeout=0"))
    with caplog.at_level(logging.WARNING, logger="minillm.loggers"):
        loggers = minillm.loggers.loggers_from_config(cfg, tmp_path / "run")
    try:
        assert modes == ["online", "offline"]
        assert any("logging offline instead" in r.message for r in caplog.records)
        assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
        assert (tmp_path / "run" / "wandb_run_id").is_file()
    finally:
        for lg in loggers:
            lg.finalize("success")
        wandb.finish()


def run_failing_sweep(tmp_path, *extra):
    """A two-job smoke sweep whose job 0 fails (every prompt too long) and job 1 runs; checks both."""
    sweep = tmp_path / "sweep"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "minillm.run",
            "-m",
            *extra,
            *smoke_overrides(tmp_path, "objective=sft", "logger=csv", "eval.compare=false"),
            "data.max_prompt_len=2,256",
            f"hydra.sweep.dir={sweep}",
            "hydra.sweep.subdir=${hydra.job.num}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    failed = json.loads((sweep / "0" / "failed.json").read_text())
    assert "longer than data.max_prompt_len=2" in failed["error"]
    assert (sweep / "1" / "results.json").is_file()
    return sweep


@pytest.mark.slow  # a real multirun of processes: make test-slow (.ci/run runs it)
def test_a_failing_sweep_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    sweep = run_failing_sweep(tmp_path)
    report = subprocess.run(
        [sys.executable, "-m", "minillm.report", str(sweep)], cwd=ROOT, capture_output=True, text=True
    )
    assert report.returncode == 0, report.stderr
    assert "| sft | 1 |" in report.stdout
    assert "- 0 (sft-s0: data: all" in report.stdout


def test_a_resumed_run_continues_the_same_wandb_run(compose, tmp_path):
    """The W&B run id is kept in the run folder; a resume (which writes into the same folder) reuses it."""
    import wandb

    import minillm.loggers

    cfg = compose(smoke_overrides(tmp_path, "logger=wandb"))
    ids = []
    for _ in range(2):  # the first run, then the resumed one
        loggers = minillm.loggers.loggers_from_config(
            cfg, tmp_path / "run", resume_step=None if not ids else 3
        )
        wb = next(lg for lg in loggers if type(lg).__name__ == "WandbLogger")
        ids.append(wb.experiment.id)
        for lg in loggers:
            lg.finalize("success")
        wandb.finish()
    assert ids[0] == ids[1] == (tmp_path / "run" / "wandb_run_id").read_text().strip()


def test_a_model_folder_without_a_model_config_is_one_line(tmp_path):
    """transformers raises ValueError ("Unrecognized model") for a folder with no config.json: it is the user's
    path, so it is named in one line, as a missing folder is."""
    from omegaconf import OmegaConf

    from minillm.models.loading import load_model

    folder = tmp_path / "not_a_model"
    folder.mkdir()
    (folder / "notes.txt").write_text("weights to come")
    with pytest.raises(MinillmError, match=rf"^teacher\.path={folder}: cannot load a causal LM \("):
        load_model(OmegaConf.create({"path": str(folder)}), key="teacher")


def test_a_sweep_job_refused_in_a_folder_holding_its_earlier_run_records_nothing_there(tmp_path, capsys):
    """The same sweep run again into its folder: each job is refused (it would overwrite its finished run), and
    said so; a failed.json beside that run's results.json contradicted "nothing was changed"."""
    from omegaconf import OmegaConf

    from minillm.run import record_failure

    finished, fresh = tmp_path / "0", tmp_path / "1"
    finished.mkdir()
    (finished / "results.json").write_text("{}")
    for folder in (finished, fresh):
        record_failure(
            OmegaConf.create({"output_dir": str(folder), "run_name": "job"}), MinillmError("refused")
        )
    assert sorted(p.name for p in finished.iterdir()) == ["results.json"]
    assert json.loads((fresh / "failed.json").read_text())["error"] == "refused"
    err = capsys.readouterr().err
    assert "error: job job failed: refused (its folder holds an earlier run: nothing recorded there)" in err
