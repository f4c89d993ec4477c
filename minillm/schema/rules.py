"""What a schema field may hold beyond its type: a range or a set of choices, declared beside the field.

``positive(8)`` is a dataclass field with default 8 whose value must be a positive integer; the rule sits in
the field's metadata, and ``minillm.schema.check.check_schema`` applies it to the composed config with one
line naming the key (``data.batch_size=0: must be a positive integer``). A null value passes every rule
(whether the key may be null is its type's business, which composition checks).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import MISSING, field
from typing import Any


class Rule:
    """A test of one value and the message tail when it fails."""

    def __init__(self, test: Callable[[Any], bool], text: str, *, choose: tuple | None = None):
        self.test, self.text, self.choose = test, text, choose

    def error(self, key: str, value) -> str | None:
        """``key=value: must be …`` when ``value`` breaks the rule, else None."""
        if value is None:
            return None
        try:
            ok = self.test(value)
        except TypeError:
            ok = False
        if ok:
            return None
        if self.choose is not None:
            return f"{key}={value!r}; choose one of {sorted(self.choose)}"
        return f"{key}={value!r}: {self.text}"


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def key(default: Any = MISSING, rule: Rule | None = None, *, factory: Callable | None = None):
    """A dataclass field with ``rule`` in its metadata (``factory`` for a list or nested node default)."""
    metadata = {"rule": rule} if rule else {}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def positive(default: Any = MISSING, text: str = "must be a positive integer"):
    """An integer > 0."""
    return key(default, Rule(lambda v: _integer(v) and v > 0, text))


def at_least(default: Any, low: int, text: str):
    """An integer >= ``low``."""
    return key(default, Rule(lambda v: _integer(v) and v >= low, text))


def non_negative(default: Any = MISSING, text: str = "must be >= 0"):
    """A number >= 0."""
    return key(default, Rule(lambda v: _number(v) and v >= 0, text))


def greater_than_zero(default: Any = MISSING, text: str = "must be > 0"):
    """A number > 0."""
    return key(default, Rule(lambda v: _number(v) and v > 0, text))


def within(
    default: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False, text=None
):
    """A number in [low, high] (either end open with ``low_open`` / ``high_open``)."""

    def test(value) -> bool:
        if not _number(value) or not math.isfinite(value):
            return False
        above = low < value if low_open else low <= value
        below = value < high if high_open else value <= high
        return above and below

    if text is None:
        text = f"must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    return key(default, Rule(test, text))


def one_of(default: Any, *choices: str):
    """One of ``choices``."""
    return key(default, Rule(lambda v: v in choices, "", choose=choices))


def matching(default: Any, pattern: str, text: str):
    """A string that matches ``pattern`` whole."""
    return key(default, Rule(lambda v: isinstance(v, str) and re.fullmatch(pattern, v) is not None, text))


def checked(default: Any, test: Callable[[Any], bool], text: str, *, factory: Callable | None = None):
    """Any other rule on one value."""
    return key(default, Rule(test, text), factory=factory)
