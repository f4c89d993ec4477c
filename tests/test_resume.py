"""Exact resume: N steps straight through equal k steps, a stop, and a resume to N — parameters and
every logged metric — for a supervised objective and for MiniLLM stopped in the middle of a round."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from minillm.errors import RunInterrupted
from minillm.resume import AtomicCheckpointIO
from minillm.run import train

from .conftest import ROOT
from .test_smoke import smoke_overrides

# MiniLLM: 4 prompts per round, minibatches of 2, 2 inner epochs -> 4 updates per round; step 5 is
# inside the second round. L_PT on, so the pre-training data position is part of the state too.
ON_POLICY = [
    "objective=reverse_kld",
    "objective.mini_batch_size=2",
    "objective.ppo_epochs=2",
    "objective.pt_coef=0.5",
    "objective.pt_kd_ratio=0.5",
    "trainer.max_steps=10",
]
SUPERVISED = ["objective=forward_kld", "trainer.max_steps=9", "trainer.val_check_interval=4"]


def run(compose, tmp_path, name, *extra):
    cfg = compose(
        smoke_overrides(tmp_path, "logger=csv", "eval.compare=false", *extra), run_dir=tmp_path / name
    )
    return train(cfg)


def csv_rows(run_dir):
    with (run_dir / "csv" / "metrics.csv").open(newline="") as handle:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


@pytest.mark.parametrize(
    "extra, stop_at",
    [(SUPERVISED, 5), (ON_POLICY, 5), ([*ON_POLICY, "trainer.precision=bf16-mixed"], 5)],
    ids=["forward_kld", "reverse_kld-mid-round", "reverse_kld-mid-round-bf16-mixed"],
)
def test_stop_and_resume_equals_straight_run(compose, tmp_path, extra, stop_at):
    straight = run(compose, tmp_path, "straight", *extra)
    with pytest.raises(RunInterrupted) as stopped:
        run(compose, tmp_path, "stopped", *extra, f"fit.stop_at_step={stop_at}")
    assert stopped.value.step == stop_at
    ckpt = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    assert stopped.value.checkpoint == ckpt
    assert not (tmp_path / "stopped" / "results.json").exists()
    resumed = run(compose, tmp_path, "hydra-dir-of-resume", *extra, f"ckpt_path={ckpt}")

    assert resumed["global_step"] == straight["global_step"]
    # identical final parameters (a hash over every tensor's bytes) and identical logged metrics; the
    # resumed run wrote into the stopped run's folder
    assert resumed["final_weights_sha1"] == straight["final_weights_sha1"]
    assert csv_rows(tmp_path / "straight") == csv_rows(tmp_path / "stopped")
    assert resumed["test/rougeL"] == straight["test/rougeL"]


def test_precision_auto_resumes_with_the_precision_the_checkpoint_trained_with(compose, tmp_path, caplog):
    """A run stopped under bf16-mixed and resumed with trainer.precision=auto goes on in bf16-mixed (no new
    measurement) and ends with the straight bf16-mixed run's weights."""
    bf16 = [*ON_POLICY, "trainer.max_steps=6"]
    straight = run(compose, tmp_path, "straight", *bf16, "trainer.precision=bf16-mixed")
    with pytest.raises(RunInterrupted):
        run(compose, tmp_path, "stopped", *bf16, "trainer.precision=bf16-mixed", "fit.stop_at_step=3")
    ckpt = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    with caplog.at_level("INFO"):
        resumed = run(compose, tmp_path, "resume", *bf16, "trainer.precision=auto", f"ckpt_path={ckpt}")
    assert "trainer.precision=auto: bf16-mixed, as the checkpoint trained" in caplog.text
    assert resumed["final_weights_sha1"] == straight["final_weights_sha1"]


def test_resume_from_a_validation_checkpoint_equals_straight_run(compose, tmp_path):
    """The crash case: no stop request, only the last.ckpt that validation wrote. A first run that ends
    at step 4 stands in for one killed there (constant lr, so its schedule does not depend on max_steps)."""
    constant = [*SUPERVISED, "scheduler=constant"]
    run(compose, tmp_path, "first", *constant, "trainer.max_steps=4")  # validation at step 4: last.ckpt
    straight = run(compose, tmp_path, "straight", *constant)
    resumed = run(
        compose, tmp_path, "resume", *constant, f"ckpt_path={tmp_path / 'first/checkpoints/last.ckpt'}"
    )
    assert resumed["global_step"] == straight["global_step"] == 9
    assert resumed["final_weights_sha1"] == straight["final_weights_sha1"]
    assert csv_rows(tmp_path / "straight") == csv_rows(tmp_path / "first")


