"""What ``ckpt_path=last`` and ``ckpt_path=PATH`` resume, and continuing a finished run to a larger limit.

- ``last`` is this run's own ``checkpoints/last.ckpt``; without one, the newest run beside it whose config
  differs only in keys that bound the run (``minillm.resume.config_diff.RUN_BOUND_KEYS``); another run's folder is
  never written unless ``ckpt_path`` names its checkpoint.
- A checkpoint trained with another value of a key that changes training is refused with one line naming
  the key, unless ``resume.allow_config_change=true``.
- A run that ended at its ``max_steps`` / ``max_epochs`` goes on to the larger limit it is resumed with.
"""

from __future__ import annotations

import hashlib
import io
import logging

import pytest
import torch

from minillm.errors import MinillmError, RunInterrupted

from .test_resume import csv_rows, run

SFT = ["objective=sft", "scheduler=constant"]
# 4 prompts per round in minibatches of 2, 2 inner epochs: 4 updates per round
ON_POLICY = [
    "objective=reverse_kld",
    "objective.mini_batch_size=2",
    "objective.ppo_epochs=2",
    "scheduler=constant",
]


def snapshot(folder):
    """Every file under ``folder`` with its modification time and a hash of its bytes."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def ckpt_step(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


def test_last_resumes_this_runs_own_checkpoint_and_leaves_the_run_beside_it_alone(compose, tmp_path, caplog):
    """The issue's commands: a (8 steps) and b (4 steps) side by side; b resumed with `last` to 8 steps."""
    runs = tmp_path / "runs"
    run(compose, runs, "a", *SFT, "trainer.max_steps=8")
    run(compose, runs, "b", *SFT, "trainer.max_steps=4")
    before = snapshot(runs / "a")
    with caplog.at_level(logging.INFO, logger="minillm"):
        resumed = run(compose, runs, "b", *SFT, "trainer.max_steps=8", "ckpt_path=last")
    assert f"resuming this run's own checkpoint {runs / 'b/checkpoints/last.ckpt'}" in caplog.text
    assert snapshot(runs / "a") == before  # a's results, CSV, checkpoints: not touched
    assert resumed["global_step"] == 8
    assert '"global_step": 8' in (runs / "b" / "results.json").read_text()
    assert ckpt_step(runs / "b/checkpoints/last.ckpt") == 8


def test_last_without_its_own_checkpoint_takes_only_a_run_of_the_same_config(compose, tmp_path, caplog):
    runs = tmp_path / "runs"
    with pytest.raises(RunInterrupted):
        run(compose, runs, "other-lr", *SFT, "optim.lr=0.002", "fit.stop_at_step=2")
    with pytest.raises(MinillmError) as refused:
        run(compose, runs, "b", *SFT, "ckpt_path=last")
    message = str(refused.value)
    assert "\n" not in message
    assert "optim.lr=0.002, this run has optim.lr=0.001" in message
    assert str(runs / "other-lr/checkpoints/last.ckpt") in message
    assert not (runs / "b" / "checkpoints").exists()

    with pytest.raises(RunInterrupted):  # same config; stop_at_step only bounds the run
        run(compose, runs, "same", *SFT, "fit.stop_at_step=2")
    other = runs / "other-lr/checkpoints/last.ckpt"
    other.touch()  # the run of another config is the newest: it must still be passed over
    before = {name: snapshot(runs / name) for name in ("same", "other-lr")}
    with caplog.at_level(logging.INFO, logger="minillm"):
        resumed = run(compose, runs, "b", *SFT, "ckpt_path=last")
    assert (
        f"resuming the newest run beside it with the same config, {runs / 'same/checkpoints/last.ckpt'}"
        in (caplog.text)
    )
    assert resumed["global_step"] == 3  # debug=smoke: 3 steps, 2 of them from the checkpoint
    assert (runs / "b" / "results.json").is_file() and ckpt_step(runs / "b/checkpoints/last.ckpt") == 3
    assert {name: snapshot(runs / name) for name in ("same", "other-lr")} == before


