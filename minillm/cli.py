"""Shared entry-point plumbing: logging set-up and the one-line error contract."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from pathlib import Path

from minillm.errors import MinillmError, RunInterrupted

# The config tree, as an absolute path: Hydra resolves a relative config_path against the calling file
# only under `python -m`; called from a console script (minillm-run, ...) it would look for a Python
# package named `conf` instead.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def quiet_libraries() -> None:
    """Offline by default and no noise from the libraries' own start-up messages."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_SILENT", "true")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    for name in ("transformers", "httpx", "urllib3", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)


def user_errors(fn):
    """Run ``fn``; a MinillmError becomes ``error: …`` on stderr and exit status 2, with no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MinillmError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)
        except RunInterrupted as stop:
            print(
                f"stopped at step {stop.step}; checkpoint {stop.checkpoint}. Resume with the same command "
                f"plus ckpt_path={stop.checkpoint} (or ckpt_path=last)",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(128 + stop.signal if stop.signal else 0)

    return wrapper


def emit(text: str, out: Path | None) -> None:
    """A command's markdown on stdout and, with ``--out``, in that file too (its folder created)."""
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
