"""Exact resume: N steps straight through equal k steps, a stop, and a resume to N — parameters and
every logged metric — for a supervised objective and for MiniLLM stopped in the middle of a round."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from minillm.errors import RunInterrupted
from minillm.resume.checkpoint_io import AtomicCheckpointIO
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
    [
        (SUPERVISED, 5),
        (ON_POLICY, 5),
        pytest.param(
            [*ON_POLICY, "trainer.precision=bf16-mixed"], 5, marks=pytest.mark.slow
        ),  # not the default
        # inductor compiles the stopped and the resumed run's passes anew: the same kernels, the same numbers
        pytest.param([*ON_POLICY, "fit.compile_updates=true"], 5, marks=pytest.mark.slow),
    ],
    ids=[
        "forward_kld",
        "reverse_kld-mid-round",
        "reverse_kld-mid-round-bf16-mixed",
        "reverse_kld-mid-round-compiled-updates",
    ],
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


@pytest.mark.slow  # a real process signalled and resumed: make test-slow (.ci/run runs it)
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


def test_a_dropout_student_stopped_mid_round_resumes_with_its_dropout_off(compose, tmp_path, monkeypatch):
    """A student with dropout (Llama's functional attention dropout) stopped in the middle of a round: the
    resumed run skips the round's start (its rollouts come from the checkpoint), and Lightning has put the
    student in train mode, so each update must set the update mode itself. Every update's forwards repeat
    bit for bit, each resumed update logs exactly what the straight run's same update logged (its PPO
    ratio included), and the final weights are the straight run's."""
    from minillm.training.round import MiniLLMRound, response_logits

    real_update = MiniLLMRound.update
    record: list[dict] = []

    def probed(self, mb):
        logs = real_update(self, mb)
        with torch.no_grad():
            first, second = (response_logits(self.student, mb.to(self.device)) for _ in range(2))
        record.append(
            dict(same=torch.equal(first, second), logs={k: float(v) for k, v in (logs or {}).items()})
        )
        return logs

    monkeypatch.setattr(MiniLLMRound, "update", probed)
    extra = [*ON_POLICY, "+student.arch.attention_dropout=0.1", "trainer.max_steps=8"]
    straight_result = run(compose, tmp_path, "straight", *extra)
    straight = list(record)
    record.clear()
    with pytest.raises(RunInterrupted):
        run(compose, tmp_path, "stopped", *extra, "fit.stop_at_step=5")
    record.clear()
    resumed_result = run(
        compose, tmp_path, "resume", *extra, f"ckpt_path={tmp_path / 'stopped/checkpoints/last.ckpt'}"
    )

    assert len(straight) == 8 and len(record) == 3  # updates 6, 7, 8: the rest of round 2, then none
    assert all(update["same"] for update in straight + record), "two forwards in the update's mode differ"
    assert [u["logs"] for u in record] == [u["logs"] for u in straight[5:]]
    assert resumed_result["final_weights_sha1"] == straight_result["final_weights_sha1"]


def save_tiny_student(folder, tokenizer, seed: int) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def test_model_digest_follows_the_files_not_the_path(tmp_path, tiny_tokenizer):
    from minillm.resume.model_files import model_digest

    save_tiny_student(tmp_path / "a", tiny_tokenizer, seed=0)
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "b")
    (tmp_path / "elsewhere" / "b" / ".cache").mkdir()  # a download's metadata does not count
    (tmp_path / "elsewhere" / "b" / ".cache" / "x").write_text("etag")
    assert model_digest(tmp_path / "a") == model_digest(tmp_path / "elsewhere" / "b")
    save_tiny_student(tmp_path / "c", tiny_tokenizer, seed=1)  # same shapes, other weights
    assert model_digest(tmp_path / "c") != model_digest(tmp_path / "a")
    assert model_digest("some-org/some-hub-id") is None