def test_explicit_checkpoint_of_another_config_is_refused_unless_allowed(compose, tmp_path, caplog):
    with pytest.raises(RunInterrupted):
        run(compose, tmp_path, "a", *SFT, "fit.stop_at_step=2")
    ckpt = tmp_path / "a/checkpoints/last.ckpt"
    with pytest.raises(MinillmError) as refused:
        run(compose, tmp_path, "b", *SFT, "data.batch_size=2", f"ckpt_path={ckpt}")
    message = str(refused.value)
    assert "\n" not in message
    assert f"ckpt_path={ckpt}: the checkpoint was trained with data.batch_size=4" in message
    assert "resume.allow_config_change=true" in message
    assert ckpt_step(ckpt) == 2
    # the optimizer's settings come back from the checkpoint's state: allowed, a new learning rate was announced
    # and then trained at the old one
    for key in ("optim.lr=0.0123", "optim.weight_decay=0.3"):
        with pytest.raises(
            MinillmError, match=rf"{key.split('=')[0]}: .* -> .* cannot take effect on resume"
        ):
            run(compose, tmp_path, "b", *SFT, key, "resume.allow_config_change=true", f"ckpt_path={ckpt}")
    assert ckpt_step(ckpt) == 2

    with caplog.at_level(logging.WARNING, logger="minillm"):
        resumed = run(
            compose,
            tmp_path,
            "b",
            *SFT,
            "data.batch_size=2",
            "resume.allow_config_change=true",
            f"ckpt_path={ckpt}",
        )
    assert "data.batch_size: 4 -> 2" in caplog.text
    assert resumed["global_step"] == 3
    assert ckpt_step(ckpt) == 3  # the user named that run's checkpoint: it goes on in that run's folder


