"""Shared entry-point plumbing: logging set-up, the one-line error contract, and the Hydra apps built on it."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from pathlib import Path

from minillm.errors import MinillmError, RunAborted, RunInterrupted

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
    # Lightning's "Checkpoint directory … / Experiment logs directory … exists and is not empty (previous log
    # files will be deleted)": a fresh run never starts in a folder that holds a run (resume.refuse_to_overwrite),
    # and a resumed run keeps its CSV rows (ResumableCSVLogger), so the warning is only ever wrong here
    warnings.filterwarnings("ignore", message=".*directory .* exists and is not empty.*")
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
        except RunAborted as aborted:
            print(f"aborted by a second Ctrl-C: {aborted}", file=sys.stderr, flush=True)
            sys.exit(130)
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


def schema_error_line(text: str) -> str | None:
    """A typed node's refusal (minillm/schema/) as one line naming the key and where it was set: a key the
    node does not have (with the choices of its group that read it), or a value of the wrong type; None for
    any other error."""
    import re

    from minillm.config import moved_key_error
    from minillm.schema import by_class_name
    from minillm.schema.check import unknown_key_line

    full_key = re.search(r"full_key: (\S+)", text)
    if not full_key or "object_type=" not in text:
        return None
    key = full_key.group(1)
    origin = re.search(r"In '([^']+)'", text)
    where = f"by {origin.group(1).replace('/', '=', 1)}" if origin else "on the command line"
    missing = re.search(r"Key '([^']+)' not in '(\w+)'", text)
    if missing:
        if moved_key_error(key):
            return moved_key_error(key)
        schema = by_class_name(missing.group(2))
        return unknown_key_line(key, schema, where) if schema is not None else None
    # OmegaConf: "Value 'x' of type 'str' could not be converted to Integer", "Value 'x' is not a valid bool"
    wrong = re.search(r"Value '(.*)' (?:of type '\w+' could not be converted to|is not a valid) (\w+)", text)
    if wrong:
        value, kind = wrong.group(1), {"bool": "boolean"}.get(wrong.group(2), wrong.group(2).lower())
        return f"{key}={value}: must be of type {kind} (set {where}; minillm/schema/)"
    if re.search(r"field '[^']+' is not Optional", text):
        return f"{key}=null: {key} cannot be null (set {where}; minillm/schema/)"
    if "is not a ListConfig, list or tuple" in text:
        return f"{key}: must be a list, e.g. {key}=[a,b] (set {where}; minillm/schema/)"
    node = re.search(r"is not a subclass of (\w+)", text)
    if node:
        return f"{key}: a node of keys ({node.group(1)}), not one value: set {key}.KEY=… (set {where}; minillm/schema/)"
    return None


def hydra_error_line(err: BaseException) -> str:
    """What Hydra refused before the task started, as one line: a key no chosen config has, an unknown
    group choice (with the choices), a run folder it cannot create."""
    from hydra.errors import HydraException

    if isinstance(err, OSError) and not isinstance(err, HydraException):  # a missing choice is an IOError too
        return f"hydra.run.dir: cannot create the run folder ({err})"
    if isinstance(err, ValueError) and "Unable to configure handler" in str(err):  # Hydra's log file in it
        cause = err.__cause__ or err.__context__
        return f"hydra.run.dir: output directory cannot be written (its log file: {cause or err})"
    text = str(err)
    cause = str(err.__cause__ or "")
    if "is not in struct" in cause and "Could not override '" in text:
        key = text.split("Could not override '", 1)[1].split("'", 1)[0]
        from minillm.config import moved_key_error
        from minillm.schema import OPEN_GROUPS

        if moved_key_error(key):
            return moved_key_error(key)
        line = (
            f"{key}: no such key in the chosen configs: check its spelling (--cfg job prints every key) "
            "or the group choice that reads it"
        )
        if key.split(".", 1)[0] in OPEN_GROUPS:
            line += f"; an argument of the object named there is added with +{key}=…"
        return line
    schema_line = schema_error_line(text + "\n" + cause)
    if schema_line:
        return schema_line
    lines = []
    for line in (text + "\n" + cause).splitlines():
        if line.strip().startswith("Config search path"):
            break  # Hydra's search path: noise for the user
        if line.strip():
            lines.append(line.strip())
    return " ".join(lines)


def hydra_app(config_name: str):
    """``@hydra.main`` over ``conf/<config_name>.yaml`` with the one-line error contract on both sides of it:
    the task's MinillmError (``user_errors``) and what Hydra refuses before the task starts — a misspelled
    key, an unknown group choice, a run folder it cannot create — which Hydra would print in several lines
    with exit status 1: here ``error: …`` on one line and exit status 2. ``HYDRA_FULL_ERROR=1`` keeps
    Hydra's own report (full traceback)."""
    import hydra

    def decorate(task):
        started = []

        @functools.wraps(task)
        def marked(cfg):
            started.append(True)
            return task(cfg)

        app = hydra.main(config_path=CONF_DIR, config_name=config_name, version_base="1.3")(
            user_errors(marked)
        )

        @functools.wraps(task)
        def main():
            if os.environ.get("HYDRA_FULL_ERROR"):
                return app()
            from hydra.errors import HydraException
            from omegaconf.errors import OmegaConfBaseException

            os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing: the error comes here
            try:
                return app()
            except (HydraException, OmegaConfBaseException, OSError, ValueError) as err:
                if started:
                    raise  # the task's own failure: its traceback, as Hydra would show it
                if isinstance(err, ValueError) and "Unable to configure handler" not in str(err):
                    raise
                print(f"error: {hydra_error_line(err)}", file=sys.stderr, flush=True)
                sys.exit(2)
            finally:
                os.environ.pop("HYDRA_FULL_ERROR", None)

        return main

    return decorate
