"""Money is stored so that it reads back equal, and sums exactly, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from flask_earnings.money import money_sum
from flask_earnings.pricing import price
from flask_earnings.rates import DurationBonus, Rate
from flask_earnings.storage import Batch, Store, define_tables, standalone_engine

from .conftest import MakeApp


def store_for(url: str) -> Store:
    return Store(define_tables(sa.MetaData()), lambda: standalone_engine(url), owned=True)


def task_row(task_id: str, now: datetime) -> dict[str, object]:
    return {
        "id": task_id,
        "request_id": None,
        "status": "completed",
        "framework": "vllm",
        "protocol": "openai",
        "task_type": "embeddings",
        "endpoint": "/v1/embeddings",
        "model": "m",
        "device_id": None,
        "client": None,
        "streamed": False,
        "input_tokens": 1,
        "output_tokens": 0,
        "cached_tokens": None,
        "reasoning_tokens": None,
        "tokens_source": "reported",
        "created_at": now,
        "started_at": now,
        "finished_at": now,
        "duration_ms": 0,
        "http_status": 200,
        "error": None,
        "rate_version": 1,
    }


def record_row(task_id: str, total: Decimal, now: datetime) -> dict[str, object]:
    return {
        "task_id": task_id,
        "input_reward": total,
        "output_reward": Decimal(0),
        "base_reward": Decimal(0),
        "duration_bonus": Decimal(0),
        "total": total,
        "rate_version": 1,
        "recorded_at": now,
    }


@pytest.mark.parametrize(
    "amount",
    ["0.000000000000000001", "999999999.999999999999999999", "3.577", "0", "1E+3", "0.1"],
)
def test_an_amount_reads_back_equal(database_url: str, amount: str) -> None:
    store = store_for(database_url)
    now = datetime.now(UTC)
    store.write(Batch(inserts={"t": task_row("t", now)}, updates={}, records=[record_row("t", Decimal(amount), now)]))

    task = store.load_task("t")

    assert task is not None and task.earnings is not None
    assert task.earnings.total == Decimal(amount)
    assert isinstance(task.earnings.total, Decimal)
    assert task.created_at == now and task.created_at.tzinfo is not None


@pytest.mark.slow
def test_a_million_tasks_of_one_token_at_a_millionth_sum_to_exactly_one(database_url: str) -> None:
    store = store_for(database_url)
    rate = Rate(Decimal("0.000001"), Decimal(0), Decimal(0), DurationBonus(1000, Decimal(0), Decimal(0)))
    now = datetime.now(UTC)
    for _ in range(100):
        inserts, records = {}, []
        for _ in range(10_000):
            task_id = str(uuid.uuid4())
            total = price(rate, input_tokens=1, output_tokens=0, duration_ms=5).total
            inserts[task_id] = task_row(task_id, now)
            records.append(record_row(task_id, total, now))
        store.write(Batch(inserts=inserts, updates={}, records=records))

    records_table = store.tables.records
    with store.connect() as connection:
        count = connection.execute(sa.select(sa.func.count()).select_from(records_table)).scalar_one()
        total = connection.execute(sa.select(money_sum(records_table.c.total))).scalar_one()

    assert count == 1_000_000
    assert total == Decimal(1)
    assert isinstance(total, Decimal)


def test_a_float_column_would_not_have_been_exact() -> None:
    """Why the care: the same sum in floats misses."""
    assert sum([0.000001] * 1_000_000) != 1.0


def test_get_task_of_an_unknown_id_is_none(make_app: MakeApp) -> None:
    app, earnings = make_app()

    with app.app_context():
        assert earnings.get_task("no-such-task") is None


def test_a_retried_write_cannot_pay_a_task_twice(database_url: str) -> None:
    store = store_for(database_url)
    now = datetime.now(UTC)
    batch = Batch(inserts={"t": task_row("t", now)}, updates={}, records=[record_row("t", Decimal("1"), now)])
    store.write(batch)

    with pytest.raises(sa.exc.IntegrityError):
        store.write(Batch(inserts={}, updates={}, records=[record_row("t", Decimal("1"), now)]))
    with store.connect() as connection:
        assert connection.execute(sa.select(money_sum(store.tables.records.c.total))).scalar_one() == 1
