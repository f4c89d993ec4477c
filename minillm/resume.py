"""Exact resume and safe stops: atomic checkpoints, RNG state, graceful signals, checkpoint checks.

A run stopped by a signal (Ctrl-C, SIGTERM from a scheduler, SIGUSR1) finishes the optimizer update
it is in, writes ``checkpoints/last.ckpt`` atomically and exits; ``ckpt_path=last`` (or a path)
continues it as if it had never stopped. What a checkpoint carries beyond Lightning's own state
(optimizer, scheduler, loop progress) is written by the modules' ``on_save_checkpoint`` under
``checkpoint["minillm"]``: every RNG, the data position, the MiniLLM round in progress, the logging step.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import tempfile
from pathlib import Path

import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from minillm.errors import MinillmError, RunInterrupted  # noqa: F401 - re-exported
from minillm.safe_load import load_checkpoint

log = logging.getLogger(__name__)
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)) if s)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the same folder, fsync, then rename over the target.

    A crash while saving leaves the previous checkpoint (and no half-written file) behind.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None) -> dict:
        """Lightning's restore (``trainer.fit(ckpt_path=...)``) reads through here: always weights_only,
        with our allowlist, whatever ``weights_only`` Lightning passes on (a pickle can run code)."""
        return load_checkpoint(path, "ckpt_path", map_location=map_location)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class GracefulStop(Callback):
    """Turns SIGINT / SIGTERM / SIGUSR1 into "stop after this update, with a checkpoint".

    The modules poll ``requested`` between optimizer updates. A second Ctrl-C aborts at once.
    """

    def __init__(self, stop_at_step: int | None = None) -> None:
        self.requested: int | None = None
        self.stop_at_step = stop_at_step  # trainer.stop_at_step: pause there as if signalled
        self._previous: dict[int, object] = {}

    def should_stop(self, global_step: int) -> bool:
        return self.requested is not None or (
            self.stop_at_step is not None and global_step >= self.stop_at_step
        )

    def _handle(self, signum, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = signum
        log.warning(
            "received %s: stopping after the current update and saving a checkpoint "
            "(Ctrl-C again aborts without one)",
            signal.Signals(signum).name,
        )

    def on_train_start(self, trainer, pl_module) -> None:
        log.info("training (Ctrl-C or SIGTERM stops after the current update, with a checkpoint)")
        for sig in STOP_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave the handlers alone
                return

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()


def stop_callback(trainer) -> GracefulStop | None:
    return next((c for c in trainer.callbacks if isinstance(c, GracefulStop)), None)


def resolve_ckpt_path(value, output_dir: Path) -> Path | None:
    """``ckpt_path``: null, a file, or ``last`` (newest ``*/checkpoints/last.ckpt`` beside this run)."""
    if value in (None, ""):
        return None
    if str(value) == "last":
        parent = Path(output_dir).parent
        found = sorted(
            (p for p in parent.glob("*/checkpoints/last.ckpt") if p.parents[1] != Path(output_dir)),
            key=lambda p: p.stat().st_mtime,
        )
        if not found:
            raise MinillmError(f"ckpt_path=last: no */checkpoints/last.ckpt under {parent}")
        return found[-1]
    path = Path(str(value))
    if not path.is_file():
        raise MinillmError(f"ckpt_path={value}: checkpoint file does not exist")
    return path


def read_checkpoint(path: Path) -> dict:
    # memory-mapped: only the metadata and shapes are read here; Lightning loads the file for real.
    # Without running code from it: a file holding anything but our checkpoint's types is refused.
    return load_checkpoint(path, "ckpt_path", mmap=True)


def check_checkpoint(ckpt: dict, path: Path, objective: str, module) -> None:
    """The checkpoint must come from the same objective and a student of the same shapes."""
    meta = ckpt.get("minillm")
    if meta is None:
        raise MinillmError(f"ckpt_path={path}: not a minillm training checkpoint (no 'minillm' state)")
    if meta.get("objective") != objective:
        raise MinillmError(
            f"ckpt_path={path}: checkpoint is from objective={meta.get('objective')}, "
            f"this run is objective={objective}"
        )
    have = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    saved = {k: tuple(v.shape) for k, v in ckpt.get("state_dict", {}).items()}
    if have != saved:
        diff = sorted(set(have.items()) ^ set(saved.items()))
        raise MinillmError(
            f"ckpt_path={path}: checkpoint holds a different student model (first mismatch: {diff[0][0]})"
        )
