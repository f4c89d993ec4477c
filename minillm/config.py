"""Checks of the composed config, before any model is loaded: each error names the config key."""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from minillm.errors import MinillmError

log = logging.getLogger(__name__)


def _positive_int(cfg, key: str) -> None:
    value = _get(cfg, key)
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise MinillmError(f"{key}={value!r}: must be a positive integer")


def _in_range(cfg, key: str, low: float, high: float) -> None:
    value = _get(cfg, key)
    if value is None:
        return
    if not isinstance(value, int | float) or not low <= value <= high:
        raise MinillmError(f"{key}={value!r}: must be in [{low}, {high}]")


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if node is None or part not in node:
            return None
        node = node[part]
    return node


# Keys that lived under ``objective`` and were mirrored into other groups; each now has one home there (an
# objective yaml sets its own values in those groups). An old name is refused with its new one.
MOVED_KEYS = {
    "objective.lr": "optim.lr",
    "objective.warmup_steps": "scheduler.num_warmup_steps",
    "objective.monitor": "select.monitor",
    "objective.monitor_mode": "select.mode",
    "objective.val_check_interval": "trainer.val_check_interval",
    "objective.log_every_n_steps": "trainer.log_every_n_steps",
}


def moved_key_error(key: str) -> str | None:
    """``objective.lr moved: use optim.lr`` for a key that moved, else None."""
    new = MOVED_KEYS.get(key)
    return f"{key} moved: use {new}" if new else None


def check_moved_keys(cfg) -> None:
    """An old key name set anywhere (``+objective.lr=…``, an arm or experiment file) is refused, naming its
    new home; Hydra itself refuses ``objective.lr=…`` without the ``+`` (minillm.cli.hydra_error_line)."""
    for key in MOVED_KEYS:
        if _get(cfg, key) is not None:
            raise MinillmError(moved_key_error(key))


def schema_key_error(key: str) -> None:
    """Raise naming ``key`` (``fit.num_thread``) when its node has a schema (minillm/schema.py) that lacks it."""
    from minillm.schema import schema_of

    node, _, name = key.rpartition(".")
    schema = schema_of(node) if node else None
    if schema is not None and name not in schema.__dataclass_fields__:
        keys = ", ".join(schema.__dataclass_fields__)
        raise MinillmError(f"{key}: not a key of {node} (its keys: {keys})")


def check_schema_keys(cfg) -> None:
    """A key added to a typed node with ``+`` (``+fit.num_thread=2``: Hydra's ``+`` opens the node) is refused
    as composition refuses it from an experiment or arm file; the types were checked by composition."""
    from minillm.schema import NODES

    def walk(node, path):
        for key, value in node.items():
            schema_key_error(f"{path}.{key}")
            if isinstance(value, DictConfig):
                walk(value, f"{path}.{key}")

    for name in NODES:
        if isinstance(cfg.get(name), DictConfig):
            walk(cfg[name], name)


