"""Students made from the teacher by keeping every k-th decoder layer (DistilBERT-style initialisation).

DistilBERT (Sanh et al., 2019) initialised its student from the teacher by taking one layer out of two.
Here ``keep_every=k`` keeps layers 0, k, 2k, … of the source and copies everything else as it is: the
embeddings, the kept layers (renumbered 0, 1, 2, …), the final norm and the LM head. The student shares
the teacher's tokenizer and vocabulary, so nothing else changes. Pruned folders are written once into
``cache_dir/models/`` beside the source's own conversion and reused.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
from pathlib import Path

from minillm.errors import MinillmError

log = logging.getLogger(__name__)
_LAYER_KEY = re.compile(r"^(.*\.layers\.)(\d+)(\..+)$")


def kept_layers(num_layers: int, every: int) -> list[int]:
    """Layers 0, every, 2·every, … below ``num_layers``."""
    return list(range(0, num_layers, every))


def prune_layers(model, every: int, key: str = "keep_every"):
    """A new model of the same class with layers 0, every, 2·every, … of ``model`` and all its other weights.

    Raises MinillmError (naming ``key``) when ``every`` is not an integer ≥ 2 below the layer count, or the
    model does not number its decoder layers as ``….layers.<i>.…`` (Llama, Qwen, Mistral, GPT-NeoX, …).
    """
    from transformers import AutoModelForCausalLM

    n = model.config.num_hidden_layers
    if isinstance(every, bool) or not isinstance(every, int) or not 2 <= every <= n:
        raise MinillmError(f"{key}={every!r}: must be an integer from 2 to the source's {n} layers")
    kept = kept_layers(n, every)
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(kept)
    if isinstance(getattr(config, "layer_types", None), list):  # per-layer attention kinds (Qwen2, Gemma)
        config.layer_types = [config.layer_types[i] for i in kept]
    renumber = {old: new for new, old in enumerate(kept)}
    weights, seen_layers = {}, set()
    for name, tensor in model.state_dict().items():
        match = _LAYER_KEY.match(name)
        if match is None:
            weights[name] = tensor
            continue
        seen_layers.add(int(match[2]))
        if int(match[2]) in renumber:
            weights[f"{match[1]}{renumber[int(match[2])]}{match[3]}"] = tensor
    if seen_layers != set(range(n)):
        raise MinillmError(
            f"{key}={every}: cannot find the {n} decoder layers of this {model.config.model_type} model by name"
        )
    student = AutoModelForCausalLM.from_config(config, dtype=next(model.parameters()).dtype)
    student.load_state_dict(weights, strict=True)
    student.generation_config = copy.deepcopy(model.generation_config)
    return student


def pruned_folder(source: str | Path, every: int, cache_dir: str | Path, key: str) -> Path:
    """The folder of ``source``'s every-``every``-th-layer student, pruned and saved on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from minillm.models.gguf import write_folder_atomically

    source = Path(source).resolve()
    digest = hashlib.sha1(str(source).encode()).hexdigest()[:8]
    folder = Path(cache_dir) / "models" / f"{source.name}-every{every}-{digest}"
    if (folder / "config.json").is_file():
        return folder
    if not (source / "config.json").is_file():
        raise MinillmError(f"{key}={every}: the source {source} is not a model folder")

    def write(tmp: Path) -> None:
        teacher = AutoModelForCausalLM.from_pretrained(source)
        student = prune_layers(teacher, every, key)
        student.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
        log.info(
            "pruned %s to layers %s: %.1fM parameters -> %s",
            source.name,
            kept_layers(teacher.config.num_hidden_layers, every),
            sum(p.numel() for p in student.parameters()) / 1e6,
            folder,
        )

    write_folder_atomically(folder, write)
    return folder
