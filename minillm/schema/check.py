"""What composition lets through: a key added to a typed node with Hydra's ``+`` (which opens the node), and
the ranges of ``minillm.schema.rules``. Each refusal is one line naming the key."""

from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf

from minillm.errors import MinillmError
from minillm.schema import CHOICES, NODES, field_schema


def unknown_key_line(key: str, schema: type, where: str) -> str:
    """Why ``key`` (``data.path``) is refused by the node typed ``schema``: the choices of its group that read
    it (``data.path (set on the command line) is read only by data=jsonl, and data=bundled ignores it``), or
    the keys the node has."""
    from minillm.schema import choice_of

    chosen = choice_of(schema)
    group, _, rest = key.partition(".")
    if chosen is not None and chosen[0] == group:
        readers = [
            choice
            for choice, cls in sorted(
                CHOICES[group].items(), key=lambda item: (len(item[1].__mro__), item[0])
            )
            if cls is not schema and _has_key(cls, rest)
        ]
        if readers:
            names = " or ".join(f"{group}={choice}" for choice in readers)
            head = f"{key} (set {where}) is read only by {names}, and {group}={chosen[1]} ignores it"
            root = where[3:] if where.startswith("by ") and "=" not in where else None
            if root is not None:  # a primary config (bench.yaml) sets it: the user cannot drop it
                return f"{head}: {root} runs with {group}={readers[0]} (or another of those), not {group}={chosen[1]}"
            return f"{head}: add {group}={readers[0]}, or drop {key}"
        return (
            f"{key} (set {where}) is read by no {group} config ({group}={chosen[1]} is chosen): drop it or "
            "check its spelling"
        )
    node = key.rpartition(".")[0]
    keys = ", ".join(schema.__dataclass_fields__)
    return f"{key}: not a key of {node} (its keys: {keys}) (set {where})"


def _has_key(schema: type, dotted: str) -> bool:
    head, _, rest = dotted.partition(".")
    if head not in schema.__dataclass_fields__:
        return False
    inner = field_schema(schema, head)
    return not rest or inner is None or _has_key(inner, rest)


def schema_for(cfg, group: str) -> type | None:
    """The schema of ``cfg[group]``: its own type (a config Hydra composed), else the group's fixed schema,
    else the schema of the group's choice in Hydra's record of this config; None for an untyped node."""
    node = cfg.get(group) if isinstance(cfg, DictConfig) else None
    if not isinstance(node, DictConfig):
        return None
    kind = OmegaConf.get_type(node)
    if isinstance(kind, type) and hasattr(kind, "__dataclass_fields__"):
        return kind
    if group in NODES:
        return NODES[group]
    if group in CHOICES:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            hydra_cfg = HydraConfig.get()
            # Hydra's record may be of another config composed earlier in this process
            if str(cfg.get("output_dir")) == str(hydra_cfg.runtime.get("output_dir")):
                return CHOICES[group].get(hydra_cfg.runtime.choices.get(group))
        return _identify(group, node)
    return None


# what tells a group's choices apart in a config built without Hydra's record (a saved config, a test's)
_IDENTITY = {"objective": "name", "sampler": "name", "data": "records"}


def _identify(group: str, node: DictConfig) -> type | None:
    """The choice schema whose identifying default (objective.name, data.records._target_) ``node`` has."""
    key = _IDENTITY.get(group)
    value = node.get(key) if key else None
    if isinstance(value, DictConfig):
        value = value.get("_target_")
    for schema in CHOICES.get(group, {}).values():
        default = getattr(schema(), key)
        if isinstance(default, dict):
            default = default.get("_target_")
        if value is not None and value == default:
            return schema
    return None


def _missing(node: DictConfig, path: str):
    """The dotted keys below ``node`` left at ``???`` (a value the chosen config needs from the user)."""
    for name in node:
        if OmegaConf.is_missing(node, name):
            yield f"{path}.{name}"
            continue
        value = node._get_node(name)
        if isinstance(value, DictConfig) and not value._is_interpolation():
            yield from _missing(value, f"{path}.{name}")


def _walk(node: DictConfig, schema: type, path: str):
    """(dotted key, value, field or None) for each key of ``node``; None for a key ``schema`` lacks."""
    from omegaconf.errors import OmegaConfBaseException

    fields = schema.__dataclass_fields__
    for name in node:
        key = f"{path}.{name}"
        if name not in fields:
            yield key, None, None
            continue
        try:
            value = node[name]
        except OmegaConfBaseException as err:  # an interpolation that cannot resolve, or to a wrong type
            cause = str(err).splitlines()[0]
            sibling = re.search(r"interpolation '\$\{\.(\w+)\}'", cause)  # name: ${.path} with no path
            if sibling and sibling.group(1) in node and node[sibling.group(1)] is None:
                other = f"{path}.{sibling.group(1)}"
                raise MinillmError(
                    f"{other}: not set, and this run needs it ({key} is ${{.{sibling.group(1)}}}): add {other}=…"
                ) from None
            raise MinillmError(f"{key}: cannot be resolved: {cause}") from None
        inner = field_schema(schema, name)
        if inner is not None and isinstance(value, DictConfig):
            yield from _walk(value, inner, key)
        else:
            yield key, value, fields[name]


def check_schema(cfg) -> None:
    """Refuse a key a typed node lacks (added with ``+``) and a value outside its rule, naming the key."""
    for group in [*NODES, *CHOICES]:
        node = cfg.get(group) if isinstance(cfg, DictConfig) else None
        if isinstance(node, DictConfig):
            for key in _missing(node, group):
                raise MinillmError(f"{key}: not set, and this run needs it: add {key}=…")
        schema = schema_for(cfg, group)
        if schema is None:
            continue
        for key, value, f in _walk(cfg[group], schema, group):
            if f is None:
                node_schema = _schema_at(schema, key.split(".")[1:-1])
                raise MinillmError(unknown_key_line(key, node_schema, "on the command line"))
            rule = f.metadata.get("rule")
            message = rule.error(key, value) if rule else None
            if message:
                raise MinillmError(message)


def _schema_at(schema: type, parts: list[str]) -> type:
    for part in parts:
        schema = field_schema(schema, part) or schema
    return schema


def default_of(cfg, key: str):
    """The schema default of ``key`` (``objective.pt_kd_ratio``) for this config's choice; KeyError where the
    node has no schema."""
    group, *parts = key.split(".")
    schema = schema_for(cfg, group)
    if schema is None:
        raise KeyError(key)
    value = schema()
    for part in parts:
        if not hasattr(value, part):
            raise KeyError(key)
        value = getattr(value, part)
    return value