def test_the_checkpoint_carries_its_config_as_plain_containers(compose, tmp_path):
    """Loadable with weights_only=True: the config is dicts, lists and scalars, not an OmegaConf object."""
    run(compose, tmp_path, "a", *SFT)
    meta = torch.load(tmp_path / "a/checkpoints/last.ckpt", map_location="cpu", weights_only=False)["minillm"]

    def plain(x):
        if isinstance(x, dict):
            return all(isinstance(k, str) and plain(v) for k, v in x.items())
        if isinstance(x, list):
            return all(plain(v) for v in x)
        return x is None or isinstance(x, str | int | float | bool)

    assert type(meta["config"]) is dict and plain(meta["config"])
    buffer = io.BytesIO()
    torch.save({"config": meta["config"]}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["config"] == meta["config"]
    assert meta["config"]["optim"]["lr"] == 0.001 and meta["config"]["objective"]["name"] == "sft"


@pytest.mark.parametrize(
    "extra, first, second, steps",
    [
        pytest.param(
            SFT, ["trainer.max_steps=4"], ["trainer.max_steps=8"], 8, marks=pytest.mark.slow
        ),  # as the next
        (ON_POLICY, ["trainer.max_steps=4"], ["trainer.max_steps=8"], 8),
        # a whole epoch (16 batches) done, max_steps set: Lightning alone trains nothing in the next epoch
        (
            [*SFT, "trainer.max_steps=100", "trainer.val_check_interval=1.0"],
            ["trainer.max_epochs=1"],
            ["trainer.max_epochs=2"],
            32,
        ),
    ],
    ids=["sft-max_steps", "reverse_kld-max_steps", "sft-max_epochs"],
)
def test_a_finished_run_goes_on_to_a_larger_limit(compose, tmp_path, caplog, extra, first, second, steps):
    """Ended at its limit, resumed from its own last.ckpt with a larger one: it trains the difference, and
    (constant lr) ends with the weights of a run that went straight to the larger limit."""
    done = run(compose, tmp_path, "run", *extra, *first)
    with caplog.at_level(logging.INFO, logger="minillm"):
        continued = run(compose, tmp_path, "run", *extra, *second, "ckpt_path=last")
    straight = run(compose, tmp_path, "straight", *extra, *second)
    assert continued["global_step"] == straight["global_step"] == steps
    assert ckpt_step(tmp_path / "run/checkpoints/last.ckpt") == steps
    assert continued["final_weights_sha1"] != done["final_weights_sha1"]
    assert continued["final_weights_sha1"] == straight["final_weights_sha1"]
    assert "the run's limits changed since the checkpoint: trainer.max_" in caplog.text
    assert f"the schedule's horizon changed: the checkpoint's schedules spanned {done['global_step']} " in (
        caplog.text
    )
    train_rows = lambda name: [r for r in csv_rows(tmp_path / name) if "train/loss" in r]  # noqa: E731
    assert train_rows("run") == train_rows("straight")


def test_a_fresh_run_in_a_folder_that_holds_a_run_is_refused_and_changes_nothing(compose, tmp_path):
    """The same command twice in one named folder (no ckpt_path): the second would have trained from scratch
    over the first's results.json, CSV, checkpoints and W&B id. It is refused in one line, touching nothing;
    ckpt_path=last goes on from it."""
    run(compose, tmp_path, "a", *SFT, "trainer.max_steps=2")
    before = snapshot(tmp_path / "a")
    with pytest.raises(
        MinillmError, match=r"already holds a run \(results\.json, csv/metrics\.csv, best_model, "
    ):
        run(compose, tmp_path, "a", *SFT, "trainer.max_steps=2")
    assert snapshot(tmp_path / "a") == before
    assert run(compose, tmp_path, "a", *SFT, "trainer.max_steps=4", "ckpt_path=last")["global_step"] == 4


def test_a_folder_without_earlier_results_takes_a_fresh_run(compose, tmp_path):
    """Hydra's own files (.hydra/, the log) or a run that crashed before writing anything are no work to lose."""
    (tmp_path / "b" / ".hydra").mkdir(parents=True)
    (tmp_path / "b" / "run.log").write_text("")
    (tmp_path / "b" / "checkpoints").mkdir()
    assert run(compose, tmp_path, "b", *SFT, "trainer.max_steps=1")["global_step"] == 1


@pytest.mark.parametrize("extra", [SFT, ON_POLICY], ids=["sft", "reverse_kld"])
def test_the_same_command_plus_ckpt_path_goes_on_past_its_stop_at_step(compose, tmp_path, extra):
    """The stop's hint says: resume with the same command plus ckpt_path. That command still holds
    fit.stop_at_step, which must not stop the resumed run again at once (it looped at the same step)."""
    command = [*extra, "trainer.max_steps=8", "fit.stop_at_step=3"]
    with pytest.raises(RunInterrupted) as stopped:
        run(compose, tmp_path, "a", *command)
    assert stopped.value.step >= 3
    assert run(compose, tmp_path, "a", *command, "ckpt_path=last")["global_step"] == 8


def test_a_checkpoint_other_than_last_goes_on_in_the_new_run_folder(compose, tmp_path):
    """Only ckpt_path=…/checkpoints/last.ckpt goes on writing in that run's folder (README). Going on from its
    best.ckpt wrote there too: it would rewind the run and overwrite its last.ckpt and results.json."""
    run(compose, tmp_path, "a", *SFT, "trainer.max_steps=2")
    before = snapshot(tmp_path / "a")
    best = tmp_path / "a" / "checkpoints" / "best.ckpt"
    assert best.is_file()
    result = run(compose, tmp_path, "b", *SFT, "trainer.max_steps=4", f"ckpt_path={best}")
    assert result["global_step"] == 4 and (tmp_path / "b" / "results.json").is_file()
    assert snapshot(tmp_path / "a") == before


def test_a_second_ctrl_c_aborts_with_one_line_and_status_130(capsys):
    """The first Ctrl-C asks for a stop with a checkpoint; a second one aborts. It raised KeyboardInterrupt,
    which Lightning turns into a silent exit status 1 (reads as a crash); now one line and 130."""
    import signal

    from minillm.cli import user_errors
    from minillm.errors import RunAborted
    from minillm.resume.signals import GracefulStop

    stop = GracefulStop()
    stop._handle(signal.SIGINT, None)
    assert stop.requested == signal.SIGINT
    with pytest.raises(RunAborted) as aborted:
        stop._handle(signal.SIGINT, None)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def body():
        raise aborted.value

    with pytest.raises(SystemExit) as exited:
        user_errors(body)()
    assert exited.value.code == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        "aborted by a second Ctrl-C: no checkpoint of this run was written yet"
    ]


