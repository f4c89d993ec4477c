"""Where a run writes and which checkpoint it goes on from (``ckpt_path``: null, a path, or ``last``):
found, read safely and checked before any model is built; an earlier run's results are never overwritten."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from hydra.experimental.callback import Callback

from minillm.errors import MinillmError
from minillm.resume.checkpoint_io import read_checkpoint
from minillm.resume.checks import check_checkpoint, check_config
from minillm.resume.config_diff import adopt_precision, describe_difference
from minillm.resume.csv_log import continue_csv
from minillm.resume.lightning_state import fix_epoch_end_checkpoint, resume_log_step
from minillm.resume.model_files import training_differences
from minillm.resume.saved_config import checkpoint_config

log = logging.getLogger(__name__)


def resolve_ckpt_path(
    value, output_dir: Path, current: dict | None = None, allow_change: bool = False
) -> Path | None:
    """``ckpt_path``: null, a file, or ``last``.

    ``last`` is this run's own ``checkpoints/last.ckpt`` when its folder has one; otherwise the newest
    ``*/checkpoints/last.ckpt`` beside it whose config (``current``, resolved) differs only in run-bound
    keys (with ``allow_change``: the newest, whatever its config).
    """
    if value in (None, ""):
        return None
    if str(value) == "last":
        own = Path(output_dir) / "checkpoints" / "last.ckpt"
        if own.is_file():
            log.info("ckpt_path=last: resuming this run's own checkpoint %s", own)
            return own
        parent = Path(output_dir).parent
        found = sorted(
            (p for p in parent.glob("*/checkpoints/last.ckpt") if p.parents[1] != Path(output_dir)),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        if not found:
            raise MinillmError(
                f"ckpt_path=last: no checkpoints/last.ckpt in {output_dir} nor in a run beside it under {parent}"
            )
        refused = []
        for path in found:
            try:
                ckpt = read_checkpoint(path)
                saved = checkpoint_config(ckpt, path)
            except MinillmError as err:
                refused.append((path, f"not readable ({err})"))
                continue
            diffs = None if saved is None or current is None else training_differences(ckpt, saved, current)
            if allow_change or diffs == []:
                log.info(
                    "ckpt_path=last: no checkpoint in %s; resuming the newest run beside it with the same "
                    "config, %s (that run's folder is left as it is; this run writes into %s)",
                    output_dir,
                    path,
                    output_dir,
                )
                return path
            why = "written without its config" if saved is None else describe_difference(diffs[0])
            refused.append((path, why))
        path, why = refused[0]
        raise MinillmError(
            f"ckpt_path=last: no checkpoint in {output_dir}, and none of the {len(found)} runs beside it "
            f"has this run's config (the newest, {path}, was {why}); pass ckpt_path=PATH to choose one, "
            f"with resume.allow_config_change=true to resume it anyway"
        )
    path = Path(str(value))
    if not path.is_file():
        raise MinillmError(f"ckpt_path={value}: checkpoint file does not exist")
    return path


def redirect_run_dir(cfg, run_dir: Path) -> None:
    """Point ``output_dir`` and every callback folder under it (the checkpoints) at ``run_dir``."""
    from omegaconf import open_dict

    old = Path(cfg.output_dir)
    with open_dict(cfg):
        cfg.output_dir = str(run_dir)
        for node in (cfg.get("callbacks") or {}).values():
            folder = node.get("dirpath")
            if folder and Path(folder).is_relative_to(old):
                node.dirpath = str(run_dir / Path(folder).relative_to(old))


def earlier_work(run_dir: Path) -> list[str]:
    """What an earlier run left in ``run_dir`` that a fresh run would overwrite."""
    found = [name for name in ("results.json", "csv/metrics.csv", "best_model") if (run_dir / name).exists()]
    if any((run_dir / "checkpoints").glob("*.ckpt")):
        found.append("checkpoints/")
    return found


def refuse_to_overwrite(run_dir: Path) -> None:
    """A fresh run (no checkpoint to go on from) never overwrites an earlier run's results in its folder."""
    found = earlier_work(run_dir)
    if found:
        raise MinillmError(
            f"hydra.run.dir={run_dir} already holds a run ({', '.join(found)}) that a fresh run would overwrite: "
            "go on from its checkpoint with ckpt_path=last, or choose another folder (nothing was changed)"
        )


# What a resumed run's folder held before Hydra wrote into it (RefuseOverwriteEarly), put back if the resume is
# refused: {path: bytes or None (absent)} of .hydra/'s files, and run.log's length
_BEFORE_HYDRA: dict[Path, bytes | None] = {}
_LOG_BEFORE: tuple[Path, int | None] | None = None


