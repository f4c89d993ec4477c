"""Which model an evaluation scores, loaded: ``evaluate.path`` (a run directory, its ``best_model/``, a
Lightning checkpoint of a full or a LoRA run, a Hugging Face folder or hub id) or the config's teacher or
student init; and the config's teacher for the metrics that compare with it. ``python -m minillm.diagnose``
loads through the same functions (its node is ``diagnose``)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf

from minillm.errors import MinillmError
from minillm.models.loading import check_same_vocab, freeze, load_model, load_tokenizer
from minillm.models.tokenizers import resolve_tokenizer
from minillm.safe_load import load_checkpoint

log = logging.getLogger(__name__)


def _is_model_folder(folder: Path) -> bool:
    """A Hugging Face model folder, or a peft adapter folder (a LoRA run's best_model/ exported with
    student.lora.export=adapters; transformers loads its base from adapter_config.json)."""
    return (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()


def _run_dir_of(path: Path) -> Path | None:
    """The minillm.run directory a path belongs to (itself, or the parent of best_model/, checkpoints/)."""
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / "results.json").is_file() or (candidate / "checkpoints").is_dir():
            return candidate
    return None


def _warn_if_other_data(cfg, run_dir: Path | None) -> None:
    saved = run_dir / "config.yaml" if run_dir else None
    if saved is None or not saved.is_file():
        return
    from minillm.resume.saved_config import upgrade_config

    run_data = upgrade_config(OmegaConf.to_container(OmegaConf.load(saved), resolve=True)).get("data")
    if run_data is not None and run_data != OmegaConf.to_container(cfg.data, resolve=True):
        log.warning(
            "the data config differs from the one %s was trained with: pass the same data=… overrides",
            run_dir,
        )


def _load_ckpt(cfg, path: Path, records, node: str = "evaluate"):
    """A Lightning checkpoint of a run: its ``student.*`` weights in the run's (or the config's) student."""
    ckpt = load_checkpoint(path, f"{node}.path")  # refuses a file that holds anything but our types
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    weights = {k[len("student.") :]: v for k, v in (state or {}).items() if k.startswith("student.")}
    if not weights:
        raise MinillmError(f"{node}.path={path}: checkpoint has no 'student.*' weights in its state_dict")
    run_dir = _run_dir_of(path)
    exported = run_dir / "best_model" if run_dir else None
    saved = ((ckpt.get("minillm") or {}).get("config") or {}) if isinstance(ckpt, dict) else {}
    if ((saved.get("student") or {}).get("lora") or {}).get("r") is not None:
        found = exported is not None and _has_tokenizer(exported)
        tokenizer = load_tokenizer(str(exported)) if found else resolve_tokenizer(cfg, records)
        return _lora_checkpoint_model(saved, weights, tokenizer, node, path), tokenizer
    if exported is not None and (exported / "config.json").is_file():
        model = load_model(OmegaConf.create({"path": str(exported)}), key=node)
        tokenizer = (
            load_tokenizer(str(exported)) if _has_tokenizer(exported) else resolve_tokenizer(cfg, records)
        )
        where = str(exported)
    else:
        tokenizer = resolve_tokenizer(cfg, records)
        model = _config_model(cfg, "student", tokenizer)
        where = "the config's student"
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise MinillmError(
            f"{node}.path={path}: its weights do not fit the model of {where} ({first})"
        ) from None
    return model, tokenizer


def _lora_checkpoint_model(saved: dict, weights: dict, tokenizer, node: str, path: Path):
    """A LoRA run's checkpoint holds only its adapters: the run's own student (its config, saved in the
    checkpoint) wrapped as it was, with the adapters loaded, merged into a plain model."""
    from minillm.models.lora import apply_lora

    spec = OmegaConf.create(saved["student"])
    base = load_model(
        spec, key=node, vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, seed=saved["seed"]
    )
    model = apply_lora(base, spec.lora, seed=saved["seed"])
    state = model.state_dict()
    wrong = sorted({k for k in state if ".lora_" in k} ^ weights.keys())
    if wrong:
        raise MinillmError(
            f"{node}.path={path}: its LoRA adapters do not fit the run's student (first mismatch: {wrong[0]})"
        )
    model.load_state_dict({**state, **weights})
    return model.merge_and_unload()


def _config_model(cfg, key: str, tokenizer):
    seed = cfg.seed + (1 if key == "teacher" else 0)  # as minillm.run builds them
    return load_model(
        cfg[key], key=key, vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, seed=seed
    )


def load_evaluated_model(cfg, records, node: str = "evaluate"):
    """(model, tokenizer, source): ``<node>.path`` when set, else the config's teacher or student.

    ``node`` is the config node that holds ``model`` and ``path`` (``evaluate``; ``diagnose`` for
    ``python -m minillm.diagnose``); errors name its keys.
    """
    e = cfg[node]
    if not e.get("path"):
        if e.model == "student":
            raise MinillmError(
                f"{node}.path: {node}.model=student needs the trained student (a run directory, its "
                f"best_model/ folder, a checkpoints/*.ckpt or a hub id); {node}.model=init evaluates the "
                "config's student as it is"
            )
        key = "teacher" if e.model == "teacher" else "student"
        tokenizer = resolve_tokenizer(cfg, records)
        return _config_model(cfg, key, tokenizer), tokenizer, str(cfg[key].get("path") or f"{key}.arch")
    raw = str(e.path)
    path = Path(raw).expanduser()
    _warn_if_other_data(cfg, _run_dir_of(path) if path.exists() else None)
    if path.is_file():
        if path.suffix != ".ckpt":
            raise MinillmError(f"{node}.path={raw}: a file that is not a Lightning .ckpt")
        model, tokenizer = _load_ckpt(cfg, path, records, node)
        return model, tokenizer, str(path)
    if path.is_dir() and not _is_model_folder(path):
        if _is_model_folder(path / "best_model"):
            path = path / "best_model"
        elif (path / "checkpoints" / "best.ckpt").is_file():
            model, tokenizer = _load_ckpt(cfg, path / "checkpoints" / "best.ckpt", records, node)
            return model, tokenizer, str(path / "checkpoints" / "best.ckpt")
        else:
            raise MinillmError(
                f"{node}.path={raw}: folder has no config.json, best_model/ or checkpoints/best.ckpt"
            )
    model = load_model(OmegaConf.create({"path": str(path)}), key=node)
    local = Path(path)
    if local.is_dir() and _has_tokenizer(local):
        tokenizer = load_tokenizer(str(local), f"{node}.path")
    elif not local.exists() and not cfg.tokenizer.get("path"):
        tokenizer = load_tokenizer(str(path), f"{node}.path")  # a hub id ships its tokenizer
    else:
        tokenizer = resolve_tokenizer(cfg, records)
    return model, tokenizer, str(path)


def load_teacher(cfg, tokenizer, model):
    """The config's teacher for exposure bias, or None when there is none."""
    if not (cfg.teacher.get("path") or cfg.teacher.get("arch")):
        return None
    teacher = freeze(_config_model(cfg, "teacher", tokenizer))
    check_same_vocab(teacher, model, tokenizer)
    return teacher
