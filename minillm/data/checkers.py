"""Programmatic validity checkers for generated (bundled) instruction data.

Every bundled record carries a JSON-serialisable ``check`` spec. :func:`is_valid` decides whether
*any* response (a model sample, not only the reference) is a correct answer under that spec. The
point is to measure validity beside Rouge-L: a mode-covering student that mixes response
templates produces hybrids ("The cow and the pig are the cow.") which look close to the reference
by n-gram overlap but are wrong, and the checker must say so.

Normalisation (applied to responses, answers, templates and pool items alike): lower-case, every
run of characters other than ``a-z`` and ``0-9`` becomes one space, leading/trailing space is
dropped. So case, whitespace, line breaks and punctuation (trailing or inside) never matter;
words and their order always do.

Check types (few and generic):

``exact``
    ``{"type": "exact", "answers": [str, ...]}``: valid when the normalised response equals one
    of the normalised answers. Used where the set of correct phrasings is small (facts,
    summaries, comparisons).

``label``
    ``{"type": "label", "labels": [str, ...], "label": str, "answers": [str, ...]}``: a
    classification record. Matching is as for ``exact`` (``answers`` lists every accepted
    phrasing of the gold label); ``labels`` is the candidate label set (see :func:`label_words`)
    and ``label`` the gold one, for calibration metrics.

``slots``
    ``{"type": "slots", "templates": [str, ...], "pools": {pool: [str, ...]},
    "all": [pool, ...], "require": [str, ...], "before": [[str, str], ...]}``: valid when the
    response matches one template with every slot filled by an item of its pool.
    A slot is written ``{name}``; its pool is ``name`` without trailing digits (``{x1}`` and
    ``{x2}`` both draw from pool ``x``). The same slot name twice means the same item twice;
    different slot names of one pool must get different items. Optional constraints:
    ``all`` lists pools whose every item must be used; ``require`` lists items that must be
    used somewhere; ``before`` lists item pairs ``[a, b]``: when both are used, ``a`` must
    come first in the response. Used for lists (any valid items, any order), step lists with
    a partial order, and slot-filled poems and stories.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from minillm.errors import MinillmError

CHECK_TYPES = ("exact", "label", "slots")

_NON_WORD = re.compile(r"[^a-z0-9]+")
_SLOT = re.compile(r"\{([a-z]+)(\d*)\}")


def normalize(text: str) -> str:
    """Lower-case, turn every non-alphanumeric run into one space and strip (see module docstring)."""
    return _NON_WORD.sub(" ", text.lower()).strip()


def _words(text: str) -> tuple[str, ...]:
    return tuple(normalize(text).split())


def is_valid(response: str, check: dict) -> bool:
    """Whether ``response`` is a correct answer under ``check``.

    Never raises on an odd response (``None``, non-strings, empty or whitespace-only text give
    ``False``); raises :class:`MinillmError` only when the spec itself is unusable (unknown type).
    """
    kind = _check_type(check)
    if not isinstance(response, str):
        return False
    words = _words(response)
    if not words:
        return False
    if kind in ("exact", "label"):
        return " ".join(words) in _answer_set(check)
    return _slots_match(words, _compile_slots(_freeze(check)))


def label_words(check: dict) -> list[str] | None:
    """The candidate label words of a classification record (``None`` for other records).

    The gold label is ``check["label"]``; both are kept as written (not normalised) so that
    they can be tokenised the way a model would write them.
    """
    if isinstance(check, dict) and check.get("type") == "label":
        return list(check["labels"])
    return None


def _check_type(check: dict) -> str:
    kind = check.get("type") if isinstance(check, dict) else None
    if kind not in CHECK_TYPES:
        raise MinillmError(
            f"unknown check type {kind!r} in check spec (expected one of {', '.join(CHECK_TYPES)})"
        )
    return kind


def _answer_set(check: dict) -> frozenset[str]:
    return _answer_set_cached(tuple(check.get("answers", ())))


@lru_cache(maxsize=8192)
def _answer_set_cached(answers: tuple[str, ...]) -> frozenset[str]:
    return frozenset(" ".join(_words(a)) for a in answers)


def _freeze(check: dict) -> str:
    """A hashable key for the compile cache (specs are small JSON objects)."""
    return json.dumps(check, sort_keys=True)


@dataclass(frozen=True)
class _Template:
    """A template as a sequence of parts: a tuple of literal words, or a slot name."""

    parts: tuple[tuple[str, ...] | str, ...]


@dataclass(frozen=True)
class _Slots:
    templates: tuple[_Template, ...]
    pools: dict[str, tuple[tuple[str, ...], ...]]
    all_pools: tuple[str, ...]
    require: frozenset[tuple[str, ...]]
    before: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]


@lru_cache(maxsize=4096)
def _compile_slots(frozen: str) -> _Slots:
    check = json.loads(frozen)
    pools = {
        name: tuple(sorted({_words(item) for item in items if _words(item)}, key=len, reverse=True))
        for name, items in check.get("pools", {}).items()
    }
    templates = tuple(_parse_template(t, pools) for t in check.get("templates", ()))
    return _Slots(
        templates=templates,
        pools=pools,
        all_pools=tuple(check.get("all", ())),
        require=frozenset(_words(r) for r in check.get("require", ())),
        before=tuple((_words(a), _words(b)) for a, b in check.get("before", ())),
    )


def _parse_template(template: str, pools: dict) -> _Template:
    parts: list[tuple[str, ...] | str] = []
    pos = 0
    for m in _SLOT.finditer(template):
        literal = _words(template[pos : m.start()])
        if literal:
            parts.append(literal)
        if m.group(1) not in pools:
            raise MinillmError(f"slot {m.group(0)} in check template {template!r} has no pool")
        parts.append(m.group(1) + m.group(2))
        pos = m.end()
    tail = _words(template[pos:])
    if tail:
        parts.append(tail)
    return _Template(tuple(parts))


def _pool_of(slot: str) -> str:
    return slot.rstrip("0123456789")


def _assignments(
    words: tuple[str, ...], parts: tuple, i: int, pos: int, bound: dict, order: list, spec: _Slots
) -> Iterator[list]:
    """Every way the template parts from ``i`` on can match ``words`` from ``pos`` on.

    Backtracking over pool items keeps "distinct items per pool" exact even when items share
    prefixes, and yields the filled items in text order so the caller can test ``before``.
    """
    if i == len(parts):
        if pos == len(words):
            yield list(order)
        return
    part = parts[i]
    if isinstance(part, tuple):
        if words[pos : pos + len(part)] == part:
            yield from _assignments(words, parts, i + 1, pos + len(part), bound, order, spec)
        return
    if part in bound:
        value = bound[part]
        if words[pos : pos + len(value)] == value:
            yield from _assignments(words, parts, i + 1, pos + len(value), bound, order, spec)
        return
    pool = _pool_of(part)
    used = {v for k, v in bound.items() if _pool_of(k) == pool}
    for item in spec.pools[pool]:
        if item in used or words[pos : pos + len(item)] != item:
            continue
        bound[part] = item
        order.append(item)
        yield from _assignments(words, parts, i + 1, pos + len(item), bound, order, spec)
        order.pop()
        del bound[part]


def _constraints_hold(order: list, spec: _Slots) -> bool:
    used = set(order)
    if not spec.require <= used:
        return False
    for pool in spec.all_pools:
        if not set(spec.pools[pool]) <= used:
            return False
    first = {}
    for idx, item in enumerate(order):
        first.setdefault(item, idx)
    return all(not (a in first and b in first) or first[a] < first[b] for a, b in spec.before)


def _slots_match(words: tuple[str, ...], spec: _Slots) -> bool:
    for template in spec.templates:
        for order in _assignments(words, template.parts, 0, 0, {}, [], spec):
            if _constraints_hold(order, spec):
                return True
    return False
