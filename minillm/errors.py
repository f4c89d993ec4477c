"""User-facing errors: one line that says what is wrong and where, never a bare traceback (building a config
node with such errors: ``minillm.instantiate``)."""

from __future__ import annotations

from pathlib import Path


class MinillmError(Exception):
    """A mistake in the user's config, data or paths.

    The message must name the file and line, or the config key, that is wrong. The entry points
    catch it, print ``error: <message>`` on one line and exit with status 2.
    """


class RunInterrupted(Exception):  # noqa: N818 - it is not an error of the user's
    """Raised after a stop was requested and the checkpoint is safely written."""

    def __init__(self, checkpoint: Path, step: int, signal: int | None = None):
        super().__init__(f"stopped at step {step}; checkpoint {checkpoint}")
        self.checkpoint = checkpoint
        self.step = step
        self.signal = signal  # None: fit.stop_at_step


class RunAborted(BaseException):  # noqa: N818 - a stop, not an error; BaseException: no handler swallows it
    """A second Ctrl-C while a stop was pending: the run ends now, without a checkpoint of this update.
    (A KeyboardInterrupt would be caught by Lightning and turned into a silent exit status 1.)"""