def test_a_resumed_runs_cost_counts_every_segment(compose, tmp_path):
    """results.json's train_seconds and timing.json's steps cover the whole run, not only the part after the
    last resume (the report's cost columns undercounted resumed runs)."""
    import json

    with pytest.raises(RunInterrupted):
        run(compose, tmp_path, "a", *SFT, "trainer.max_steps=6", "fit.stop_at_step=3")
    path = tmp_path / "a" / "checkpoints" / "last.ckpt"
    first = torch.load(path, map_location="cpu", weights_only=False)
    assert first["minillm"]["train_seconds"] > 0
    first["minillm"]["train_seconds"] = 1000.0  # as if the first segment had trained for 1000 s
    torch.save(first, path)
    result = run(compose, tmp_path, "a", *SFT, "trainer.max_steps=6", "fit.stop_at_step=3", "ckpt_path=last")
    assert 1000.0 < result["train_seconds"] < 1000.0 + 300
    timing = json.loads((tmp_path / "a" / "timing.json").read_text())
    assert timing["optimizer_steps"] == 6 and timing["batches"] == 6


def test_a_checkpoint_from_before_a_key_was_added_resumes_as_if_it_held_what_the_code_did_then():
    """``fit.compile_updates`` and ``sampler.decode`` came after checkpoints were first written: a saved config
    without them is the same as one with their old behaviour (eager), and differs from one that turns them on."""
    from minillm.resume.config_diff import config_differences

    saved = {"fit": {"num_threads": 1}, "sampler": {"name": "hf"}, "seed": 3}
    current = {
        "fit": {"num_threads": 1, "compile_updates": False},
        "sampler": {"name": "hf", "decode": "eager"},
    }
    assert config_differences(saved, {**current, "seed": 3}) == []
    changed = {
        "fit": {"num_threads": 1, "compile_updates": True},
        "sampler": {"name": "hf", "decode": "static"},
    }
    assert config_differences(saved, {**changed, "seed": 3}) == [
        ("fit.compile_updates", False, True),
        ("sampler.decode", "eager", "static"),
    ]
    # a key the saved config does hold is compared as it is
    assert config_differences({**saved, "fit": {"compile_updates": True}}, {**current, "seed": 3})[0] == (
        "fit.compile_updates",
        True,
        False,
    )


def test_ctrl_c_in_the_end_of_run_evaluation_says_how_to_evaluate_again(compose, tmp_path, monkeypatch):
    """After training no stop handler runs: Ctrl-C in the end-of-run evaluation gave a KeyboardInterrupt
    traceback and no results.json. It is a stop at the last step, and ckpt_path=last evaluates again."""
    from minillm.evaluation import sampled

    real = sampled.evaluate_splits

    def interrupted(cfg, model, tokenizer, dm, name, **kw):
        if name == "trained student":
            raise KeyboardInterrupt
        return real(cfg, model, tokenizer, dm, name, **kw)

    monkeypatch.setattr(sampled, "evaluate_splits", interrupted)
    with pytest.raises(RunInterrupted) as stopped:
        run(compose, tmp_path, "a", *SFT)
    assert stopped.value.step == 3 and stopped.value.checkpoint == tmp_path / "a/checkpoints/last.ckpt"
    assert not (tmp_path / "a/results.json").exists()
    monkeypatch.setattr(sampled, "evaluate_splits", real)
    again = run(compose, tmp_path, "a", *SFT, "ckpt_path=last")
    assert again["global_step"] == 3 and (tmp_path / "a/results.json").is_file()
