"""The summary every report reads: its figures are the sums over the task records, exactly."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from flask_earnings.reports import GROUPS, ReportError, ReportQuery, summary
from flask_earnings.storage import Store
from flask_earnings.tasks import Task, TaskStatus

from .records import SEED_START, store_for, store_tasks, varied_tasks


def key_of(task: Task, name: str) -> str | None:
    if name == "hour":
        return task.created_at.strftime("%Y-%m-%dT%H:00Z")
    if name == "day":
        return task.created_at.strftime("%Y-%m-%d")
    return getattr(task, "device_id" if name == "device" else name)  # type: ignore[no-any-return]


def expected(tasks: list[Task], group_by: tuple[str, ...]) -> dict[tuple[str | None, ...], dict[str, object]]:
    """The report worked out in Python, task by task."""
    groups: dict[tuple[str | None, ...], dict[str, object]] = defaultdict(
        lambda: {"tasks": 0, "by_status": defaultdict(int), "input": 0, "output": 0, "earnings": Decimal(0)}
    )
    for task in tasks:
        group = groups[tuple(key_of(task, name) for name in group_by)]
        group["tasks"] += 1  # type: ignore[operator]
        group["by_status"][task.status] += 1  # type: ignore[index]
        group["input"] += task.input_tokens or 0  # type: ignore[operator]
        group["output"] += task.output_tokens or 0  # type: ignore[operator]
        if task.earnings is not None:
            group["earnings"] += task.earnings.total  # type: ignore[operator]
    return groups


GROUPINGS = [(), *((name,) for name in GROUPS), ("framework", "task_type"), ("day", "model", "client")]


@pytest.fixture
def seeded(database_url: str) -> tuple[Store, list[Task]]:
    store = store_for(database_url)
    tasks = varied_tasks(600)
    store_tasks(store, tasks)
    return store, tasks


@pytest.mark.parametrize("group_by", GROUPINGS, ids=lambda g: "+".join(g) or "none")
def test_every_grouping_sums_to_the_task_records(seeded: tuple[Store, list[Task]], group_by: tuple[str, ...]) -> None:
    store, tasks = seeded
    report = summary(store, ReportQuery(group_by=group_by))
    wanted = expected(tasks, group_by)
    assert [row.key for row in report.rows] == sorted(wanted, key=lambda k: [(v is None, v or "") for v in k])
    for row in report.rows:
        group = wanted[row.key]
        assert row.tasks == group["tasks"]
        assert {s: c for s, c in row.by_status.items() if c} == dict(group["by_status"])  # type: ignore[call-overload]
        assert (row.input_tokens, row.output_tokens) == (group["input"], group["output"])
        assert row.earnings == group["earnings"]  # Decimal equality: to the last decimal
    assert report.total.tasks == len(tasks)
    assert report.total.earnings == sum((t.earnings.total for t in tasks if t.earnings), Decimal(0))


def test_a_time_range_takes_tasks_created_from_since_up_to_until(seeded: tuple[Store, list[Task]]) -> None:
    store, tasks = seeded
    since, until = SEED_START + timedelta(hours=5), SEED_START + timedelta(days=1, hours=3)
    report = summary(store, ReportQuery(group_by=("hour",), since=since, until=until))
    inside = [task for task in tasks if since <= task.created_at < until]
    assert 0 < len(inside) < len(tasks)
    assert report.total.tasks == len(inside)
    assert report.total.earnings == sum((t.earnings.total for t in inside if t.earnings), Decimal(0))
    assert report.rows[0].key == ("2026-12-02T03:00Z",) and report.rows[-1].key == ("2026-12-03T00:00Z",)


def test_filters_narrow_the_tasks_counted(seeded: tuple[Store, list[Task]]) -> None:
    store, tasks = seeded
    query = ReportQuery(group_by=("model",), filters={"framework": "ollama", "status": "completed", "device": "gpu-1"})
    report = summary(store, query)
    chosen = [
        t for t in tasks if t.framework == "ollama" and t.status is TaskStatus.COMPLETED and t.device_id == "gpu-1"
    ]
    assert report.total.tasks == len(chosen) > 0
    assert report.total.by_status[TaskStatus.COMPLETED] == len(chosen)
    assert report.total.earnings == sum((t.earnings.total for t in chosen if t.earnings), Decimal(0))


def test_a_report_of_no_tasks_is_zero(database_url: str) -> None:
    report = summary(store_for(database_url), ReportQuery(group_by=("day",)))
    assert report.rows == [] and report.total.tasks == 0 and report.total.earnings == 0


def test_its_dict_carries_money_as_exact_text(seeded: tuple[Store, list[Task]]) -> None:
    store, tasks = seeded
    data = summary(store, ReportQuery(group_by=("framework",))).to_dict()
    assert data["group_by"] == ["framework"]
    assert [row["framework"] for row in data["rows"]] == ["ollama", "vllm"]
    assert Decimal(data["total"]["earnings"]) == sum((t.earnings.total for t in tasks if t.earnings), Decimal(0))
    assert sum(Decimal(row["earnings"]) for row in data["rows"]) == Decimal(data["total"]["earnings"])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"group_by": ("week",)}, "Cannot group by week"),
        ({"group_by": ("day", "day")}, "once"),
        ({"filters": {"owner": "x"}}, "Cannot filter on owner"),
        ({"since": datetime(2026, 12, 2)}, "aware"),
        ({"since": datetime(2026, 12, 2, tzinfo=UTC), "until": datetime(2026, 12, 1, tzinfo=UTC)}, "before"),
    ],
)
def test_a_query_for_what_does_not_exist_is_refused_clearly(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ReportError, match=message):
        ReportQuery(**arguments)  # type: ignore[arg-type]


def test_groupings_cover_every_pair(seeded: tuple[Store, list[Task]]) -> None:
    store, tasks = seeded
    for pair in itertools.combinations(GROUPS, 2):
        report = summary(store, ReportQuery(group_by=pair))
        assert report.total.tasks == len(tasks)
        assert sum(row.earnings for row in report.rows) == report.total.earnings
        assert len(report.rows) == len(expected(tasks, pair))
