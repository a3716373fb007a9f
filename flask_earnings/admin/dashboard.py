"""The dashboard: earnings over time, the breakdown by framework and task type, recent tasks,
filters, and the same report as a CSV download.

Every figure comes from :func:`flask_earnings.reports.summary`, so the chart, the tables, the
CSV and ``flask earnings report`` agree to the last decimal.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from flask import Blueprint, render_template, request
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from ..money import format_money
from ..queries import TaskQuery, list_tasks
from ..reports import ReportError, ReportQuery, ReportRow, csv_header, csv_rows, summary, task_column
from ..tasks import TaskStatus
from .auth import actor, app_state, csrf_token
from .chart import MAX_BARS, buckets_between, earnings_chart

dashboard = Blueprint("dashboard", __name__)

#: The filters of the form, by the name a report knows them by.
TEXT_FILTERS = ("framework", "task_type", "model", "client", "device")
RECENT = 20


@dataclass(frozen=True, slots=True)
class Filters:
    """What the form asks for: ``since`` and ``until`` are whole days (UTC), ``until`` included."""

    since: date | None
    until: date | None
    unit: str
    chosen: Mapping[str, str]

    @classmethod
    def from_args(cls, args: MultiDict[str, str]) -> Filters:
        chosen = {name: args[name].strip() for name in (*TEXT_FILTERS, "status") if args.get(name, "").strip()}
        if "status" in chosen and chosen["status"] not in {status.value for status in TaskStatus}:
            raise ReportError(f"There is no status {chosen['status']!r}.")
        unit = args.get("unit", "day")
        if unit not in ("hour", "day"):
            raise ReportError("Show the earnings by hour or by day.")
        return cls(_day(args, "since"), _day(args, "until"), unit, chosen)

    def report(self, *group_by: str) -> ReportQuery:
        return ReportQuery(group_by=group_by, since=self._start(), until=self._end(), filters=self.chosen)

    def tasks(self) -> TaskQuery:
        filters = {task_column(name): value for name, value in self.chosen.items()}
        return TaskQuery(filters=filters, since=self._start(), until=self._end(), limit=RECENT)

    def query_string(self) -> dict[str, str]:
        """The form's values, for the CSV link: the download is the report on the page."""
        values = {name: value for name, value in self.chosen.items()}
        values["unit"] = self.unit
        if self.since is not None:
            values["since"] = self.since.isoformat()
        if self.until is not None:
            values["until"] = self.until.isoformat()
        return values

    def _start(self) -> datetime | None:
        return None if self.since is None else datetime.combine(self.since, datetime.min.time(), UTC)

    def _end(self) -> datetime | None:
        return (
            None if self.until is None else datetime.combine(self.until + timedelta(days=1), datetime.min.time(), UTC)
        )


@dashboard.get("/")
def overview() -> str | tuple[str, int]:
    try:
        filters = Filters.from_args(request.args)
        by_time = summary(app_state().store, filters.report(filters.unit))
    except ReportError as error:
        return _page(problem=str(error)), 400
    note = None
    if filters.unit == "hour" and _too_many_hours(by_time.rows):
        note = f"More than {MAX_BARS} hours: the chart shows days."
        filters = Filters(filters.since, filters.until, "day", filters.chosen)
        by_time = summary(app_state().store, filters.report("day"))
    state = app_state()
    chart = earnings_chart(filters.unit, {row.key[0] or "": (row.earnings, row.tasks) for row in by_time.rows})
    return _page(
        filters=filters,
        chart=chart,
        note=note,
        totals=by_time.total,
        breakdown=summary(state.store, filters.report("framework", "task_type")),
        recent=list_tasks(state.store, filters.tasks()),
    )


@dashboard.get("/report.csv")
def report_csv() -> Response | tuple[str, int]:
    """The dashboard's report by time, framework and task type; its rows sum to the page's totals."""
    try:
        filters = Filters.from_args(request.args)
        report = summary(app_state().store, filters.report(filters.unit, "framework", "task_type"))
    except ReportError as error:
        return _page(problem=str(error)), 400
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(csv_header(report))
    writer.writerows(csv_rows(report))
    name = f"earnings-by-{filters.unit}.csv"
    return Response(
        text.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


def _page(**context: object) -> str:
    state = app_state()
    context.setdefault("filters", None)
    return render_template(
        "earnings/overview.html",
        statuses=list(TaskStatus),
        money=format_money,
        version=state.rate_book.current(),
        csrf_token=csrf_token(),
        actor=actor(),
        **context,
    )


def _midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)


def _day(args: MultiDict[str, str], name: str) -> date | None:
    value = args.get(name, "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ReportError(f"{name} must be a day, like 2026-12-04.") from None


def _too_many_hours(rows: list[ReportRow]) -> bool:
    keys = sorted(row.key[0] for row in rows if row.key[0])
    return bool(keys) and len(buckets_between(keys[0], keys[-1], "hour")) > MAX_BARS
