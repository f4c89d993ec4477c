"""A .ckpt is a pickle: every reader of checkpoints refuses one that would run code, and reads ours.

The crafted file is a valid-looking minillm checkpoint whose ``minillm.data`` entry, when unpickled,
calls ``os.system`` (or ``exec``) to create a marker file. Each reader must refuse it with one line
naming the file and the offending global, and the marker must not exist afterwards.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from minillm.errors import MinillmError
from minillm.resume.checkpoint_io import AtomicCheckpointIO, read_checkpoint
from minillm.resume.rng import rng_state
from minillm.safe_load import load_checkpoint

from .conftest import ROOT
from .test_smoke import smoke_overrides


class RunsShell:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class RunsPython:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


PAYLOADS = {"os.system": (RunsShell, f"{os.system.__module__}.system"), "exec": (RunsPython, "exec")}


def write_evil_checkpoint(path, marker, payload="os.system"):
    """A checkpoint as minillm writes it (Lightning keys, RNG states, a student weight), plus the payload."""
    cls, _ = PAYLOADS[payload]
    ckpt = {
        "epoch": 0,
        "global_step": 2,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": {"student.lm_head.weight": torch.zeros(4, 4)},
        "minillm": {"objective": "sft", "rng": rng_state(), "data": cls(marker)},
    }
    AtomicCheckpointIO().save_checkpoint(ckpt, path)
    return path


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "marker"
    return write_evil_checkpoint(tmp_path / "evil.ckpt", marker), marker


def test_the_crafted_checkpoint_does_run_code_when_unpickled(tmp_path):
    """The control: without weights_only the file creates the marker (so the refusals below mean something)."""
    for payload in PAYLOADS:
        marker = tmp_path / f"marker-{payload}"
        path = write_evil_checkpoint(tmp_path / f"{payload}.ckpt", marker, payload)
        torch.load(path, weights_only=False)
        assert marker.is_file(), payload


@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_every_reader_refuses_it_in_one_line_naming_file_and_type(compose, tmp_path, payload):
    from minillm.evaluation.loading import load_evaluated_model
    from minillm.training.trainer import make_trainer

    marker = tmp_path / "marker"
    path = write_evil_checkpoint(tmp_path / "evil.ckpt", marker, payload)
    name = PAYLOADS[payload][1]
    expected = re.escape(f"={path}: refused, the file holds {name}, which minillm checkpoints never do")

    with pytest.raises(MinillmError, match="^ckpt_path" + expected) as err:
        read_checkpoint(path)  # ckpt_path=…, before the run builds anything
    assert "\n" not in str(err.value)
    # what trainer.fit(ckpt_path=…) calls: the strategy's checkpoint IO, here asked for weights_only=False
    trainer, _ = make_trainer(compose(smoke_overrides(tmp_path)), [])
    with pytest.raises(MinillmError, match="^ckpt_path" + expected):
        trainer.strategy.load_checkpoint(path, weights_only=False)
    cfg = compose([*smoke_overrides(tmp_path), f"evaluate.path={path}"], config_name="evaluate")
    with pytest.raises(MinillmError, match="^evaluate.path" + expected):
        load_evaluated_model(cfg, {"test": []})
    assert not marker.exists()


def test_a_run_refuses_it_before_building_any_model(compose, tmp_path, evil, monkeypatch):
    import minillm.models.loading
    import minillm.run

    path, marker = evil

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the checkpoint was refused")

    monkeypatch.setattr(minillm.models.loading, "load_model", no_model)
    cfg = compose(smoke_overrides(tmp_path, "objective=sft", "logger=none", f"ckpt_path={path}"))
    with pytest.raises(
        MinillmError,
        match=re.escape(f"ckpt_path={path}: refused, the file holds {os.system.__module__}.system"),
    ):
        minillm.run.train(cfg)
    assert not marker.exists()


@pytest.mark.parametrize(
    "module, args",
    [
        # the evaluate command's reader is checked in process above; its process with make test-slow
        pytest.param("minillm.evaluate", ["evaluate.path={path}"], marks=pytest.mark.slow),
        # in process: test_a_run_refuses_it_before_building_any_model
        pytest.param(
            "minillm.run", ["objective=sft", "logger=none", "ckpt_path={path}"], marks=pytest.mark.slow
        ),
    ],
    ids=["evaluate", "run"],
)
def test_the_command_exits_2_with_one_line_and_runs_nothing(tmp_path, evil, module, args):
    path, marker = evil
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            module,
            *smoke_overrides(tmp_path),
            *(a.format(path=path) for a in args),
            f"hydra.run.dir={tmp_path / 'out'}",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: {args[-1].split('=')[0]}={path}: refused, the file holds {os.system.__module__}.system, "
        "which minillm checkpoints never do (only tensors, numbers, strings, containers and RNG states "
        "are loaded: a pickled object can run code when loaded)"
    )
    assert "Traceback" not in out.stderr
    assert not marker.exists()


def test_what_our_checkpoints_hold_loads_back_equal(tmp_path):
    """RNG states (python, numpy, torch, a torch.Generator), optimizer and scheduler states, tensors in
    nested containers: written by AtomicCheckpointIO, read back by the safe loader, unchanged."""
    random.seed(3)
    np.random.seed(3)
    layer = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(layer.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (step + 1))
    layer(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    gen = torch.Generator().manual_seed(5)
    ckpt = {
        "state_dict": layer.state_dict(),
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [sched.state_dict()],
        "callbacks": {"ModelCheckpoint{'monitor': 'val/loss'}": {"best_model_score": torch.tensor(1.5)}},
        "minillm": {
            "rng": rng_state(),
            "shuffle_gen": gen.get_state(),
            "round": {"order": [torch.arange(2)]},
        },
    }
    path = tmp_path / "ours.ckpt"
    AtomicCheckpointIO().save_checkpoint(ckpt, path)
    loaded = load_checkpoint(path, "ckpt_path")
    numpy_state = loaded["minillm"]["rng"]["numpy"]
    assert numpy_state[0] == "MT19937" and np.array_equal(numpy_state[1], ckpt["minillm"]["rng"]["numpy"][1])
    assert numpy_state[2:] == ckpt["minillm"]["rng"]["numpy"][2:]
    assert loaded["minillm"]["rng"]["python"] == ckpt["minillm"]["rng"]["python"]
    assert torch.equal(loaded["minillm"]["rng"]["torch"], ckpt["minillm"]["rng"]["torch"])
    assert torch.equal(loaded["minillm"]["shuffle_gen"], gen.get_state())
    assert loaded["lr_schedulers"] == ckpt["lr_schedulers"]
    assert torch.equal(
        loaded["optimizer_states"][0]["state"][0]["exp_avg"], opt.state[layer.weight]["exp_avg"]
    )
    via_lightning = AtomicCheckpointIO().load_checkpoint(path, weights_only=False)  # as trainer.fit calls it
    assert all(torch.equal(via_lightning["state_dict"][k], v) for k, v in layer.state_dict().items())


def test_the_allowlist_is_exact_and_scoped_to_our_loads(tmp_path):
    """numpy arrays other than the uint32 RNG key are refused, and nothing stays allowed after a load."""
    for value, name in (
        (np.zeros(2), "numpy.dtypes.Float64DType"),
        (np.array([None]), "numpy.dtypes.ObjectDType"),
    ):
        path = tmp_path / "other.ckpt"
        torch.save({"x": value}, path)
        with pytest.raises(MinillmError, match=f"refused, the file holds {name}"):
            load_checkpoint(path, "ckpt_path")
    path = tmp_path / "rng.ckpt"
    torch.save({"rng": np.random.get_state()}, path)
    before = set(map(str, torch.serialization.get_safe_globals()))
    load_checkpoint(path)
    assert set(map(str, torch.serialization.get_safe_globals())) == before
    with pytest.raises(Exception, match="numpy"):  # a plain weights_only load elsewhere is not widened
        torch.load(path, weights_only=True)


def test_unreadable_files_get_one_line(tmp_path):
    """A text file named .ckpt: torch said "please torch.save your checkpoint with this option" (mmap) or a bare
    KeyError (a legacy load); neither says the file is not a checkpoint."""
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    for read in (lambda: load_checkpoint(garbage, "evaluate.path"), lambda: read_checkpoint(garbage)):
        with pytest.raises(
            MinillmError, match=r": not a readable checkpoint \(not a file written by torch\.save\)$"
        ):
            read()
    torch.save({"step": 1}, garbage)  # the real thing passes the check
    assert load_checkpoint(garbage, "evaluate.path") == {"step": 1}
    torn = tmp_path / "torn.ckpt"  # a torch.save file cut short: torch's own reason
    torn.write_bytes(garbage.read_bytes()[:40])
    with pytest.raises(MinillmError, match=re.escape(f"ckpt_path={torn}: not a readable checkpoint (")):
        load_checkpoint(torn, "ckpt_path")
    with pytest.raises(MinillmError, match="not a readable checkpoint \\(FileNotFoundError"):
        load_checkpoint(tmp_path / "missing.ckpt", "ckpt_path")


def test_an_empty_checkpoint_file_says_it_is_empty(tmp_path):
    """An empty .ckpt gave torch's mmap complaint about the zipfile format, which points the wrong way."""
    empty = tmp_path / "x.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(
        MinillmError, match=r"^ckpt_path=.*x\.ckpt: not a readable checkpoint \(the file is empty\)$"
    ):
        read_checkpoint(empty)