def validate_config(cfg) -> None:
    """Raise MinillmError naming the first bad key; warn about slow but legal choices."""
    check_moved_keys(cfg)
    check_schema_keys(cfg)
    for key in (
        "data.batch_size",
        "data.eval_batch_size",
        "data.max_prompt_len",
        "data.max_response_len",
        "eval.batch_size",
        "eval.max_new_tokens",
        "objective.num_rollouts",
        "objective.mini_batch_size",
        "objective.ppo_epochs",
        "objective.max_new_tokens",
        "tokenizer.vocab_size",
    ):
        _positive_int(cfg, key)
    for key in ("objective.kd_ratio", "objective.teacher_mix_alpha", "objective.alpha_end"):
        _in_range(cfg, key, 0.0, 1.0)
    clip = _get(cfg, "objective.clip_eps")
    if clip is not None and (not isinstance(clip, int | float) or clip <= 0):
        raise MinillmError(f"objective.clip_eps={clip!r}: must be > 0")
    if cfg.data.template not in ("alpaca", "chat", "short"):
        raise MinillmError(f"data.template={cfg.data.template!r}; choose one of ['alpaca', 'chat', 'short']")
    if cfg.select.mode not in ("min", "max"):
        raise MinillmError(f"select.mode={cfg.select.mode!r}; choose one of ['max', 'min']")
    if not cfg.eval.seeds:
        raise MinillmError("eval.seeds: give at least one sampling seed")
    from minillm.training.precision import bf16_supported

    cpu_bf16 = cfg.trainer.accelerator == "cpu" and bf16_supported("cpu")
    if cfg.trainer.accelerator == "cpu" and "bf16" in str(cfg.trainer.precision) and not cpu_bf16:
        log.warning(
            "trainer.precision=%s on CPU: this CPU has no bf16 instructions (AVX512-BF16 / AMX) and runs it "
            "far slower than fp32; trainer.precision=auto chooses by measuring",
            cfg.trainer.precision,
        )
    teacher_dtype = _get(cfg, "fit.teacher_dtype")
    if teacher_dtype is not None and teacher_dtype not in ("auto", "fp32", "bf16", "fp16"):
        raise MinillmError(
            f"fit.teacher_dtype={teacher_dtype!r}; choose one of ['auto', 'bf16', 'fp16', 'fp32'] or null"
        )
    if cfg.trainer.accelerator == "cpu" and (
        teacher_dtype == "fp16" or (teacher_dtype == "bf16" and not cpu_bf16)
    ):
        log.warning(
            "fit.teacher_dtype=%s on CPU: reduced-precision matmuls are far slower than fp32 here",
            teacher_dtype,
        )
    if isinstance(cfg.get("objective"), DictConfig):
        from minillm.training.options import check_round_choices

        check_round_choices(cfg.objective)  # objective.variant, objective.alpha_schedule
    max_time = _get(cfg, "trainer.max_time")
    if isinstance(max_time, str) and not re.fullmatch(r"\s*\d+:\d+:\d+:\d+\s*", max_time):
        raise MinillmError(
            f"trainer.max_time={max_time!r}: give days:hours:minutes:seconds, e.g. 00:00:30:00 for 30 minutes"
        )
    stop = _get(cfg, "fit.stop_at_step")
    if stop is not None and (not isinstance(stop, int) or stop < 0):
        raise MinillmError(f"fit.stop_at_step={stop!r}: must be a step number >= 0 or null")
    _positive_int(cfg, "fit.max_bad_steps")
    _positive_int(cfg, "objective.alpha_steps")
    _positive_int(cfg, "objective.chunk_size")
    budget = _get(cfg, "objective.teacher_cache_mb")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int | float) or budget < 0):
        raise MinillmError(f"objective.teacher_cache_mb={budget!r}: must be a size in MiB >= 0, or null")
    if _get(cfg, "teacher.name") == "none" and (_get(cfg, "teacher.path") or _get(cfg, "teacher.arch")):
        key = "teacher.path" if _get(cfg, "teacher.path") else "teacher.arch"
        raise MinillmError(
            f"{key} is set while teacher=none (no teacher): use teacher=hf teacher.path=..., or drop {key}"
        )
    for model in ("teacher", "student"):
        every = _get(cfg, f"{model}.keep_every")
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 2):
            raise MinillmError(
                f"{model}.keep_every={every!r}: must be an integer >= 2 (every k-th layer), or null"
            )
        path, arch = _get(cfg, f"{model}.path"), _get(cfg, f"{model}.arch")
        if path and arch:
            raise MinillmError(
                f"{model}.path={path} and {model}.arch are both set: the path is loaded and {model}.arch is "
                f"ignored; load a model with {model}=hf {model}.path=..., or build one with {model}.path=null"
            )
    check_lora(cfg)
    from minillm.rollout.vllm_engine import check_sampler

    check_sampler(cfg)  # sampler=vllm: the engine installed, and able to sample these models here
    check_beyond_keys(cfg)
    check_targets(cfg)
    check_unread_keys(cfg)
    check_inert_keys(cfg)
    out = Path(cfg.output_dir)
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("/"))
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise MinillmError(f"hydra.run.dir={out}: output directory cannot be written")


