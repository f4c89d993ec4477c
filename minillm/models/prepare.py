"""The model presets' preparation step: GGUF conversion and layer pruning, once, into the cache.

A preset may name its model by ``gguf`` (a packaged GGUF or a ``.gguf`` file, ``minillm.models.gguf``) and,
for a student, ``keep_every`` (every k-th layer of that model, ``minillm.models.pruning``). Before anything
is loaded, ``prepare_models`` makes those folders under ``cache_dir/models/`` (first use only) and sets the
node's ``path`` to them, so that everything downstream (tokenizer, loading, the results' record of the
teacher) sees an ordinary model folder. ``tokenizer.gguf`` does the same for the tokenizer alone (a student
built from ``arch`` with the GGUF model's vocabulary and no teacher to take it from).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import open_dict

from minillm.errors import MinillmError


def prepared_path(spec, key: str, cache_dir: str | Path) -> str | None:
    """The folder that ``spec``'s ``gguf`` / ``keep_every`` stand for (made on first use), or None."""
    from minillm.models.gguf import converted_folder
    from minillm.models.pruning import pruned_folder

    source, every = spec.get("gguf"), spec.get("keep_every")
    if not source:
        if every:
            raise MinillmError(f"{key}.keep_every={every}: set {key}.gguf, the model whose layers it keeps")
        return None
    if spec.get("arch"):
        raise MinillmError(
            f"{key}.gguf={source} and {key}.arch are both set: a model is either converted or built"
        )
    folder = converted_folder(source, cache_dir, f"{key}.gguf")
    if every:
        folder = pruned_folder(folder, every, cache_dir, f"{key}.keep_every")
    return str(folder)


def prepare_models(cfg) -> None:
    """Set ``teacher.path``, ``student.path`` and ``tokenizer.path`` from their ``gguf`` / ``keep_every``
    keys (converting and pruning into ``cache_dir`` on first use). Calling it again changes nothing."""
    for key in ("teacher", "student", "tokenizer"):
        spec = cfg.get(key)
        if spec is None:
            continue
        folder = prepared_path(spec, key, cfg.cache_dir)
        if folder is None:
            continue
        path = spec.get("path")
        if path and Path(str(path)).resolve() != Path(folder).resolve():
            raise MinillmError(
                f"{key}.path={path} and {key}.gguf={spec.gguf} are both set: the path would be ignored; "
                f"drop one of them"
            )
        with open_dict(spec):
            spec.path = folder
