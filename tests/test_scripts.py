"""The console scripts of ``[project.scripts]``: one per entry point, each starting as its command would."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.test_architecture import ENTRY_POINTS

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_entry_point_has_a_console_script():
    assert {target.split(":")[0] for target in SCRIPTS.values()} == ENTRY_POINTS
    assert all(name.startswith("minillm-") and target.endswith(":main") for name, target in SCRIPTS.items())


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_starts_from_any_folder(name, tmp_path):
    """What the installed script does (load the entry point, call it with the command line), run from a
    folder that is not the repository: Hydra must still find conf/, argparse must answer --help."""
    stub = (
        "import sys\n"
        "from importlib.metadata import EntryPoint\n"
        f"sys.argv = [{name!r}, '--help']\n"
        f"sys.exit(EntryPoint({name!r}, {SCRIPTS[name]!r}, 'console_scripts').load()())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", stub], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage" in out.stdout.lower() or "== Config ==" in out.stdout, out.stdout[-2000:]


@pytest.mark.parametrize(
    ("program", "args", "line"),
    [
        (
            "minillm.run",
            ["data.paht=x"],
            "error: data.paht: no such key in the chosen configs: check its spelling",
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
    ],
    ids=["misspelled-key", "unknown-choice", "run-folder-under-a-file", "evaluate-misspelled-key"],
)
def test_what_hydra_refuses_is_one_line_with_exit_status_2(program, args, line, tmp_path):
    """A misspelled key, an unknown group choice or a run folder that cannot be created are refused by Hydra
    before minillm's own checks run; Hydra would print several lines and exit 1."""
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    argv = [a.format(file=a_file) for a in args]
    out = subprocess.run(
        [sys.executable, "-m", program, *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(line), out.stderr[-2000:]
    assert "objective" not in line or "sft" in lines[0]  # the choices are listed
