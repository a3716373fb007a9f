"""The dashboard's report as CSV and as JSON: the same summary as the page and the command."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from flask import Flask

from flask_earnings.admin.chart import earnings_chart
from flask_earnings.tasks import Task

from .conftest import MakeApp
from .records import SEED_START, a_task, earned, store_tasks, varied_tasks

TOKEN = "s3cret-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def seeded(make_app: MakeApp, tasks: list[Task]) -> Flask:
    app, _ = make_app(admin_token=TOKEN)
    store_tasks(app.extensions["earnings"].store, tasks)
    return app


def total(tasks: list[Task]) -> Decimal:
    return sum((task.earnings.total for task in tasks if task.earnings), Decimal(0))


def test_the_csv_download_is_the_report_by_time_framework_and_task_type(make_app: MakeApp) -> None:
    tasks = varied_tasks(300)
    app = seeded(make_app, tasks)

    response = app.test_client().get("/earnings/report.csv?unit=day&client=bob", headers=AUTH)

    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == 'attachment; filename="earnings-by-day.csv"'
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert list(rows[0])[:3] == ["day", "framework", "task_type"]
    bobs = [task for task in tasks if task.client == "bob"]
    assert sum(int(row["tasks"]) for row in rows) == len(bobs)
    assert sum(Decimal(row["earnings"]) for row in rows) == total(bobs)


def test_the_page_and_its_csv_agree(make_app: MakeApp) -> None:
    app = seeded(make_app, varied_tasks(200))
    client = app.test_client()

    page = client.get("/earnings/?since=2026-12-02&until=2026-12-03", headers=AUTH).get_data(as_text=True)
    download = client.get("/earnings/report.csv?since=2026-12-02&until=2026-12-03", headers=AUTH)

    on_page = page.split('id="total-earnings">')[1].split("<")[0]
    rows = list(csv.DictReader(io.StringIO(download.get_data(as_text=True))))
    assert sum(Decimal(row["earnings"]) for row in rows) == Decimal(on_page)
    assert {row["day"] for row in rows} == {"2026-12-02", "2026-12-03"}


def test_the_json_report(make_app: MakeApp) -> None:
    tasks = varied_tasks(200)
    app = seeded(make_app, tasks)

    response = app.test_client().get(
        "/earnings/api/report?group_by=framework&group_by=status_is_not_a_group", headers=AUTH
    )
    assert response.status_code == 400 and "Cannot group by status_is_not_a_group" in response.json["message"]

    data = app.test_client().get("/earnings/api/report?group_by=framework&framework=vllm", headers=AUTH).json
    vllm = [task for task in tasks if task.framework == "vllm"]
    assert [row["framework"] for row in data["rows"]] == ["vllm"]
    assert data["total"]["tasks"] == len(vllm) and Decimal(data["total"]["earnings"]) == total(vllm)


def test_the_report_is_closed_to_strangers(make_app: MakeApp) -> None:
    app = seeded(make_app, varied_tasks(10))
    client = app.test_client()

    assert client.get("/earnings/report.csv").status_code == 401
    assert client.get("/earnings/api/report").status_code == 401


def test_a_bad_filter_is_answered_400_and_named(make_app: MakeApp) -> None:
    app = seeded(make_app, varied_tasks(10))
    client = app.test_client()

    for query, message in [
        ("since=yesterday", "since must be a day"),
        ("status=lost", "There is no status &#39;lost&#39;"),
        ("unit=week", "by hour or by day"),
    ]:
        page = client.get(f"/earnings/?{query}", headers=AUTH)
        assert page.status_code == 400 and message in page.get_data(as_text=True), query
        assert client.get(f"/earnings/report.csv?{query}", headers=AUTH).status_code == 400


def test_an_hourly_chart_of_months_shows_days(make_app: MakeApp) -> None:
    months_apart = [
        a_task("early", SEED_START, earnings=earned(Decimal("1.5"))),
        a_task("late", SEED_START + timedelta(days=60), earnings=earned(Decimal("2.25"))),
    ]
    app = seeded(make_app, months_apart)

    page = app.test_client().get("/earnings/?unit=hour", headers=AUTH).get_data(as_text=True)

    assert "More than 400 hours: the chart shows days." in page
    assert page.count('class="bar"') == 61
    assert 'data-bucket="2026-12-01" data-earnings="1.5"' in page
    assert 'data-bucket="2027-01-30" data-earnings="2.25"' in page


def test_the_chart_fills_quiet_hours_and_rounds_its_axis() -> None:
    chart = earnings_chart("hour", {"2026-12-04T10:00Z": (Decimal("3.7"), 2), "2026-12-04T13:00Z": (Decimal("0"), 1)})

    assert [bar.bucket for bar in chart.bars] == [f"2026-12-04T{hour}:00Z" for hour in (10, 11, 12, 13)]
    assert [tick.label for tick in chart.ticks] == ["0", "1.25", "2.5", "3.75", "5"]
    assert chart.bars[0].height == pytest.approx((240 - 28 - 10) * 3.7 / 5)
    assert [bar.height for bar in chart.bars[1:]] == [0, 0, 0]
    assert chart.bars[0].label == "12-04 10:00"


def test_a_chart_of_nothing_earned_has_no_height() -> None:
    chart = earnings_chart("day", {"2026-12-04": (Decimal(0), 3)})

    assert [bar.height for bar in chart.bars] == [0] and chart.ticks[-1].label == "1"
