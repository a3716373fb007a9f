"""The rate table: what a task earns, per framework × task type, with optional per-model prices.

The JSON shape is the original module's object, amounts as decimal strings::

    {"ollama": {"chat": {"input": "0.001", "output": "0.002", "base": "0.01"}, ...},
     "vllm": {...},
     "default": {"input": "0.001", "output": "0.002", "base": "0.01"},
     "duration_bonus": {"threshold_ms": 1000, "per_ms": "0.0001", "cap": "0.01"}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from marshmallow import ValidationError

from .money import MONEY_CONTEXT, ZERO, format_money
from .schemas import flatten_errors, rate_table_schema

_CHAT = {"input": "0.001", "output": "0.002", "base": "0.01"}
_VLLM_CHAT = {"input": "0.0015", "output": "0.003", "base": "0.015"}

#: The original module's rates, in this table's JSON shape.
DEFAULT_RATES: dict[str, Any] = {
    "ollama": {
        "chat": _CHAT,
        "generate": _CHAT,
        "chat/completions": _CHAT,
        "completions": _CHAT,
        "embeddings": {"input": "0.0005", "output": "0", "base": "0.005"},
    },
    "vllm": {
        "chat/completions": _VLLM_CHAT,
        "completions": _VLLM_CHAT,
        "embeddings": {"input": "0.0008", "output": "0", "base": "0.008"},
    },
    "default": _CHAT,
    # The original paid min(duration_ms / 10000, 0.01) above one second.
    "duration_bonus": {"threshold_ms": 1000, "per_ms": "0.0001", "cap": "0.01"},
}


class RateTableError(ValueError):
    """A rate table that cannot be used; ``messages`` holds the errors by field."""

    def __init__(self, messages: Any, *, source: str = "rate table") -> None:
        self.messages = messages
        self.lines = flatten_errors(messages)
        super().__init__(f"Invalid {source}: " + "; ".join(self.lines))


@dataclass(frozen=True, slots=True)
class DurationBonus:
    threshold_ms: int
    per_ms: Decimal
    cap: Decimal

    def for_duration(self, duration_ms: int) -> Decimal:
        if duration_ms <= self.threshold_ms:
            return ZERO
        return min(MONEY_CONTEXT.multiply(self.per_ms, duration_ms), self.cap)

    def to_dict(self) -> dict[str, Any]:
        return {"threshold_ms": self.threshold_ms, "per_ms": format_money(self.per_ms), "cap": format_money(self.cap)}


@dataclass(frozen=True, slots=True)
class Rate:
    """The prices one task is charged at, every override applied."""

    input: Decimal
    output: Decimal
    base: Decimal
    duration_bonus: DurationBonus


@dataclass(frozen=True, slots=True)
class ModelRate:
    """A per-model override; ``None`` keeps the value of the entry."""

    input: Decimal | None = None
    output: Decimal | None = None
    base: Decimal | None = None
    duration_bonus: DurationBonus | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            name: format_money(value)
            for name, value in (("input", self.input), ("output", self.output), ("base", self.base))
            if value is not None
        }
        if self.duration_bonus is not None:
            data["duration_bonus"] = self.duration_bonus.to_dict()
        return data


@dataclass(frozen=True, slots=True)
class RateEntry:
    input: Decimal
    output: Decimal
    base: Decimal
    duration_bonus: DurationBonus | None = None
    models: Mapping[str, ModelRate] = field(default_factory=dict)

    def rate(self, model: str | None, table_bonus: DurationBonus) -> Rate:
        override = self.models.get(model) if model is not None else None
        if override is None:
            return Rate(self.input, self.output, self.base, self.duration_bonus or table_bonus)
        return Rate(
            self.input if override.input is None else override.input,
            self.output if override.output is None else override.output,
            self.base if override.base is None else override.base,
            override.duration_bonus or self.duration_bonus or table_bonus,
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "input": format_money(self.input),
            "output": format_money(self.output),
            "base": format_money(self.base),
        }
        if self.duration_bonus is not None:
            data["duration_bonus"] = self.duration_bonus.to_dict()
        if self.models:
            data["models"] = {name: override.to_dict() for name, override in self.models.items()}
        return data


@dataclass(frozen=True, slots=True)
class RateTable:
    entries: Mapping[str, Mapping[str, RateEntry]]
    default: RateEntry
    duration_bonus: DurationBonus

    def lookup(self, framework: str, task_type: str, model: str | None) -> tuple[Rate, bool]:
        """The rate of a task, and whether its framework × task type has an entry of its own."""
        entry = self.entries.get(framework, {}).get(task_type)
        if entry is None:
            return self.default.rate(model, self.duration_bonus), False
        return entry.rate(model, self.duration_bonus), True

    def to_dict(self) -> dict[str, Any]:
        """The table in its JSON shape, amounts as strings; loads back to an equal table."""
        data: dict[str, Any] = {
            framework: {task_type: entry.to_dict() for task_type, entry in entries.items()}
            for framework, entries in self.entries.items()
        }
        data["default"] = self.default.to_dict()
        data["duration_bonus"] = self.duration_bonus.to_dict()
        return data


def load_rate_table(
    data: Any,
    *,
    frameworks: Iterable[str],
    task_types: Iterable[str],
    source: str = "rate table",
) -> RateTable:
    """Validate ``data`` (the JSON shape) and build the table; raise :class:`RateTableError`.

    ``default`` and ``duration_bonus`` may be left out: the original's values apply.
    Framework × task type pairs that are left out are priced by ``default``.
    """
    try:
        loaded = rate_table_schema(frameworks, task_types).load(data)
    except ValidationError as error:
        raise RateTableError(error.messages, source=source) from None
    default_bonus = _bonus(DEFAULT_RATES["duration_bonus"])
    default_entry = _entry(DEFAULT_RATES["default"])
    return RateTable(
        entries={
            name: {task_type: _entry(entry) for task_type, entry in entries.items()}
            for name, entries in loaded.items()
            if name not in ("default", "duration_bonus")
        },
        default=_entry(loaded["default"]) if "default" in loaded else default_entry,
        duration_bonus=_bonus(loaded["duration_bonus"]) if "duration_bonus" in loaded else default_bonus,
    )


def read_rate_source(source: Mapping[str, Any] | str | os.PathLike[str]) -> Any:
    """A table given in config: the mapping itself, or the JSON file at that path."""
    if isinstance(source, Mapping):
        return source
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise RateTableError({"(file)": [f"Cannot read {path}: {error.strerror or error}."]}) from None
    try:
        # JSON numbers become exact decimals; NaN and Infinity are left for the schema to name.
        return json.loads(text, parse_float=Decimal)
    except ValueError as error:
        raise RateTableError({"(file)": [f"{path} is not valid JSON: {error}."]}) from None


def _bonus(data: Mapping[str, Any]) -> DurationBonus:
    return DurationBonus(int(data["threshold_ms"]), Decimal(data["per_ms"]), Decimal(data["cap"]))


def _entry(data: Mapping[str, Any]) -> RateEntry:
    bonus = data.get("duration_bonus")
    return RateEntry(
        input=Decimal(data["input"]),
        output=Decimal(data["output"]),
        base=Decimal(data["base"]),
        duration_bonus=_bonus(bonus) if bonus is not None else None,
        models={name: _model_rate(override) for name, override in data.get("models", {}).items()},
    )


def _model_rate(data: Mapping[str, Any]) -> ModelRate:
    bonus = data.get("duration_bonus")
    return ModelRate(
        input=data.get("input"),
        output=data.get("output"),
        base=data.get("base"),
        duration_bonus=_bonus(bonus) if bonus is not None else None,
    )
