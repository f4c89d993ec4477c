"""Reading ``.ckpt`` files without running code from them.

A ``.ckpt`` is a pickle, and a pickle can call any function while it loads (``os.system``, say). Every
checkpoint the project reads — ``ckpt_path=``, ``evaluate.path=``, the best checkpoint a run selects,
and Lightning's own restore through :class:`minillm.resume.checkpoint_io.AtomicCheckpointIO` — goes through
:func:`load_checkpoint`: ``torch.load(weights_only=True)``, which builds only tensors, numbers, strings
and plain containers, plus exactly the extra types our own checkpoints hold. Anything else is refused
with one line naming the file and the type, before it is built.
"""

from __future__ import annotations

import contextlib
import pickle
import re
from pathlib import Path

import numpy as np
import torch
from torch.serialization import add_safe_globals, clear_safe_globals, get_safe_globals

from minillm.errors import MinillmError

_reconstruct = np._core.multiarray._reconstruct

# What our checkpoints hold beyond what weights_only allows by default: numpy's RNG state
# (np.random.get_state(): a tuple with an MT19937 key, a uint32 ndarray). The rest — python's random
# state tuple, torch/CUDA generator states (uint8 tensors), Lightning's loop, callback, optimizer and
# scheduler states, our ``minillm`` dict — is tensors and plain containers, allowed as they are.
# Only the uint32 dtype may be built, so no object array (which could hold anything) can be.
CHECKPOINT_GLOBALS = [
    (_reconstruct, "numpy._core.multiarray._reconstruct"),
    (_reconstruct, "numpy.core.multiarray._reconstruct"),  # the same function, as numpy 1.x pickles name it
    np.ndarray,
    np.dtype,
    np.dtypes.UInt32DType,
]

# The offending global or type in torch's (multi-line) weights_only error, in the forms it words it.
_OFFENDER = [
    re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module)"),
    re.compile(r"unrecognized function (\S+)"),
    re.compile(r"but got <class '([^']+)'>"),
]


@contextlib.contextmanager
def _allowlist(exclusive: bool):
    """CHECKPOINT_GLOBALS on torch's process-wide weights_only allowlist for the block (``exclusive``: and
    nothing else that other libraries may have added), then the allowlist as it was."""
    before = get_safe_globals()
    if exclusive:
        clear_safe_globals()
    add_safe_globals(CHECKPOINT_GLOBALS)
    try:
        yield
    finally:
        clear_safe_globals()
        add_safe_globals(before)


def _only_our_globals():
    """Allow exactly CHECKPOINT_GLOBALS for one of our loads."""
    return _allowlist(exclusive=True)


def checkpoint_types_allowed():
    """CHECKPOINT_GLOBALS added to the allowlist while Lightning loads a checkpoint by a path of its own (a
    strategy's ``load_checkpoint`` that does not go through the checkpoint IO, as ``ModelParallelStrategy``'s
    does). The file was already read once through :func:`load_checkpoint` (``Resume.plan``), so it holds
    nothing else."""
    return _allowlist(exclusive=False)


def offending_type(message: str) -> str | None:
    """The name of the global or type torch's weights_only unpickler refused, if its message names one."""
    for pattern in _OFFENDER:
        found = pattern.search(message)
        if found:
            return found.group(1)
    return None


def load_checkpoint(path, key: str | None = None, *, map_location="cpu", mmap: bool = False):
    """``torch.load`` a checkpoint with weights_only=True and our allowlist.

    ``key`` names the setting the path came from (``ckpt_path``, ``evaluate.path``) for the message.
    Raises MinillmError (one line) for a file that holds anything else, or that cannot be read.
    """
    where = f"{key}={path}" if key else str(path)
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise MinillmError(f"{where}: not a readable checkpoint (the file is empty)")
    if Path(path).is_file() and not _torch_save_format(Path(path)):
        # torch's own error for such a file ("mmap can only be used with files saved with
        # _use_new_zipfile_serialization=True, please torch.save your checkpoint with this option") points the wrong
        # way, and a legacy pickle gives a bare KeyError
        raise MinillmError(f"{where}: not a readable checkpoint (not a file written by torch.save)")
    try:
        with _only_our_globals():
            return torch.load(Path(path), map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        name = offending_type(str(err))
        if name is None:
            raise MinillmError(f"{where}: not a readable checkpoint ({_first_line(err)})") from None
        raise MinillmError(
            f"{where}: refused, the file holds {name}, which minillm checkpoints never do "
            "(only tensors, numbers, strings, containers and RNG states are loaded: a pickled object "
            "can run code when loaded)"
        ) from None
    except Exception as err:  # noqa: BLE001 - a truncated, foreign or missing file is the user's input
        raise MinillmError(f"{where}: not a readable checkpoint ({_first_line(err)})") from None


def _torch_save_format(path: Path) -> bool:
    """Whether ``path`` starts as torch.save's zip archive does, or as its legacy pickle (protocol 2+)."""
    with path.open("rb") as handle:
        head = handle.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _first_line(err: Exception) -> str:
    """The cause in one line (for an UnpicklingError, torch's own reason, not its advice around it)."""
    message = str(err)
    inner = re.search(r"WeightsUnpickler error:\s*([^\n]+)", message)
    text = [inner.group(1)] if inner else message.strip().splitlines()
    return f"{type(err).__name__}: {text[0].strip()}" if text else type(err).__name__
