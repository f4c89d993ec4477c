"""Checkpoints across world sizes (issue 14 item 5): a checkpoint written by N data-parallel ranks resumes
exactly at N and continues (weights, optimizer, schedule, step; the data position rescaled) at another N."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from minillm.data.datasets import ResumableBatches
from minillm.errors import MinillmError
from minillm.resume.checks import check_config
from minillm.resume.lightning_state import rescale_data_position
from minillm.safe_load import load_checkpoint

from .conftest import ROOT


def checkpoint(consumed: int, global_batch: int | None) -> dict:
    data = {"epoch": 0, "consumed": consumed}
    if global_batch is not None:
        data["global_batch"] = global_batch
    counters = {"ready": consumed, "started": consumed, "processed": consumed, "completed": consumed}
    progress = {"total": dict(counters, ready=consumed + 10), "current": dict(counters)}  # 10: earlier epochs
    return {"minillm": {"data": data}, "loops": {"fit_loop": {"epoch_loop.batch_progress": progress}}}


@pytest.mark.parametrize(
    "consumed, old, new, expected",
    [(3, 4, 8, 1), (3, 4, 2, 6), (5, 16, 8, 10), (2, 8, 16, 1), (0, 4, 8, 0)],
)
def test_the_data_position_moves_by_examples_seen_and_repeats_a_partial_batch(consumed, old, new, expected):
    ckpt = checkpoint(consumed, old)
    assert rescale_data_position(ckpt, new) == (consumed, expected)
    assert expected * new <= consumed * old < (expected + 1) * new  # never skips an example
    assert ckpt["minillm"]["data"] == {"epoch": 0, "consumed": expected, "global_batch": new}
    progress = ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    assert set(progress["current"].values()) == {expected}
    assert progress["total"]["ready"] == consumed + 10 + expected - consumed
    assert progress["total"]["completed"] == expected


@pytest.mark.parametrize("global_batch", [8, None])
def test_the_same_global_batch_or_an_old_checkpoint_leaves_the_position_alone(global_batch):
    ckpt = checkpoint(3, global_batch)
    before = json.dumps(ckpt, sort_keys=True)
    assert rescale_data_position(ckpt, 8) is None
    assert json.dumps(ckpt, sort_keys=True) == before


def test_a_rescaled_position_resumes_the_sampler_at_the_examples_seen():
    """2 ranks × 2 per batch trained 3 global batches (12 examples) of epoch 0; one process with batches
    of 4 goes on after 3 of its own batches, and one with batches of 8 after 1 (8 examples, the rest again)."""
    two = [ResumableBatches(40, 2, seed=3, rank=r, world_size=2) for r in range(2)]
    for sampler in two:
        list(zip(range(3), iter(sampler), strict=False))
        sampler.consumed = 3
    state = two[0].state_dict()
    assert state == {"epoch": 0, "consumed": 3, "global_batch": 4}
    for size, skipped in ((4, 3), (8, 1)):
        ckpt = {"minillm": {"data": dict(state)}}
        rescale_data_position(ckpt, size)
        one = ResumableBatches(40, size, seed=3)
        one.load_state_dict(ckpt["minillm"]["data"])
        assert list(iter(one)) == one.batches(0)[skipped:]


def test_layout_keys_may_change_on_resume_and_the_batch_may_not(tmp_path, caplog):
    saved = {
        "trainer": {"devices": 2, "strategy": {"_target_": "DDPStrategy"}, "max_steps": 4},
        "data": {"batch_size": 4},
    }
    ckpt = {"minillm": {"config": saved}}
    moved = {
        "trainer": {"devices": 1, "strategy": "auto", "max_steps": 8},
        "data": {"batch_size": 4},
    }
    with caplog.at_level("WARNING"):
        check_config(ckpt, tmp_path / "last.ckpt", moved)
    assert "another layout (trainer.devices 2 -> 1" in caplog.text
    with pytest.raises(MinillmError, match="data.batch_size=4, this run has data.batch_size=8"):
        check_config(ckpt, tmp_path / "last.ckpt", {**moved, "data": {"batch_size": 8}})


def test_only_rank_zero_touches_the_csv_of_a_resumed_run(tmp_path, monkeypatch):
    """Under ddp every rank builds the loggers: another rank must leave metrics.csv alone (its rename once
    hid the earlier rows from rank zero, which then started the file over)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from minillm.loggers import ResumableCSVLogger

    path = tmp_path / "csv" / "metrics.csv"
    path.parent.mkdir()
    path.write_text("step,train/loss\n0,1.5\n1,1.25\n2,1.0\n")
    before = path.read_text()
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    ResumableCSVLogger(tmp_path, resume_step=2).experiment.log_metrics({"train/loss": 0.5}, step=2)
    assert path.read_text() == before and not path.with_suffix(".csv.bak").exists()
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    logger = ResumableCSVLogger(tmp_path, resume_step=2)
    logger.log_metrics({"train/loss": 0.5}, step=2)
    logger.save()
    assert [line.split(",")[0] for line in path.read_text().splitlines()] == ["step", "0", "1", "2"]


# --------------------------------------------------------------------------- end to end, 2 processes


