"""The rate table: the original's defaults, validation that names the field, overrides, the bonus."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from flask_earnings import DEFAULT_RATES, RateTableError
from flask_earnings.endpoints import known_task_types
from flask_earnings.pricing import price
from flask_earnings.rates import DurationBonus, RateTable, load_rate_table, read_rate_source

from . import payloads
from .conftest import MakeApp
from .helpers import add_upstream_view, call


def load(data: Any) -> RateTable:
    return load_rate_table(data, frameworks={"ollama", "vllm"}, task_types=known_task_types())


def entry(input_: str = "0.001", output: str = "0.002", base: str = "0.01") -> dict[str, Any]:
    return {"input": input_, "output": output, "base": base}


# framework, task type, input, output, base: the original module's table.
ORIGINAL = [
    ("ollama", "chat", "0.001", "0.002", "0.01"),
    ("ollama", "generate", "0.001", "0.002", "0.01"),
    ("ollama", "chat/completions", "0.001", "0.002", "0.01"),
    ("ollama", "completions", "0.001", "0.002", "0.01"),
    ("ollama", "embeddings", "0.0005", "0", "0.005"),
    ("vllm", "chat/completions", "0.0015", "0.003", "0.015"),
    ("vllm", "completions", "0.0015", "0.003", "0.015"),
    ("vllm", "embeddings", "0.0008", "0", "0.008"),
]


@pytest.mark.parametrize(("framework", "task_type", "input_", "output", "base"), ORIGINAL)
def test_the_defaults_are_the_original_table(
    framework: str, task_type: str, input_: str, output: str, base: str
) -> None:
    rate, own_entry = load(DEFAULT_RATES).lookup(framework, task_type, model=None)

    assert own_entry
    assert (rate.input, rate.output, rate.base) == (Decimal(input_), Decimal(output), Decimal(base))
    assert rate.duration_bonus == DurationBonus(1000, Decimal("0.0001"), Decimal("0.01"))


def test_an_unknown_pair_is_priced_by_default_with_one_warning(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    rate, own_entry = load(DEFAULT_RATES).lookup("vllm", "chat", model=None)
    assert not own_entry
    assert (rate.input, rate.output, rate.base) == (Decimal("0.001"), Decimal("0.002"), Decimal("0.01"))

    app, earnings = make_app(
        endpoints={"/vllm/native/chat": {"protocol": "ollama", "task_type": "chat", "framework": "vllm"}}
    )
    add_upstream_view(app, "/vllm/native/chat", payloads.ollama_chat_reply(10, 10))
    with caplog.at_level(logging.WARNING, logger="flask_earnings"):
        for _ in range(3):
            _, task = call(app, earnings, "/vllm/native/chat", payloads.ollama_chat_request())

    assert task.earnings is not None and task.earnings.total == Decimal("0.04")
    assert caplog.text.count("No earnings rate for vllm/chat, using default") == 1


@pytest.mark.parametrize(
    ("duration_ms", "bonus"),
    [(0, "0"), (1000, "0"), (1001, "0.01"), (2500, "0.01"), (60_000, "0.01")],
)
def test_the_default_bonus_is_the_originals_flat_cent_above_one_second(duration_ms: int, bonus: str) -> None:
    assert load(DEFAULT_RATES).duration_bonus.for_duration(duration_ms) == Decimal(bonus)


def test_the_bonus_parameters_can_be_changed() -> None:
    table = load({**DEFAULT_RATES, "duration_bonus": {"threshold_ms": 500, "per_ms": "0.000002", "cap": "0.05"}})

    assert table.duration_bonus.for_duration(500) == 0
    assert table.duration_bonus.for_duration(10_000) == Decimal("0.02")
    assert table.duration_bonus.for_duration(40_000) == Decimal("0.05")


def test_the_formula_is_exact_in_decimals() -> None:
    rate, _ = load(DEFAULT_RATES).lookup("vllm", "chat/completions", None)

    earned = price(rate, input_tokens=1234, output_tokens=567, duration_ms=2500)

    assert (earned.input_reward, earned.output_reward) == (Decimal("1.851"), Decimal("1.701"))
    assert (earned.base_reward, earned.duration_bonus, earned.total) == (
        Decimal("0.015"),
        Decimal("0.01"),
        Decimal("3.577"),
    )
    assert all(isinstance(amount, Decimal) for amount in vars_of(earned))


def vars_of(earned: Any) -> list[Any]:
    return [
        getattr(earned, name) for name in ("input_reward", "output_reward", "base_reward", "duration_bonus", "total")
    ]


def test_per_model_overrides_replace_only_what_they_name() -> None:
    rates = json.loads(json.dumps(DEFAULT_RATES))
    rates["vllm"]["chat/completions"]["models"] = {
        "meta-llama/Llama-3.1-70B-Instruct": {"input": "0.004", "output": "0.008"},
        "tiny": {"base": "0", "duration_bonus": {"threshold_ms": 0, "per_ms": "0", "cap": "0"}},
    }
    table = load(rates)

    big, _ = table.lookup("vllm", "chat/completions", "meta-llama/Llama-3.1-70B-Instruct")
    tiny, _ = table.lookup("vllm", "chat/completions", "tiny")
    other, _ = table.lookup("vllm", "chat/completions", "Qwen/Qwen2.5-7B-Instruct")

    assert (big.input, big.output, big.base) == (Decimal("0.004"), Decimal("0.008"), Decimal("0.015"))
    assert (tiny.input, tiny.base, tiny.duration_bonus.for_duration(5000)) == (Decimal("0.0015"), 0, 0)
    assert (other.input, other.output) == (Decimal("0.0015"), Decimal("0.003"))


def test_a_table_round_trips_through_its_json_shape() -> None:
    rates = json.loads(json.dumps(DEFAULT_RATES))
    rates["ollama"]["chat"]["models"] = {"llama3.2": {"output": "0.0000001"}}
    table = load(rates)

    again = load(json.loads(json.dumps(table.to_dict())))

    assert again == table
    assert table.to_dict()["ollama"]["chat"]["models"]["llama3.2"] == {"output": "0.0000001"}


def test_left_out_default_and_bonus_take_the_originals_values() -> None:
    table = load({"vllm": {"chat/completions": entry("1", "2", "3")}})

    assert table.lookup("ollama", "chat", None)[0].input == Decimal("0.001")
    assert table.duration_bonus == DurationBonus(1000, Decimal("0.0001"), Decimal("0.01"))


def test_numbers_are_accepted_and_read_as_written() -> None:
    table = load({"default": {"input": 0.1, "output": 2, "base": Decimal("0.3")}})

    assert (table.default.input, table.default.output, table.default.base) == (Decimal("0.1"), 2, Decimal("0.3"))


@pytest.mark.parametrize(
    ("table", "field", "message"),
    [
        ({"ollama": {"chat": entry(input_="-0.001")}}, "ollama.chat.input", "Must not be negative."),
        ({"ollama": {"chat": entry(output="NaN")}}, "ollama.chat.output", "Must be finite"),
        ({"ollama": {"chat": entry(base="Infinity")}}, "ollama.chat.base", "Must be finite"),
        ({"ollama": {"chat": {**entry(), "input": float("nan")}}}, "ollama.chat.input", "Must be finite"),
        ({"ollama": {"chat": {**entry(), "input": True}}}, "ollama.chat.input", "Must be a decimal number"),
        ({"ollama": {"chat": entry(input_="1e999999")}}, "ollama.chat.input", "Must not be greater than"),
        ({"ollama": {"chat": entry(input_="1e-30")}}, "ollama.chat.input", "at most 18 decimal places"),
        ({"ollama": {"chat": entry(input_="lots")}}, "ollama.chat.input", "Not a valid decimal number."),
        ({"ollama": {"chat": {**entry(), "discount": "0.1"}}}, "ollama.chat.discount", "Unknown field."),
        ({"ollama": {"chat": {"input": "0.1", "output": "0.1"}}}, "ollama.chat.base", "Missing data"),
        ({"ollama": {"chatt": entry()}}, "ollama.chatt", "Unknown task type"),
        ({"olama": {"chat": entry()}}, "olama", "Unknown field."),
        ({"duration_bonus": {"threshold_ms": True, "per_ms": "0", "cap": "0"}}, "duration_bonus.threshold_ms", "whole"),
        ({"duration_bonus": {"threshold_ms": 1.5, "per_ms": "0", "cap": "0"}}, "duration_bonus.threshold_ms", "whole"),
        ({"duration_bonus": {"threshold_ms": 10, "per_ms": "0"}}, "duration_bonus.cap", "Missing data"),
        ({"ollama": {"chat": {**entry(), "models": {"m": {"input": "-1"}}}}}, "ollama.chat.models.m.input", "negative"),
        ({"ollama": {"chat": {**entry(), "models": []}}}, "ollama.chat.models", "Must be an object"),
        ([], "_schema", "Invalid input type"),
    ],
)
def test_a_bad_table_is_rejected_naming_the_field(table: Any, field: str, message: str) -> None:
    with pytest.raises(RateTableError) as caught:
        load(table)

    assert any(line.startswith(field + ":") and message in line for line in caught.value.lines), caught.value.lines


def test_an_invalid_table_at_start_up_stops_the_app_with_that_message(make_app: MakeApp) -> None:
    with pytest.raises(RateTableError, match=r"EARNINGS_RATES\): vllm.embeddings.input: Must not be negative"):
        make_app(rates={"vllm": {"embeddings": entry(input_="-1")}})


def test_the_table_may_be_a_json_file(make_app: MakeApp, tmp_path: Path) -> None:
    path = tmp_path / "rates.json"
    path.write_text(json.dumps({"vllm": {"embeddings": {"input": 0.1, "output": 0, "base": 0.2}}}))

    app, earnings = make_app(config={"EARNINGS_RATES": str(path)})

    with app.app_context():
        assert earnings.rate_table.lookup("vllm", "embeddings", None)[0].input == Decimal("0.1")
        assert earnings.calculate_earnings(
            "vllm", "embeddings", input_tokens=3, output_tokens=0, duration_ms=10
        ).total == Decimal("0.5")


def test_a_missing_or_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"vllm": ')

    with pytest.raises(RateTableError, match=r"Cannot read .*missing\.json"):
        read_rate_source(tmp_path / "missing.json")
    with pytest.raises(RateTableError, match=r"broken\.json is not valid JSON"):
        read_rate_source(broken)


def test_json_nan_in_a_file_is_rejected_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "rates.json"
    path.write_text('{"default": {"input": NaN, "output": 0, "base": 0}}')

    with pytest.raises(RateTableError, match=r"default\.input: Must be finite"):
        load(read_rate_source(path))
