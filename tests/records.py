"""Task records made directly (not through calls), for tests that read records back."""

from __future__ import annotations

import dataclasses
import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from flask_earnings.rows import Batch, record_row, task_row
from flask_earnings.storage import Store, define_tables, standalone_engine
from flask_earnings.tasks import EarningsBreakdown, Task, TaskStatus, TokensSource

#: Where seeded tasks start: the report tests group them into its hours and days.
SEED_START = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)


def store_for(url: str) -> Store:
    return Store(define_tables(sa.MetaData()), lambda: standalone_engine(url), owned=True)


def a_task(task_id: str, now: datetime, status: TaskStatus = TaskStatus.COMPLETED, **changes: Any) -> Task:
    task = Task(
        id=task_id,
        request_id=None,
        status=status,
        framework="vllm",
        protocol="openai",
        task_type="embeddings",
        endpoint="/v1/embeddings",
        model="m",
        device_id=None,
        client=None,
        streamed=False,
        input_tokens=1,
        output_tokens=0,
        cached_tokens=None,
        reasoning_tokens=None,
        tokens_source=TokensSource.REPORTED,
        created_at=now,
        started_at=now,
        finished_at=now,
        duration_ms=0,
        http_status=200,
        error=None,
        rate_version=1,
        earnings=None,
    )
    return dataclasses.replace(task, **changes)


def earned(total: Decimal) -> EarningsBreakdown:
    return EarningsBreakdown(total, Decimal(0), Decimal(0), Decimal(0), total)


def batch_of(*tasks: Task, now: datetime, earnings: Decimal | None = None) -> Batch:
    batch = Batch()
    for task in tasks:
        batch.add_task(task_row(task, owner="test"))
        if earnings is not None:
            batch.records.append(record_row(task.id, earned(earnings), 1, now))
    return batch


ROUTES = [
    ("ollama", "ollama", "chat", "/api/chat"),
    ("ollama", "ollama", "generate", "/api/generate"),
    ("vllm", "openai", "chat/completions", "/v1/chat/completions"),
    ("vllm", "openai", "embeddings", "/v1/embeddings"),
]
MODELS = ["llama3.2", "Qwen/Qwen2.5-7B-Instruct", None]
CLIENTS = ["alice", "bob", None]
DEVICES = ["gpu-0", "gpu-1", None]
STATUSES = [TaskStatus.COMPLETED] * 5 + [TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.RUNNING]


def varied_tasks(count: int, seed: int = 7, start: datetime = SEED_START) -> list[Task]:
    """``count`` tasks over three days, of every route, model, client, device and status, each
    completed one (and some cancelled ones) earning an odd amount with many decimals."""
    chance = random.Random(seed)
    tasks = []
    for _ in range(count):
        framework, protocol, task_type, endpoint = chance.choice(ROUTES)
        status = chance.choice(STATUSES)
        created = start + timedelta(seconds=chance.randrange(3 * 24 * 3600), microseconds=chance.randrange(10**6))
        earns = status is TaskStatus.COMPLETED or (status is TaskStatus.CANCELLED and chance.random() < 0.5)
        total = Decimal(chance.randrange(1, 10**9)).scaleb(-chance.randrange(0, 12)) if earns else None
        tasks.append(
            a_task(
                uuid.uuid4().hex,
                created,
                status,
                framework=framework,
                protocol=protocol,
                task_type=task_type,
                endpoint=endpoint,
                model=chance.choice(MODELS),
                client=chance.choice(CLIENTS),
                device_id=chance.choice(DEVICES),
                input_tokens=None if status is TaskStatus.RUNNING else chance.randrange(0, 5000),
                output_tokens=None if status is TaskStatus.RUNNING else chance.randrange(0, 5000),
                earnings=None if total is None else earned(total),
            )
        )
    return tasks


def store_tasks(store: Store, tasks: list[Task]) -> None:
    batch = Batch()
    now = datetime.now(UTC)
    for task in tasks:
        batch.add_task(task_row(task, owner="test"))
        if task.earnings is not None:
            batch.records.append(record_row(task.id, task.earnings, task.rate_version, now))
    store.write(batch)