def test_a_checkpoint_resumes_with_its_model_moved_and_refuses_other_weights_at_the_same_path(
    compose, tmp_path, tiny_tokenizer
):
    """student.path is compared by the files it names (a digest stored at save time): a copy at another
    path (a moved checkout, another clone) resumes; other weights under the trained path are refused."""
    from minillm.errors import MinillmError

    trained, moved = tmp_path / "models" / "student", tmp_path / "clone" / "models" / "student"
    save_tiny_student(trained, tiny_tokenizer, seed=0)
    steps = ["objective=sft", "student=hf", "trainer.max_steps=3", "trainer.val_check_interval=2"]
    with pytest.raises(RunInterrupted):
        run(compose, tmp_path, "a", *steps, f"student.path={trained}", "fit.stop_at_step=2")
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert set(torch.load(ckpt, weights_only=False)["minillm"]["models"]) == {"student.path"}
    shutil.copytree(trained, moved)
    save_tiny_student(trained, tiny_tokenizer, seed=1)  # the old path now holds another model
    with pytest.raises(MinillmError, match=rf"trained with student\.path={trained} \(files \w+\), this run has "
                       rf"student\.path={trained} \(files \w+\)"):  # fmt: skip
        run(compose, tmp_path, "b", *steps, f"student.path={trained}", f"ckpt_path={ckpt}")
    resumed = run(compose, tmp_path, "c", *steps, f"student.path={moved}", f"ckpt_path={ckpt}")
    assert resumed["global_step"] == 3


def test_a_checkpoint_without_model_digests_compares_the_paths_as_text(compose, tmp_path, tiny_tokenizer):
    from minillm.errors import MinillmError
    from minillm.resume.checks import check_config

    save_tiny_student(tmp_path / "a", tiny_tokenizer, seed=0)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    config = {"student": {"path": str(tmp_path / "a")}, "seed": 0}
    old = {"minillm": {"config": config}}  # written before checkpoints carried digests
    with pytest.raises(MinillmError, match="trained with student.path=.*/a, this run has student.path=.*/b"):
        check_config(old, tmp_path / "x.ckpt", {"student": {"path": str(tmp_path / "b")}, "seed": 0})


def test_max_time_stops_a_minillm_round_between_its_updates_and_the_run_goes_on_from_there(
    compose, tmp_path, monkeypatch
):
    """trainer.max_time is checked before every update of a round but its first, not only between rounds
    (Lightning's Timer). A fake clock advances 0.5 s per rollout and 1 s per update; rounds of 4 updates.
    A 5 s budget: round 1 ends at 4.5 s, round 2's rollout at 5 s; its first update still runs (the
    rollout is not wasted), then the round stops: 5 updates, not 8. The run ends normally, and a larger
    max_time (8 s) goes on from its last.ckpt: round 3's rollout 6.5 s, updates to 7.5 and 8.5 s: step 7."""
    import lightning.pytorch.callbacks.timer as timer_module

    from minillm.training.round import MiniLLMRound

    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(timer_module, "time", SimpleNamespace(monotonic=lambda: clock.now))
    update = MiniLLMRound.update

    def timed_update(self, mb):
        out = update(self, mb)
        clock.now += 1.0
        return out

    monkeypatch.setattr(MiniLLMRound, "update", timed_update)
    start = MiniLLMRound.start

    def timed_start(self, *args, **kwargs):
        out = start(self, *args, **kwargs)
        clock.now += 0.5
        return out

    monkeypatch.setattr(MiniLLMRound, "start", timed_start)
    budget = [*ON_POLICY, "trainer.max_steps=20", "trainer.val_check_interval=10"]
    first = run(compose, tmp_path, "a", *budget, "trainer.max_time=00:00:00:05")
    assert first["global_step"] == 5
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["global_step"] == 5
    more = run(compose, tmp_path, "b", *budget, "trainer.max_time=00:00:00:08", f"ckpt_path={ckpt}")
    assert more["global_step"] == 7
