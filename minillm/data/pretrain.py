"""An offline pre-training corpus for the L_PT term: English reference text shipped with CPython.

``pydoc_data.topics`` holds the Python language reference as plain English prose (about 0.5 MB). The
bundled world's facts can be added, so the pre-training text shares the instruction data's words.
"""

from __future__ import annotations

from pathlib import Path

from minillm.errors import MinillmError


def pydoc_documents(max_chars: int | None = None) -> list[str]:
    """Paragraphs of the Python reference, in a fixed order."""
    from pydoc_data.topics import topics

    docs = []
    for key in sorted(topics):
        for para in topics[key].split("\n\n"):
            para = " ".join(para.split())
            if len(para) > 40:
                docs.append(para)
    return docs if max_chars is None else _cap(docs, max_chars)


def load_pretrain_texts(source: str, *, path: str | None = None, max_chars: int | None = None, seed: int = 0):
    """Texts for the pre-training corpus: ``pydoc``, ``world`` (bundled facts), ``both`` or ``file``."""
    if source == "file":
        if not path or not Path(path).is_file():
            raise MinillmError(f"data.pretrain.path={path!r}: pre-training text file does not exist")
        docs = [p for p in Path(path).read_text(encoding="utf-8").split("\n\n") if p.strip()]
        return docs if max_chars is None else _cap(docs, max_chars)
    docs: list[str] = []
    if source in ("world", "both"):
        from minillm.data.bundled import world_text

        docs.extend(line for line in world_text(seed).split("\n") if line.strip())
    if source in ("pydoc", "both"):
        docs.extend(pydoc_documents())
    if source not in ("pydoc", "world", "both"):
        raise MinillmError(
            f"data.pretrain.source={source!r}; choose one of ['both', 'file', 'pydoc', 'world']"
        )
    return docs if max_chars is None else _cap(docs, max_chars)


def _cap(docs: list[str], max_chars: int) -> list[str]:
    out, total = [], 0
    for d in docs:
        if total >= max_chars:
            break
        out.append(d)
        total += len(d)
    return out
