"""Exact resume and safe stops, one module per concern.

A run stopped by a signal (Ctrl-C, SIGTERM from a scheduler, SIGUSR1) finishes the optimizer update
it is in, writes ``checkpoints/last.ckpt`` atomically and exits; ``ckpt_path=last`` (or a path)
continues it as if it had never stopped. What a checkpoint carries beyond Lightning's own state
(optimizer, scheduler, loop progress) is written by the modules' ``on_save_checkpoint`` under
``checkpoint["minillm"]``: every RNG, the data position, the MiniLLM round in progress, the logging step.

- ``checkpoint_io``: atomic checkpoint writes, safe reads;
- ``rng``: every generator's state;
- ``signals``: ``GracefulStop``, the callback that turns a signal into a stop with a checkpoint;
- ``config_diff``: the keys a resume may change, the differences between two configs;
- ``model_files``: models compared by their files' digest, not their path;
- ``saved_config``: the config a checkpoint was trained with, in today's keys;
- ``checks``: a checkpoint's objective, student shapes and config against this run's;
- ``run_folder``: ``Resume``, where a run writes and which checkpoint it goes on from;
- ``csv_log``: the CSV of a run that goes on from another run's checkpoint;
- ``lightning_state``: every edit of Lightning's loop state (its private names live there only).

Import from the module that holds a name. Two names stay importable from here: ``GracefulStop``, which
the saved ``config.yaml`` of earlier runs names as ``minillm.resume.GracefulStop``, and ``upgrade_config``.
"""

from minillm.resume.saved_config import upgrade_config
from minillm.resume.signals import GracefulStop

__all__ = ["GracefulStop", "upgrade_config"]
