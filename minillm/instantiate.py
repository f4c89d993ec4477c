"""Building what a config node names (``_target_``), with a one-line ``MinillmError`` naming the node's key
when the target cannot be imported, built, or called as the project calls it (a user's ``task``,
``data.records``, ``optim``, ``scheduler``, ``callbacks.*``)."""

from __future__ import annotations

from minillm.errors import MinillmError


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