def test_ckpt_path_last_in_a_new_folder_resumes_the_run_beside_it_and_writes_here(compose, tmp_path):
    """The default layout (a new timestamped folder per launch): `last` takes the stopped run beside this
    one (same config but the pause) and goes on in this run's folder; the stopped run's is only read."""
    runs = tmp_path / "runs"
    with pytest.raises(RunInterrupted):
        run(compose, runs, "a", *SUPERVISED, "fit.stop_at_step=2")
    resumed = run(compose, runs, "b", *SUPERVISED, "ckpt_path=last")
    assert resumed["global_step"] == 9
    assert (runs / "b" / "results.json").is_file()
    assert not (runs / "a" / "results.json").exists()
    assert torch.load(runs / "a/checkpoints/last.ckpt", weights_only=False)["global_step"] == 2
    assert csv_rows(runs / "b")[0]["step"] == "0"  # the CSV goes on from the stopped run's rows


def test_checkpoint_from_another_objective_or_model_is_refused(compose, tmp_path):
    from minillm.errors import MinillmError

    with pytest.raises(RunInterrupted):
        run(compose, tmp_path, "a", *SUPERVISED, "fit.stop_at_step=2")
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    with pytest.raises(
        MinillmError, match="checkpoint is from objective=forward_kld, this run is objective=sft"
    ):
        run(compose, tmp_path, "b", "objective=sft", f"ckpt_path={ckpt}")
    with pytest.raises(MinillmError, match="trained with student.arch.hidden_size=64, this run has .*=32"):
        run(compose, tmp_path, "c", *SUPERVISED, "student.arch.hidden_size=32", f"ckpt_path={ckpt}")
    with pytest.raises(MinillmError, match="different student model"):  # allowed config change, wrong shapes
        run(
            compose,
            tmp_path,
            "c",
            *SUPERVISED,
            "student.arch.hidden_size=32",
            "resume.allow_config_change=true",
            f"ckpt_path={ckpt}",
        )
    with pytest.raises(MinillmError, match="checkpoint file does not exist"):
        run(compose, tmp_path, "d", *SUPERVISED, f"ckpt_path={tmp_path / 'nope.ckpt'}")


def test_atomic_checkpoint_survives_a_crash_while_saving(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def crash(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    kept = torch.load(path, weights_only=False)
    assert kept["step"] == 1 and torch.equal(kept["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_sigterm_stops_a_real_process_with_a_checkpoint_and_it_resumes(tmp_path):
    """A real `python -m minillm.run` process gets SIGTERM mid-training and is resumed to the end."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    base = [
        sys.executable,
        "-m",
        "minillm.run",
        *smoke_overrides(tmp_path, *SUPERVISED),
        "trainer.max_steps=400",
        "trainer.val_check_interval=1.0",
        "data.n_train=256",
        "trainer.max_epochs=100",
        "logger=csv",
        "eval.compare=false",
        "fit.num_threads=1",
    ]
    proc = subprocess.Popen(
        [*base, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 240
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "training (Ctrl-C or SIGTERM" in line:
            break
        assert time.time() < deadline, "".join(lines)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    code = proc.wait(timeout=120)
    assert code == 128 + signal.SIGTERM, rest
    assert "stopped at step" in rest and "ckpt_path=" in rest
    assert "Traceback" not in rest
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    step = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
    assert 0 < step < 400
    out = subprocess.run(
        [*base, f"hydra.run.dir={tmp_path / 'resume'}", f"ckpt_path={ckpt}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "run" / "results.json").is_file()
    assert '"global_step": 400' in (tmp_path / "run" / "results.json").read_text()


def test_last_ckpt_is_the_latest_validation_not_the_best(compose, tmp_path):
    """Lightning's save_last only follows new bests; resuming after a crash needs the latest state.
    select.mode=max on a falling val/loss makes the first validation the 'best' one."""
    run(compose, tmp_path, "run", *SUPERVISED, "select.monitor=val/loss", "select.mode=max")
    load = lambda name: torch.load(tmp_path / "run" / "checkpoints" / name, weights_only=False)  # noqa: E731
    assert load("best.ckpt")["global_step"] == 4
    assert load("last.ckpt")["global_step"] == 8
