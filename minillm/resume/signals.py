"""Safe stops: SIGINT / SIGTERM / SIGUSR1 (or ``fit.stop_at_step``) become "stop after this update, with a
checkpoint"; a second Ctrl-C aborts at once."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from minillm.errors import RunAborted

log = logging.getLogger(__name__)
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)) if s)


class GracefulStop(Callback):
    """Turns SIGINT / SIGTERM / SIGUSR1 into "stop after this update, with a checkpoint".

    The modules poll ``requested`` between optimizer updates. A second Ctrl-C aborts at once.
    """

    def __init__(self, stop_at_step: int | None = None) -> None:
        self.requested: int | None = None
        self.stop_at_step = stop_at_step  # fit.stop_at_step: pause there as if signalled
        self._previous: dict[int, object] = {}

    def should_stop(self, global_step: int) -> bool:
        return self.requested is not None or (
            self.stop_at_step is not None and global_step >= self.stop_at_step
        )

    def _handle(self, signum, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise RunAborted(self._last_checkpoint_hint())
        self.requested = signum
        log.warning(
            "received %s: stopping after the current update and saving a checkpoint "
            "(Ctrl-C again aborts without one)",
            signal.Signals(signum).name,
        )

    def _last_checkpoint_hint(self) -> str:
        folder = getattr(getattr(self, "_fit_trainer", None), "checkpoint_callback", None)
        last = Path(folder.dirpath) / "last.ckpt" if folder is not None and folder.dirpath else None
        if last is not None and last.is_file():
            return f"the last checkpoint written is kept: {last} (ckpt_path=last goes on from it)"
        return "no checkpoint of this run was written yet"

    def on_train_start(self, trainer, pl_module) -> None:
        self._fit_trainer = trainer
        log.info("training (Ctrl-C or SIGTERM stops after the current update, with a checkpoint)")
        if self.stop_at_step is not None and 0 < self.stop_at_step <= trainer.global_step:
            # resumed from the pause fit.stop_at_step made: the same command plus ckpt_path goes on
            log.info(
                "fit.stop_at_step=%d: resumed at step %d, at or past it: not stopping there again",
                self.stop_at_step,
                trainer.global_step,
            )
            self.stop_at_step = None
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
