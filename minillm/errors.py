"""User-facing errors: one line that says what is wrong and where, never a bare traceback; and building a
config node (``_target_``) with such an error naming the node's key."""

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


def locate_target(node, key: str):
    """The class or function ``node._target_`` names; one line naming ``key`` when it cannot be imported."""
    from hydra._internal.utils import _locate

    target = node.get("_target_") if node is not None else None
    if not target:
        raise MinillmError(f"{key}._target_: name the function or class to build (see conf/)")
    try:
        return _locate(str(target))
    except Exception:
        raise MinillmError(f"{key}._target_={target}: cannot be imported (check its spelling)") from None


def instantiate_node(node, key: str):
    """``hydra.utils.instantiate(node)`` (containers converted to plain ones); a mistyped ``_target_`` or a bad
    argument becomes a MinillmError naming ``key`` (``optim``, ``data.records``, ``task``), on one line."""
    from hydra.utils import instantiate

    locate_target(node, key)
    try:
        return instantiate(node, _convert_="all")
    except Exception as err:
        cause = " ".join(str(err.__cause__ or err).split())
        raise MinillmError(f"{key}: cannot build {node._target_!r} ({cause})") from None


def check_call(fn, key: str, *args, hint: str = "", **kwargs) -> None:
    """``fn`` can be called with ``args`` and ``kwargs`` (a plug-in of the user's: ``task``, ``data.records``;
    the arguments a config node gives ``optim``); else one line naming ``key``, what it is called with, and
    ``hint``."""
    import inspect

    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as err:
        name = getattr(getattr(fn, "func", fn), "__qualname__", fn)
        given = [type(a).__name__ for a in args] + [f"{k}=…" for k in kwargs]
        raise MinillmError(f"{key}: {name} cannot be called with ({', '.join(given)}): {err}{hint}") from None
    except ValueError:  # no signature to read (a builtin): let the call say it
        return