def minillm_run(tmp_path, run_dir, *overrides, expect=0):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "MINILLM_CACHE": str(tmp_path / "cache"),
    }
    cmd = [sys.executable, "-m", "minillm.run", "debug=smoke", "objective=reverse_kld", "logger=csv",
           "eval.compare=false", "objective.mini_batch_size=2", "objective.ppo_epochs=1", "trainer.max_steps=8",
           f"hydra.run.dir={run_dir}", *overrides]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == expect, done.stderr[-3000:]
    return done


def csv_rows(run_dir):
    with (run_dir / "csv" / "metrics.csv").open(newline="") as handle:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


def adam_steps(path) -> set[int]:
    state = load_checkpoint(path, "test")["optimizer_states"][0]["state"]
    return {int(torch.as_tensor(s["step"]).item()) for s in state.values()}


@pytest.mark.slow
def test_a_ddp_run_stopped_between_rounds_resumes_exactly_at_two_ranks_and_goes_on_at_one(tmp_path):
    """`strategy=ddp trainer.devices=2`, stopped at step 4 (between rounds of 2 updates per rank): resumed
    at 2 ranks it ends where the straight run ends (weights and every logged metric); resumed in one
    process it goes on from the checkpoint's optimizer state (AdamW's step count keeps counting)."""
    ddp = ["strategy=ddp", "trainer.devices=2"]
    minillm_run(tmp_path, tmp_path / "straight", *ddp)
    minillm_run(tmp_path, tmp_path / "stopped", *ddp, "fit.stop_at_step=4")
    ckpt = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    saved = load_checkpoint(ckpt, "test")["minillm"]
    assert saved["world_size"] == 2 and len(saved["ranks"]) == 2
    assert saved["ranks"][0]["rollout_gen"] is not None
    assert not torch.equal(saved["ranks"][0]["rollout_gen"], saved["ranks"][1]["rollout_gen"])  # own samples
    assert adam_steps(ckpt) == {4}

    import shutil

    shutil.copytree(tmp_path / "stopped", tmp_path / "one")
    minillm_run(tmp_path, tmp_path / "resumed", *ddp, f"ckpt_path={ckpt}")
    straight = json.loads((tmp_path / "straight" / "results.json").read_text())
    resumed = json.loads((tmp_path / "stopped" / "results.json").read_text())
    assert resumed["global_step"] == straight["global_step"] == 8
    assert resumed["final_weights_sha1"] == straight["final_weights_sha1"]
    assert csv_rows(tmp_path / "stopped") == csv_rows(tmp_path / "straight")

    done = minillm_run(
        tmp_path, tmp_path / "x", f"ckpt_path={tmp_path / 'one' / 'checkpoints' / 'last.ckpt'}"
    )
    assert "written by 2 process(es), this run has 1" in done.stdout + done.stderr
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    assert one["global_step"] == 8
    assert adam_steps(tmp_path / "one" / "checkpoints" / "last.ckpt") == {8}


@pytest.mark.slow
def test_an_fsdp_checkpoint_goes_on_at_two_ranks_and_in_one_process(tmp_path):
    """`strategy=fsdp` (FSDP2, sharded student and teacher) on 2 ranks, stopped at step 4; the gathered
    checkpoint goes on at 2 ranks (Lightning's ModelParallelStrategy loads the file itself: it needs our
    allowlist for the RNG states, it failed with "Unsupported global: numpy…_reconstruct") and in one
    process, with its optimizer state."""
    import shutil

    fsdp = ["strategy=fsdp", "trainer.devices=2"]
    minillm_run(tmp_path, tmp_path / "fsdp", *fsdp, "fit.stop_at_step=4")
    ckpt = tmp_path / "fsdp" / "checkpoints" / "last.ckpt"
    assert adam_steps(ckpt) == {4}
    shutil.copytree(tmp_path / "fsdp", tmp_path / "two")
    minillm_run(tmp_path, tmp_path / "two", *fsdp, "fit.stop_at_step=4", "ckpt_path=last")
    assert json.loads((tmp_path / "two" / "results.json").read_text())["global_step"] == 8
    minillm_run(tmp_path, tmp_path / "x", f"ckpt_path={ckpt}")
    assert json.loads((tmp_path / "fsdp" / "results.json").read_text())["global_step"] == 8
    assert adam_steps(ckpt) == {8}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_lora_student_trains_under_ddp_and_fsdp_and_checkpoints_only_its_adapters(tmp_path, strategy):
    run_dir = tmp_path / strategy
    minillm_run(
        tmp_path,
        run_dir,
        f"strategy={strategy}",
        "trainer.devices=2",
        "student.lora.r=4",
        "student.lora.alpha=8",
    )
    results = json.loads((run_dir / "results.json").read_text())
    assert results["global_step"] == 8
    assert 0 < results["config"]["student_trained_params"] < results["config"]["student_params"]
    state = load_checkpoint(run_dir / "checkpoints" / "last.ckpt", "test")["state_dict"]
    assert state and all("lora_" in key for key in state)  # the adapters only: no base weight, no teacher
    assert all(type(v) is torch.Tensor for v in state.values())  # gathered, not shards
    assert (run_dir / "best_model" / "config.json").is_file()  # merged export
