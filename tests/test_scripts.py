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
