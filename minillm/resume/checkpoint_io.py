"""Checkpoint files: written atomically (a crash while saving leaves the previous one), read without
running code from them (our allowlist of types)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from minillm.safe_load import load_checkpoint


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


def read_checkpoint(path: Path) -> dict:
    # memory-mapped: only the metadata and shapes are read here; Lightning loads the file for real.
    # Without running code from it: a file holding anything but our checkpoint's types is refused.
    return load_checkpoint(path, "ckpt_path", mmap=True)
