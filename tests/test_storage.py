"""Money is stored so that it reads back equal, and sums exactly, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from flask_earnings.money import money_sum
from flask_earnings.pricing import price
from flask_earnings.rates import DurationBonus, Rate
from flask_earnings.rows import Batch, record_row, statement_sizes, task_row
from flask_earnings.tasks import TaskStatus

from .conftest import MakeApp
from .records import a_task, batch_of, store_for


@pytest.mark.parametrize(
    "amount",
    ["0.000000000000000001", "999999999.999999999999999999", "3.577", "0", "1E+3", "0.1"],
)
def test_an_amount_reads_back_equal(database_url: str, amount: str) -> None:
    store = store_for(database_url)
    now = datetime.now(UTC)
    store.write(batch_of(a_task("t", now), now=now, earnings=Decimal(amount)))

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
    template = a_task("", now)
    for _ in range(100):
        batch = Batch()
        for _ in range(10_000):
            task_id = str(uuid.uuid4())
            earnings = price(rate, input_tokens=1, output_tokens=0, duration_ms=5)
            batch.add_task(task_row(dataclasses.replace(template, id=task_id), owner="test"))
            batch.records.append(record_row(task_id, earnings, 1, now))
        store.write(batch)

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


def test_a_repeated_write_stores_a_task_and_its_earnings_once(database_url: str) -> None:
    store = store_for(database_url)
    now = datetime.now(UTC)
    batch = batch_of(a_task("t", now), now=now, earnings=Decimal("1.5"))

    for _ in range(3):
        store.write(batch)

    with store.connect() as connection:
        tasks = connection.execute(sa.select(sa.func.count()).select_from(store.tables.tasks)).scalar_one()
        records = connection.execute(sa.select(sa.func.count()).select_from(store.tables.records)).scalar_one()
        total = connection.execute(sa.select(money_sum(store.tables.records.c.total))).scalar_one()
    assert (tasks, records, total) == (1, 1, Decimal("1.5"))


@pytest.mark.parametrize(
    ("first", "then", "kept"),
    [
        ("running", "completed", "completed"),
        ("completed", "running", "completed"),
        ("running", "interrupted", "interrupted"),
        ("interrupted", "completed", "completed"),
        ("completed", "interrupted", "completed"),
        ("failed", "completed", "failed"),
        ("interrupted", "running", "interrupted"),
    ],
)
def test_a_task_row_only_moves_forward(database_url: str, first: str, then: str, kept: str) -> None:
    """So a replay, in whatever order it comes, never undoes a task's end."""
    store = store_for(database_url)
    now = datetime.now(UTC)

    store.write(batch_of(a_task("t", now, TaskStatus(first), error=first), now=now))
    store.write(batch_of(a_task("t", now, TaskStatus(then), error=then), now=now))

    task = store.load_task("t")
    assert task is not None
    assert (task.status.value, task.error) == (kept, kept)


def test_batches_of_any_size_are_stored_whole_through_a_few_statements(database_url: str) -> None:
    """A statement for every number of rows would pile up in the driver's statement cache."""
    store = store_for(database_url)
    now = datetime.now(UTC)
    sizes = [1, 2, 3, 7, 199, 200, 201, 333, 455, 1000]

    for size in sizes:
        tasks = [a_task(uuid.uuid4().hex, now) for _ in range(size)]
        store.write(batch_of(*tasks, now=now, earnings=Decimal("0.001")))

    with store.connect() as connection:
        stored = connection.execute(sa.select(sa.func.count()).select_from(store.tables.tasks)).scalar_one()
        total = connection.execute(sa.select(money_sum(store.tables.records.c.total))).scalar_one()
    assert (stored, total) == (sum(sizes), Decimal("0.001") * sum(sizes))
    assert store._row_writer is not None
    assert len(store._row_writer._statements) <= 2 * 9  # 200 rows and each power of two below it


def test_rows_are_split_into_full_statements_and_powers_of_two() -> None:
    assert list(statement_sizes(0)) == []
    assert list(statement_sizes(455)) == [200, 200, 32, 16, 4, 2, 1]
    assert all(sum(statement_sizes(rows)) == rows for rows in range(1000))
