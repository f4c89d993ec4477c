"""Models compared by their files, not their paths: a digest of each model folder a checkpoint was
trained with, and the config differences with models compared that way."""

from __future__ import annotations

import hashlib
from pathlib import Path

from minillm.resume.config_diff import config_differences, flatten

# Models named by a path: a checkpoint stores a digest of each one's files (``checkpoint["minillm"]["models"]``)
# and a resume compares the files, not the path, so a moved checkout or another clone resumes.
MODEL_PATH_KEYS = ("student.path", "teacher.path", "tokenizer.path")
_DIGESTS: dict[tuple, str] = {}  # one hash per folder state (names, sizes, mtimes) in this process


def _files_of(root: Path) -> list[Path]:
    """A model folder's files, sorted, without hidden ones (a download's ``.cache``, ``.git``)."""
    if root.is_file():
        return [root]
    return sorted(
        f
        for f in root.rglob("*")
        if f.is_file() and not any(p.startswith(".") for p in f.relative_to(root).parts)
    )


def model_digest(path) -> str | None:
    """SHA-256 over a local model folder's files (each one's path inside the folder and its bytes: weights,
    config, tokenizer), or over one file's bytes; None for a hub id or anything not on disk."""
    root = Path(str(path)).expanduser()
    if not root.exists():
        return None
    files = _files_of(root)
    stamp = (str(root.resolve()), *((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if stamp not in _DIGESTS:
        digest = hashlib.sha256()
        for f in files:
            if root.is_dir():
                digest.update(f.relative_to(root).as_posix().encode() + b"\0")
            with f.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            digest.update(b"\0")
        _DIGESTS[stamp] = digest.hexdigest()
    return _DIGESTS[stamp]


def model_digests(config: dict) -> dict[str, str]:
    """``{key: digest}`` for each of ``MODEL_PATH_KEYS`` that names a local folder or file in ``config``."""
    flat = dict(flatten(config))
    out = {}
    for key in MODEL_PATH_KEYS:
        digest = model_digest(flat[key]) if flat.get(key) else None
        if digest is not None:
            out[key] = digest
    return out


def training_differences(ckpt: dict, saved: dict, current: dict) -> list[tuple[str, object, object]]:
    """``config_differences`` with the models compared by content: a model path the checkpoint stored a
    digest of differs when the files at the current path hash differently (the same path holding other
    weights), and not when only the path moved. Checkpoints without digests compare the paths as text."""
    digests = (ckpt.get("minillm") or {}).get("models") or {}
    old, new = dict(flatten(saved)), dict(flatten(current))
    diffs = []
    for key, digest in digests.items():
        now = model_digest(new[key]) if new.get(key) else None
        if now != digest:
            where = "not a local model" if now is None else f"files {now[:12]}"
            diffs.append((key, f"{old.get(key)} (files {digest[:12]})", f"{new.get(key)} ({where})"))
    return diffs + [d for d in config_differences(saved, current) if d[0] not in digests]
