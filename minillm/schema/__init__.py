"""The config's schema: a dataclass per node (``fit``, ``eval``, ``trainer``, …) and per group choice
(``objective=sft``, ``data=jsonl``, ``sampler=vllm``), each the one home of its keys, their types, defaults,
ranges (``minillm.schema.rules``) and comments.

They are stored in Hydra's ConfigStore before any config is composed (``register``): the fixed nodes as
``schema/<node>``, listed first in ``conf/config.yaml``'s defaults; a choice's schema as
``schema/<group>/<choice>``, listed first in that choice's yaml. A node built from a dataclass is in struct mode,
so composition itself refuses a key the node does not have (from the command line, an experiment or an arm) and a
value of the wrong type; ``minillm.cli`` turns that refusal into one line naming the key and the choice that reads
it. ``minillm.schema.check`` refuses what composition lets through (a key added with ``+``) and applies the
ranges. Groups whose node is one object's arguments (``optim``, ``scheduler``, ``callbacks``, ``strategy``) have
no schema: a key the object does not take is refused as it is built.
"""

from __future__ import annotations

from minillm.schema.data import BundledData, JsonlData
from minillm.schema.models import ModelConfig, StudentConfig
from minillm.schema.objective import CHOICES as OBJECTIVES
from minillm.schema.run import EvalConfig, FitConfig, ResumeConfig, SelectConfig, TokenizerConfig
from minillm.schema.runtime import SAMPLERS, LoggerConfig, TrainerConfig

# node -> its schema, whatever the group's choice (schema/<node> in config.yaml's defaults)
NODES = {
    "fit": FitConfig,
    "resume": ResumeConfig,
    "select": SelectConfig,
    "tokenizer": TokenizerConfig,
    "eval": EvalConfig,
    "teacher": ModelConfig,
    "student": StudentConfig,
    "trainer": TrainerConfig,
    "logger": LoggerConfig,
}
# group -> {choice: its schema} (schema/<group>/<choice>, first in conf/<group>/<choice>.yaml's defaults)
CHOICES = {
    "data": {"bundled": BundledData, "jsonl": JsonlData},
    "objective": OBJECTIVES,
    "sampler": SAMPLERS,
}
# Groups whose node is the arguments of the object its _target_ names (or a set of such objects): no schema.
OPEN_GROUPS = ("optim", "scheduler", "callbacks", "strategy")


def register() -> None:
    """Store every schema in Hydra's ConfigStore; idempotent."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for node, schema in NODES.items():
        store.store(group="schema", name=node, node=schema, package=node)
    for group, choices in CHOICES.items():
        for choice, schema in choices.items():
            store.store(group=f"schema/{group}", name=choice, node=schema)


def choice_of(schema: type) -> tuple[str, str] | None:
    """(group, choice) whose schema is ``schema``, or None for a fixed node's."""
    for group, choices in CHOICES.items():
        for choice, cls in choices.items():
            if cls is schema:
                return group, choice
    return None


def by_class_name(name: str) -> type | None:
    """The schema class called ``name`` (as a composition error names it), or None."""
    for schema in [*NODES.values(), *(c for choices in CHOICES.values() for c in choices.values())]:
        for cls in _nested(schema):
            if cls.__name__ == name:
                return cls
    return None


def _nested(schema: type):
    """``schema`` and the dataclasses of its nested nodes."""
    yield schema
    for name in schema.__dataclass_fields__:
        inner = field_schema(schema, name)
        if inner is not None:
            yield from _nested(inner)


def field_schema(schema: type, name: str) -> type | None:
    """The dataclass of ``schema``'s field ``name`` when that field is a nested node, else None."""
    import typing

    kind = typing.get_type_hints(schema).get(name)
    return kind if isinstance(kind, type) and hasattr(kind, "__dataclass_fields__") else None