def check_lora(cfg) -> None:
    """``student.lora``: only its own keys, and when ``r`` is set a positive rank and alpha, a dropout in [0, 1), target modules
    as ``all-linear`` or a list of names, an export mode. The names are checked against the model when it
    is wrapped (minillm.models.lora)."""
    lora = _get(cfg, "student.lora")
    if lora is None:
        return
    unknown = sorted(set(lora) - {"r", "alpha", "dropout", "target_modules", "export"})
    if unknown:
        raise MinillmError(
            f"student.lora.{unknown[0]}: not a LoRA setting; they are r, alpha, dropout, target_modules, export"
        )
    if lora.get("r") is None:
        return
    r = lora.r
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise MinillmError(f"student.lora.r={r!r}: must be a positive integer (null: no LoRA)")
    alpha = lora.get("alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or alpha <= 0:
        raise MinillmError(f"student.lora.alpha={alpha!r}: must be a number > 0")
    dropout = lora.get("dropout")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise MinillmError(f"student.lora.dropout={dropout!r}: must be in [0, 1)")
    targets = lora.get("target_modules")
    if isinstance(targets, str):
        if targets != "all-linear":
            raise MinillmError(
                f"student.lora.target_modules={targets!r}: use all-linear or a list of module names "
                f"(student.lora.target_modules=[{targets}])"
            )
    elif not targets or not all(isinstance(t, str) and t for t in targets):
        raise MinillmError(
            f"student.lora.target_modules={targets!r}: use all-linear or a non-empty list of module names"
        )
    if lora.get("export") not in ("merged", "adapters"):
        raise MinillmError(
            f"student.lora.export={lora.get('export')!r}; choose one of ['adapters', 'merged']"
        )


# The divergences' parameters and their ranges (objective=token_kd, gkd, distillm): key -> (low, high, open).
_DIVERGENCE_RANGES = {
    ("jsd", "beta"): (0.0, 1.0, False),
    ("skew_forward_kl", "alpha"): (0.0, 1.0, False),
    ("skew_reverse_kl", "alpha"): (0.0, 1.0, False),
    ("ab_divergence", "alpha"): (-math.inf, math.inf, True),
    ("ab_divergence", "beta"): (-math.inf, math.inf, True),
    ("akl", "mu"): (0.0, 1.0, True),
}


def _number(cfg, key: str):
    value = _get(cfg, key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise MinillmError(f"{key}={value!r}: must be a number")
    return value


def check_beyond_keys(cfg) -> None:
    """The keys of the objectives beyond the paper (token_kd, gkd, distillm, distillm2, taid)."""
    divergence = _get(cfg, "objective.divergence")
    if divergence is not None:
        from minillm.objectives.token_kd import DIVERGENCE_PARAMS

        if divergence not in DIVERGENCE_PARAMS:
            raise MinillmError(
                f"objective.divergence={divergence!r}; choose one of {sorted(DIVERGENCE_PARAMS)}"
            )
        for name in ("alpha", "beta", "mu"):
            value = _number(cfg, f"objective.{name}")
            if value is None:
                continue
            if name not in DIVERGENCE_PARAMS[divergence]:
                takes = " and ".join(DIVERGENCE_PARAMS[divergence]) or "no parameter"
                raise MinillmError(
                    f"objective.{name}={value}: divergence={divergence} takes {takes}; set objective.{name}=null"
                )
            low, high, open_ = _DIVERGENCE_RANGES[(divergence, name)]
            inside = low < value < high if open_ else low <= value <= high
            if not inside or not math.isfinite(value):
                where = f"({low}, {high})" if open_ else f"[{low}, {high}]"
                where = "a finite number" if math.isinf(low) else f"in {where}"
                raise MinillmError(f"objective.{name}={value}: {divergence}'s {name} must be {where}")
        top_k = _get(cfg, "objective.teacher_top_k")
        _positive_int(cfg, "objective.teacher_top_k")
        if top_k is not None and divergence == "akl":
            raise MinillmError(
                f"objective.teacher_top_k={top_k}: divergence=akl needs the full distributions (top-k works "
                "with every other divergence)"
            )
    else:  # an objective with its own skew α and no divergence key (distillm2)
        _in_range(cfg, "objective.alpha", 0.0, 1.0)
    for key in ("objective.on_policy_fraction", "objective.init_threshold", "objective.threshold_step"):
        _in_range(cfg, key, 0.0, 1.0)
    for key in ("objective.t_start", "objective.t_end"):
        _in_range(cfg, key, 0.0, 1.0)
    t_start, t_end = _get(cfg, "objective.t_start"), _get(cfg, "objective.t_end")
    if t_start is not None and t_end is not None and t_start > t_end:
        raise MinillmError(f"objective.t_start={t_start}: must not exceed objective.t_end={t_end}")
    for key in ("objective.loss_eps", "objective.t_alpha", "objective.temperature"):
        value = _number(cfg, key)
        if value is not None and value < 0:
            raise MinillmError(f"{key}={value}: must be >= 0")
    momentum = _number(cfg, "objective.t_momentum")
    if momentum is not None and not 0.0 <= momentum < 1.0:
        raise MinillmError(f"objective.t_momentum={momentum}: must be in [0, 1)")
    for key in ("objective.replay_capacity", "objective.schedule_steps", "objective.batch_size"):
        _positive_int(cfg, key)
    responses = _get(cfg, "objective.student_responses")
    if responses is not None and responses not in ("batch", "epoch"):
        raise MinillmError(f"objective.student_responses={responses!r}; choose one of ['batch', 'epoch']")
    top_p = _number(cfg, "objective.top_p")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise MinillmError(f"objective.top_p={top_p}: must be in (0, 1] (1: no nucleus cut)")
    normalize = _get(cfg, "objective.normalize")
    if normalize is not None and normalize not in ("sequence", "token"):
        raise MinillmError(f"objective.normalize={normalize!r}; choose one of ['sequence', 'token']")


def check_targets(cfg) -> None:
    """Every ``_target_`` the run will instantiate names something importable (else one line naming the
    key, before any model is loaded)."""
    from minillm.instantiate import locate_target

    nodes = [
        "task",
        "data.records",
        "optim",
        "scheduler",
        "logger",
        "trainer",
        "objective.module",
        "objective.loss",
    ]
    nodes += [f"callbacks.{name}" for name in (_get(cfg, "callbacks") or {})]
    for key in nodes:
        node = _get(cfg, key)
        if isinstance(node, DictConfig) and "_target_" in node:
            locate_target(node, key)


# --- keys that the chosen config of their group never reads -------------------------------------------
#
# A group's choice (data=bundled, objective=sft, logger=csv, ...) declares in its yaml exactly the keys its
# code reads. A key the user sets under that group — on the command line (also with + or ++), in the
# experiment file or in the arm file — that the chosen yaml does not declare would be accepted and ignored
# (data.path with data=bundled trained on the bundled data). Such a key is refused, naming the choice that
# reads it. The debug presets are exempt: they set sizes for whichever choice is active. A key that the root
# config.yaml declares under a group and that no choice of the group declares is read by every choice
# (student.lora); one that some choice declares is that choice's (data.path is data=jsonl's).


def _config_file(sources, group: str, choice: str):
    """The yaml of ``group/choice`` in Hydra's search path (file and pkg sources), or None."""
    from importlib import resources

    for source in sources:
        if source.schema == "file":
            candidate = Path(source.path) / group / f"{choice}.yaml"
            if candidate.is_file():
                return candidate
        elif source.schema == "pkg":
            try:
                candidate = resources.files(source.path.replace("/", ".")).joinpath(group, f"{choice}.yaml")
            except (ModuleNotFoundError, TypeError):
                continue
            if candidate.is_file():
                return candidate
    return None


def _choices_of(sources, group: str) -> list[str]:
    from importlib import resources

    names = set()
    for source in sources:
        if source.schema == "file":
            folder = Path(source.path) / group
        elif source.schema == "pkg":
            try:
                folder = resources.files(source.path.replace("/", ".")).joinpath(group)
            except (ModuleNotFoundError, TypeError):
                continue
        else:
            continue
        if folder.is_dir():
            names.update(f.name[: -len(".yaml")] for f in folder.iterdir() if f.name.endswith(".yaml"))
    return sorted(names)


def _load_yaml(file) -> tuple[str | None, dict]:
    """The ``# @package`` header (None when absent) and the content of a config file, unresolved."""
    text = file.read_text()
    package = None
    for line in text.splitlines():
        if line.startswith("# @package"):
            package = line.split()[-1]
            break
        if line.strip() and not line.startswith("#"):
            break
    content = OmegaConf.to_container(OmegaConf.create(text or "{}"), resolve=False)
    return package, content if isinstance(content, dict) else {}


def _flatten(node: dict, prefix: str = "") -> dict[str, object]:
    """Every key of a nested mapping as a dotted path (mappings themselves included) -> its value."""
    flat = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        flat[path] = value
        if isinstance(value, dict):
            flat.update(_flatten(value, path + "."))
    return flat


def _declared_keys(sources, group: str, choice: str, seen: frozenset = frozenset()) -> set[str] | None:
    """The dotted keys (below the group's node) that ``group=choice`` declares, with the same-group
    configs of its defaults list (trainer=gpu builds on cpu); None when its file is not found."""
    file = _config_file(sources, group, choice)
    if file is None or choice in seen:
        return None
    package, content = _load_yaml(file)
    keys: set[str] = set()
    for entry in content.pop("defaults", None) or []:
        if isinstance(entry, str) and entry != "_self_" and "/" not in entry:
            keys |= _declared_keys(sources, group, entry, seen | {choice}) or set()
    if package == "_global_":
        node = content.get(group)
        content = node if isinstance(node, dict) else {}
    elif package not in (None, group, "_group_"):
        return None  # written somewhere else: not this check's to judge
    return keys | set(_flatten(content))


def _root_declared_keys(sources, group: str) -> set[str]:
    """The dotted keys (below the group's node) that the root ``config.yaml`` declares under ``group``."""
    file = _config_file(sources, "", "config")
    if file is None:
        return set()
    node = _load_yaml(file)[1].get(group)
    return set(_flatten(node)) if isinstance(node, dict) else set()


def _builds_on(sources, group: str, choice: str) -> int:
    """How many same-group configs ``group=choice`` lists in its defaults (0 for a base config)."""
    file = _config_file(sources, group, choice)
    if file is None:
        return 0
    entries = _load_yaml(file)[1].get("defaults") or []
    return sum(isinstance(e, str) and e != "_self_" and "/" not in e for e in entries)


def _is_declared(key: str, declared: set[str]) -> bool:
    """``arch.hidden_size`` is declared when ``arch`` is: a declared mapping is read as a whole."""
    parts = key.split(".")
    return any(".".join(parts[:n]) in declared for n in range(1, len(parts) + 1))


def _user_keys(hydra_cfg) -> list[tuple[str, str]]:
    """(dotted key, where it was set) for each non-null key the user set: command line, experiment, arm."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = hydra_cfg.runtime.choices
    found = []
    for override in OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task)):
        if override.is_delete() or override.package is not None or override.key_or_group in choices:
            continue  # a deletion or a group choice (data=jsonl, +arm=validity_drop/full)
        if override.is_sweep_override() or override.value() is not None:
            found.append((override.key_or_group, "on the command line"))
    for group in ("experiment", "arm"):
        choice = choices.get(group)
        file = choice and _config_file(hydra_cfg.runtime.config_sources, group, choice)
        if not file:
            continue
        package, content = _load_yaml(file)
        if package != "_global_":
            continue
        content.pop("defaults", None)
        content.pop("hydra", None)
        for key, value in _flatten(content).items():
            # an experiment's W&B settings (logger.tags) are harmless under logger=csv
            if value is not None and not isinstance(value, dict) and not key.startswith("logger."):
                found.append((key, f"by {group}={choice}"))
    return found


# Groups whose node is one object's arguments (optim: torch.optim.SGD takes momentum, AdamW betas) or a set of
# such objects (callbacks.NAME): any key may be set; one the object does not take is refused, in one line
# naming the key, when it is built (instantiate.instantiate_node, training.optim).
OPEN_GROUPS = ("optim", "scheduler", "callbacks", "strategy")


def check_unread_keys(cfg) -> None:
    """Refuse a key set under a group (data, teacher, student, objective, trainer, logger, optim) that its
    chosen config does not read, naming the choice that would read it."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return  # a config built by hand (tests, tools): no record of what the user set
    hydra_cfg = HydraConfig.get()
    if str(cfg.get("output_dir")) != str(hydra_cfg.runtime.get("output_dir")):
        return  # Hydra's record is of another config composed earlier in this process
    choices, sources = hydra_cfg.runtime.choices, hydra_cfg.runtime.config_sources
    for key, where in _user_keys(hydra_cfg):
        group, _, rest = key.partition(".")
        choice = choices.get(group)
        if not rest or choice is None or not isinstance(cfg.get(group), DictConfig):
            continue
        if group in OPEN_GROUPS:
            continue  # the arguments of whatever _target_ the node names: a wrong one fails as it is built
        declared = _declared_keys(sources, group, choice)
        if declared is None or _is_declared(rest, declared):
            continue
        others = [
            other
            for other in _choices_of(sources, group)
            if other != choice and _is_declared(rest, _declared_keys(sources, group, other) or set())
        ]
        if not others and _is_declared(rest, _root_declared_keys(sources, group)):
            continue  # declared in config.yaml for every choice of the group (student.lora)
        # a config that builds on another (objective=onpolicy_rkl on reverse_kld) is named after its base
        readers = [f"{group}={o}" for o in sorted(others, key=lambda o: (_builds_on(sources, group, o), o))]
        if readers:
            raise MinillmError(
                f"{key} (set {where}) is read only by {' or '.join(readers)}, and {group}={choice} ignores "
                f"it: add {readers[0]}, or drop {key}"
            )
        raise MinillmError(
            f"{key} (set {where}) is read by no {group} config ({group}={choice} is chosen): drop it "
            f"or check its spelling"
        )


def _inert_reason(cfg, key: str) -> str | None:
    """Why a key the chosen configs do read has no effect with the other keys' values, or None."""
    if key in ("objective.alpha_end", "objective.alpha_steps"):
        if _get(cfg, "objective.alpha_schedule") in (None, "constant"):
            return "objective.alpha_schedule=constant keeps α at objective.teacher_mix_alpha"
    if key.startswith("data.pretrain.") or key in ("objective.pt_kd_ratio", "objective.pt_batch_size"):
        if not float(_get(cfg, "objective.pt_coef") or 0.0) > 0:
            return f"objective.pt_coef={_get(cfg, 'objective.pt_coef') or 0} leaves L_PT (and its corpus) out"
    return None


def check_inert_keys(cfg) -> None:
    """A key the user set that another key's value makes inert: ``data.pretrain.path`` without
    ``data.pretrain.source=file`` is refused (the file would be silently replaced by the bundled corpus);
    the others are a warning, since a sweep may set them for every job, its control included
    (``objective.pt_coef=0,1 objective.pt_kd_ratio=0.2``)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    if str(cfg.get("output_dir")) != str(hydra_cfg.runtime.get("output_dir")):
        return  # Hydra's record is of another config composed earlier in this process
    for key, where in _user_keys(hydra_cfg):
        if key == "data.pretrain.path" and _get(cfg, "data.pretrain.source") != "file":
            raise MinillmError(
                f"data.pretrain.path (set {where}) is read only with data.pretrain.source=file, and "
                f"data.pretrain.source={_get(cfg, 'data.pretrain.source')}: add data.pretrain.source=file, or "
                "drop data.pretrain.path"
            )
        reason = _inert_reason(cfg, key)
        if reason:
            log.warning("%s (set %s) has no effect in this run: %s", key, where, reason)