class RefuseOverwriteEarly(Callback):
    """A Hydra callback (``hydra.callbacks.refuse_overwrite`` in conf/config.yaml), run before Hydra writes its
    ``.hydra/`` files and its log into the run folder (they would relabel an earlier run found there):

    - ``minillm.run`` with no ``ckpt_path`` into a folder that holds an earlier run: refused here (``Resume.plan``
      refuses it too, but after those writes);
    - ``minillm.run`` with a ``ckpt_path`` (a resume, which ``Resume.plan`` may still refuse): the folder's
      ``.hydra/`` files and log are kept, and put back by :func:`undo_hydra_writes` if it does;
    - ``minillm.evaluate`` / ``minillm.diagnose`` (their configs build on this one) into a folder that holds a
      run or an evaluation: refused.

    Hydra turns a callback's exception into a warning, so a refusal exits here: one line, status 2. Multirun jobs
    are checked by ``Resume.plan`` alone."""

    def on_run_start(self, config, **kwargs) -> None:
        import sys

        from hydra.core.hydra_config import HydraConfig

        # what run_job does first: ${hydra:...} in the folder's name (${hydra:runtime.cwd}/...) resolves from it
        HydraConfig.instance().set_config(config)
        try:
            run_dir = Path(str(config.hydra.run.dir))
        except Exception as err:  # a folder that cannot be resolved: Hydra reports it next, in one line
            log.debug("hydra.run.dir not resolved before the run (%s)", err)
            return
        app = next((name for name in ("evaluate", "diagnose") if name in config), None)
        try:
            if app is not None:
                found = earlier_work(run_dir)
                if found:
                    raise MinillmError(
                        f"hydra.run.dir={run_dir} already holds a run or an evaluation ({', '.join(found)}) that "
                        f"minillm.{app} would overwrite: choose another folder (nothing was changed)"
                    )
            elif config.get("ckpt_path") is None:
                refuse_to_overwrite(run_dir)
            else:
                keep_hydra_files(run_dir)
        except MinillmError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)


def keep_hydra_files(run_dir: Path) -> None:
    """Remember ``run_dir``'s ``.hydra/`` files and the length of its ``run.log`` (before Hydra writes them)."""
    global _LOG_BEFORE
    _BEFORE_HYDRA.clear()
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        path = run_dir / ".hydra" / name
        _BEFORE_HYDRA[path] = path.read_bytes() if path.is_file() else None
    log_file = run_dir / "run.log"
    _LOG_BEFORE = (log_file, log_file.stat().st_size if log_file.is_file() else None)


def undo_hydra_writes() -> None:
    """A refused resume: the folder's ``.hydra/`` files and ``run.log`` as they were before this command (kept by
    :func:`keep_hydra_files`; nothing to do where nothing was kept)."""
    global _LOG_BEFORE
    for path, content in _BEFORE_HYDRA.items():
        if content is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(content)
    if _BEFORE_HYDRA:
        with contextlib.suppress(OSError):  # a .hydra/ this command made, left empty
            next(iter(_BEFORE_HYDRA)).parent.rmdir()
    if _LOG_BEFORE is not None:
        log_file, size = _LOG_BEFORE
        if size is None:
            log_file.unlink(missing_ok=True)
        elif log_file.is_file():
            with log_file.open("r+b") as handle:
                handle.truncate(size)
    _BEFORE_HYDRA.clear()
    _LOG_BEFORE = None


class Resume:
    """Where a run writes and which checkpoint it goes on from (``ckpt_path``: null, a path, or ``last``).

    :meth:`plan` runs before any model is built: it finds the checkpoint, reads it safely (a file holding
    anything but our types is refused) and checks its objective and config. :meth:`attach` runs once the
    module exists and returns the logging step the loggers go on from.
    """

    def __init__(self, run_dir: Path, ckpt_path: Path | None, checkpoint: dict | None):
        self.run_dir, self.ckpt_path, self.checkpoint = run_dir, ckpt_path, checkpoint

    @classmethod
    def plan(cls, cfg) -> Resume:
        from omegaconf import OmegaConf

        run_dir = Path(cfg.output_dir)
        config = OmegaConf.to_container(cfg, resolve=True)
        allow_change = bool((cfg.get("resume") or {}).get("allow_config_change", False))
        ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir, config, allow_change)
        explicit = ckpt_path is not None and str(cfg.get("ckpt_path")) != "last"
        if explicit and ckpt_path.parent.name == "checkpoints" and ckpt_path.name == "last.ckpt":
            # the user pointed at that run's checkpoint: the run goes on writing into its own directory
            run_dir = ckpt_path.parent.parent
            log.info("resuming from %s; writing into %s", ckpt_path, run_dir)
            redirect_run_dir(cfg, run_dir)
        if ckpt_path is None:
            refuse_to_overwrite(run_dir)
        checkpoint = read_checkpoint(ckpt_path) if ckpt_path is not None else None
        if checkpoint is not None:
            check_checkpoint(checkpoint, ckpt_path, str(cfg.objective.name))
            check_config(checkpoint, ckpt_path, config, allow_change)
            adopt_precision(cfg, checkpoint_config(checkpoint, ckpt_path))
        run_dir.mkdir(parents=True, exist_ok=True)
        return cls(run_dir, ckpt_path, checkpoint)

    def attach(self, cfg, module, dm) -> int | None:
        """Check the checkpoint against the module; the logging step to go on from (None: a fresh run)."""
        if self.checkpoint is None:
            return None
        ckpt, self.checkpoint = self.checkpoint, None  # Lightning reads the file again in fit
        check_checkpoint(ckpt, self.ckpt_path, str(cfg.objective.name), module)
        data = (ckpt.get("minillm") or {}).get("data")
        if data is not None:  # as the module does when Lightning loads it (the logging step depends on it)
            fix_epoch_end_checkpoint(ckpt, dm.train_batches_in_epoch(int(data["epoch"])))
        if self.ckpt_path.parent.name == "checkpoints" and self.ckpt_path.parents[1] != self.run_dir:
            continue_csv(self.ckpt_path.parents[1], self.run_dir)
        return resume_log_step(ckpt)
