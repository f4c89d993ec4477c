"""The console scripts of ``[project.scripts]``: one per entry point, each starting as its command would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.test_architecture import ENTRY_POINTS, INTERNAL_PROGRAMS

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_entry_point_has_a_console_script():
    assert {target.split(":")[0] for target in SCRIPTS.values()} == ENTRY_POINTS - INTERNAL_PROGRAMS
    assert all(name.startswith("minillm-") and target.endswith(":main") for name, target in SCRIPTS.items())


def run_console_script(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The script as pip installs it: ``sys.exit(<entry point>())`` with the command line in sys.argv."""
    stub = (
        "import sys\n"
        "from importlib.metadata import EntryPoint\n"
        f"sys.argv = [{name!r}, *{args!r}]\n"
        f"sys.exit(EntryPoint({name!r}, {SCRIPTS[name]!r}, 'console_scripts').load()())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", stub], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_starts_from_any_folder(name, tmp_path):
    """What the installed script does (load the entry point, call it with the command line), run from a
    folder that is not the repository: Hydra must still find conf/, argparse must answer --help."""
    out = run_console_script(name, ["--help"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage" in out.stdout.lower() or "== Config ==" in out.stdout, out.stdout[-2000:]


def run_module(program: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m <program> <args>`` from ``cwd`` (not the checkout), offline, with Hydra's own error report off."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("MINILLM_ASSETS", None)
    return subprocess.run(
        [sys.executable, "-m", program, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("program", "args", "line"),
    [
        (
            "minillm.run",
            ["data.paht=x"],
            "error: data.paht (set on the command line) is read by no data config (data=bundled is chosen): drop "
            "it or check its spelling",
        ),
        (
            "minillm.run",
            ["objective=nope"],
            "error: In 'config': Could not find 'objective/nope' Available options",
        ),
        ("minillm.run", ["hydra.run.dir={file}/run"], "error: hydra.run.dir: cannot create the run folder"),
        (
            "minillm.evaluate",
            ["evaluate.modl=init"],
            "error: evaluate.modl: no such key in the chosen configs",
        ),
        (
            "minillm.run",
            ["optim.momentum=0.9"],
            "error: optim.momentum: no such key in the chosen configs: check its spelling (--cfg job prints every "
            "key) or the group choice that reads it; an argument of the object named there is added with "
            "+optim.momentum=…",
        ),
        ("minillm.run", ["objective.lr=1e-4"], "error: objective.lr moved: use optim.lr"),
        (
            "minillm.run",
            ["+objective.val_check_interval=5"],
            "error: objective.val_check_interval moved: use trainer",
        ),
        (
            "minillm.run",
            ["fit.num_thread=2"],
            "error: fit.num_thread: not a key of fit (its keys: num_threads, max_bad_steps, stop_at_step,",
        ),
        (
            "minillm.run",
            ["teacher=hf"],
            "error: teacher.path: not set, and this run needs it (teacher.name is ${.path}): add teacher.path=…",
        ),
        (
            "minillm.run",
            ["eval.callbacks.bins=ten"],
            "error: eval.callbacks.bins=ten: must be of type integer (set on the command line; minillm/schema/)",
        ),
    ],
    ids=[
        "misspelled-key",
        "unknown-choice",
        "run-folder-under-a-file",
        "evaluate-misspelled-key",
        "optim-argument",
        "moved-key",
        "moved-key-added",
        "schema-key",
        "unset-path",
        "schema-type",
    ],
)
def test_what_hydra_refuses_is_one_line_with_exit_status_2(program, args, line, tmp_path):
    """A misspelled key, an unknown group choice or a run folder that cannot be created are refused by Hydra
    before minillm's own checks run; Hydra would print several lines and exit 1."""
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    out = run_module(program, [a.format(file=a_file) for a in args], tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(line), out.stderr[-2000:]
    assert "objective/nope" not in line or "sft" in lines[0]  # the choices are listed


@pytest.mark.parametrize("name", ["minillm-report", "minillm-compare"])
def test_table_scripts_print_once_and_exit_zero(name, tmp_path):
    """The wrapper exits with what main returns: a returned string would be printed again on stderr,
    with exit status 1. The table goes to stdout once, and the status is 0."""
    run = tmp_path / "sweep" / "0"
    (run / ".hydra").mkdir(parents=True)
    student = {"test": {"rougeL": 41.5, "exact_match": 0.0, "valid_rate": 12.5, "length": 9.0}}
    (run / "results.json").write_text(
        json.dumps({"config": {"run_name": "sft-s0"}, "train_seconds": 6, "global_step": 3,
                    "eval": {"trained student": student}})
    )  # fmt: skip
    out = run_console_script(name, [str(tmp_path / "sweep"), "--out", str(tmp_path / "table.md")], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    table = (tmp_path / "table.md").read_text().strip()
    assert "41.5" in table and out.stdout.strip() == table
    assert "41.5" not in out.stderr, out.stderr[-2000:]


def test_the_embedded_default_is_found_from_any_folder(tmp_path):
    """assets_dir is the checkout's (not the working directory's): `minillm-run` or `python -m minillm.run`
    started elsewhere loads the shipped teacher and student init."""
    out = run_module("minillm.run", ["--cfg", "job", "--resolve"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assets = ROOT / "assets" / "embedded"
    assert f"assets_dir: {assets}\n" in out.stdout
    assert f"path: {assets / 'student_init'}\n" in out.stdout and (assets / "student_init").is_dir()
