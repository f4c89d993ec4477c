"""Seconds per optimizer step, measured around the training batches (``timing.json`` in the run folder).

The cost of a method's update (rollouts, teacher passes, student samples included) without validation,
checkpointing or evaluation. Written at the end of training; nothing is logged to the metrics, so
runs that differ only in speed keep identical metric files (exact resume compares them).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class StepTimer(Callback):
    """Sums the wall-clock time of the training batches (``on_train_batch_start`` → ``on_train_batch_end``:
    data to device, forward, backward, optimizer step; for MiniLLM a whole round) and counts the optimizer
    steps they took; writes ``timing.json`` with ``seconds_per_step`` into the trainer's root folder.
    Its sums are in the checkpoint: a resumed run adds to the totals of the run it resumed."""

    def __init__(self, filename: str = "timing.json"):
        self.filename = filename
        self.seconds = 0.0
        self.batches = 0
        self.steps = 0
        self._started: float | None = None
        self._step_at_start = 0

    def state_dict(self) -> dict:
        return {"seconds": self.seconds, "batches": self.batches, "steps": self.steps}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seconds = float(state_dict.get("seconds", 0.0))
        self.batches = int(state_dict.get("batches", 0))
        self.steps = int(state_dict.get("steps", 0))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._started = time.perf_counter()
        self._step_at_start = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._started is None:
            return
        self.seconds += time.perf_counter() - self._started
        self.batches += 1
        self.steps += trainer.global_step - self._step_at_start
        self._started = None

    def on_train_end(self, trainer, pl_module):
        record = {
            "train_batch_seconds": round(self.seconds, 3),
            "batches": self.batches,
            "optimizer_steps": self.steps,
            "seconds_per_step": round(self.seconds / self.steps, 5) if self.steps else None,
        }
        path = Path(trainer.default_root_dir) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")
