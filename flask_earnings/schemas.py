"""marshmallow schemas for everything an operator writes: rate tables and endpoint rules.

Every table, from config, a file or (later) an admin edit, passes through here, so a bad
value is always rejected the same way, with an error that names its field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate

#: Upper bound of any amount (a per-token rate, a base fee, a bonus cap).
MAX_AMOUNT = Decimal(10) ** 9
#: Finest step of any amount: a rate below 1e-18 per token is not a price.
MAX_PLACES = 18
#: Upper bound of a duration threshold: about eleven days, in milliseconds.
MAX_MILLISECONDS = 10**9

PROTOCOLS = ("ollama", "openai")
FRAMEWORK_NAME = r"^[a-z][a-z0-9_.-]{0,63}$"
#: Top-level keys of a rate table that are not frameworks.
RESERVED_NAMES = ("default", "duration_bonus")
PROTOCOL_TASK_TYPES = {
    "ollama": ("chat", "generate", "embeddings"),
    "openai": ("chat/completions", "completions", "embeddings"),
}


class Amount(fields.Field[Decimal]):
    """A non-negative finite decimal, as a string or a JSON number, but never a boolean."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
            raise ValidationError("Must be a decimal number, as a string or a number.")
        try:
            # A float is read as the shortest text that round-trips, i.e. what was typed.
            amount = Decimal(repr(value) if isinstance(value, float) else value)
        except (InvalidOperation, ValueError):
            raise ValidationError("Not a valid decimal number.") from None
        if not amount.is_finite():
            raise ValidationError("Must be finite (not NaN or Infinity).")
        if amount < 0:
            raise ValidationError("Must not be negative.")
        if amount > MAX_AMOUNT:
            raise ValidationError(f"Must not be greater than {MAX_AMOUNT:f}.")
        if amount.as_tuple().exponent < -MAX_PLACES:  # type: ignore[operator]
            raise ValidationError(f"Must have at most {MAX_PLACES} decimal places.")
        return abs(amount) if amount.is_zero() else amount  # "-0" is 0

    def _serialize(self, value: Decimal | None, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else format(value, "f")


class WholeNumber(fields.Field[int]):
    """A non-negative JSON integer, never a boolean, a float or a string."""

    def __init__(self, *, maximum: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.maximum = maximum

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("Must be a whole number.")
        if not 0 <= value <= self.maximum:
            raise ValidationError(f"Must be between 0 and {self.maximum}.")
        return value


class KeyedMapping(fields.Field[dict[str, Any]]):
    """A JSON object whose keys are names and whose values all load with one schema.

    Unlike ``fields.Dict``, errors are keyed by the entry's own name, so they read as
    ``vllm.chat/completions.input`` rather than through ``value`` levels.
    """

    def __init__(
        self,
        schema: Callable[[], Schema],
        *,
        key_validator: Callable[[str], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.schema = schema
        self.key_validator = key_validator

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise ValidationError("Must be an object.")
        loaded: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                errors[str(key)] = ["Must be a non-empty name."]
                continue
            try:
                if self.key_validator is not None:
                    self.key_validator(key)
                loaded[key] = self.schema().load(item)
            except ValidationError as error:
                errors[key] = error.messages
        if errors:
            raise ValidationError(errors)
        return loaded

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        if value is None:
            return None
        return {key: self.schema().dump(item) for key, item in value.items()}


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class DurationBonusSchema(StrictSchema):
    """``bonus = 0`` up to ``threshold_ms``, else ``min(duration_ms * per_ms, cap)``."""

    threshold_ms = WholeNumber(maximum=MAX_MILLISECONDS, required=True)
    per_ms = Amount(required=True)
    cap = Amount(required=True)


class ModelRateSchema(StrictSchema):
    """A per-model override: the fields it names replace those of its entry."""

    input = Amount()
    output = Amount()
    base = Amount()
    duration_bonus = fields.Nested(DurationBonusSchema)


class RateEntrySchema(StrictSchema):
    """What one framework × task type pays: per input token, per output token, per task."""

    input = Amount(required=True)
    output = Amount(required=True)
    base = Amount(required=True)
    duration_bonus = fields.Nested(DurationBonusSchema)
    models = KeyedMapping(ModelRateSchema, key_validator=validate.Length(max=255))


class _RateTableSchema(StrictSchema):
    @post_load
    def _keyed_by_name(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {self.fields[name].data_key or name: value for name, value in data.items()}


def rate_table_schema(frameworks: Iterable[str], task_types: Iterable[str]) -> Schema:
    """The schema of a whole table, for the frameworks and task types this app can see.

    Naming them makes a typo (``olama``, ``chat/completion``) an error rather than an
    entry that silently never applies.
    """
    task_type = validate.OneOf(sorted(task_types), error="Unknown task type; expected one of: {choices}.")
    table: dict[str, fields.Field[Any]] = {
        # Attribute names are positional so that no framework name can shadow a Schema method.
        f"framework_{index}": KeyedMapping(RateEntrySchema, key_validator=task_type, data_key=framework)
        for index, framework in enumerate(sorted(frameworks))
    }
    table["default"] = fields.Nested(RateEntrySchema)
    table["duration_bonus"] = fields.Nested(DurationBonusSchema)
    schema_class: type[Schema] = type("RateTableSchema", (_RateTableSchema,), table)
    return schema_class()


class EndpointRuleSchema(StrictSchema):
    """An extra tracked path: which protocol its replies speak and which task it is."""

    protocol = fields.String(required=True, validate=validate.OneOf(PROTOCOLS))
    task_type = fields.String(required=True)
    framework = fields.String(
        validate=[
            validate.Regexp(FRAMEWORK_NAME, error="Must be a lower-case name (letters, digits, _ . -)."),
            validate.NoneOf(RESERVED_NAMES, error="'{input}' is a reserved key of the rate table."),
        ]
    )


def load_endpoint_rule(data: Any) -> dict[str, Any]:
    rule: dict[str, Any] = EndpointRuleSchema().load(data)
    allowed = PROTOCOL_TASK_TYPES[rule["protocol"]]
    if rule["task_type"] not in allowed:
        raise ValidationError({"task_type": [f"Must be one of: {', '.join(allowed)}."]})
    return rule


def flatten_errors(messages: Any, path: str = "") -> list[str]:
    """``{"ollama": {"chat": {"input": ["..."]}}}`` → ``["ollama.chat.input: ..."]``."""
    if isinstance(messages, Mapping):
        lines: list[str] = []
        for key, value in messages.items():
            lines += flatten_errors(value, f"{path}.{key}" if path else str(key))
        return lines
    if isinstance(messages, list) and all(isinstance(item, str) for item in messages):
        return [f"{path or '(table)'}: {message}" for message in messages]
    if isinstance(messages, list):
        return [line for item in messages for line in flatten_errors(item, path)]
    return [f"{path or '(table)'}: {messages}"]
