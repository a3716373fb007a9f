"""``flask earnings report`` and ``flask earnings tasks``: reading the records from a shell."""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import IO, Any

import click
from flask.cli import with_appcontext

from ..money import format_money
from ..queries import TaskQuery, count_tasks, iter_tasks
from ..reports import FILTERS, GROUPS, Report, ReportError, ReportQuery, csv_header, csv_rows, summary, task_column
from ..tasks import EarningsBreakdown, Task, TaskStatus
from .group import app_state, earnings_cli, moment

#: The columns of ``flask earnings tasks`` as a table.
#: The columns of a CSV export of tasks: every field, the earnings broken down.
TASK_CSV_COLUMNS = (
    *(name for name in Task.__dataclass_fields__ if name != "earnings"),
    *EarningsBreakdown.__dataclass_fields__,
)
TASK_COLUMNS = ("id", "created", "status", "framework", "task_type", "model", "client", "in", "out", "ms", "earned")


@earnings_cli.command("report")
@click.option("--since", callback=moment, help="Tasks created from then on (ISO 8601, or 24h, 7d ago).")
@click.option("--until", callback=moment, help="Tasks created before then.")
@click.option(
    "--group-by",
    "-g",
    "group_by",
    multiple=True,
    metavar="NAME[,NAME]",
    help=f"Group by any of: {', '.join(GROUPS)} (repeat, or separate by commas).",
)
@click.option(
    "--where",
    "-w",
    "where",
    multiple=True,
    metavar="NAME=VALUE",
    help=f"Only tasks whose NAME is VALUE; NAME is one of {', '.join(FILTERS)}.",
)
@click.option("--format", "form", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, writable=True), help="A file (standard output if none)."
)
@with_appcontext
def report_command(
    since: datetime | None,
    until: datetime | None,
    group_by: Sequence[str],
    where: Sequence[str],
    form: str,
    output: str | None,
) -> None:
    """Tasks by status, tokens and earnings, grouped, over a time range (all time by default).

    \b
    flask earnings report --since 7d --group-by day
    flask earnings report -g framework,task_type --where client=alice --format csv -o report.csv
    """
    groups = tuple(name.strip() for names in group_by for name in names.split(",") if name.strip())
    try:
        query = ReportQuery(group_by=groups, since=since, until=until, filters=_pairs(where))
    except ReportError as error:
        raise click.UsageError(str(error)) from None
    found = summary(app_state().store, query)
    with _opened(output) as file:
        if form == "json":
            json.dump(found.to_dict(), file, indent=2)
            file.write("\n")
        elif form == "csv":
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(csv_header(found))
            writer.writerows(csv_rows(found))
        else:
            file.write(_report_table(found))


@earnings_cli.group("tasks", invoke_without_command=True)
@click.option("--status", type=click.Choice([status.value for status in TaskStatus]))
@click.option("--framework")
@click.option("--task-type")
@click.option("--model")
@click.option("--client")
@click.option("--device", help="The task's device id.")
@click.option("--since", callback=moment, help="Created from then on (ISO 8601, or 24h, 7d ago).")
@click.option("--until", callback=moment, help="Created before then.")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True, help="0 for all of them.")
@click.option("--format", "form", type=click.Choice(["table", "csv", "jsonl"]), default="table", show_default=True)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, writable=True), help="A file (standard output if none)."
)
@with_appcontext
@click.pass_context
def tasks_command(
    ctx: click.Context,
    /,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    form: str,
    output: str | None,
    **filters: str | None,
) -> None:
    """The newest tasks, filtered; ``--limit 0 --format csv -o FILE`` exports them all.

    \b
    flask earnings tasks --status failed --since 24h
    flask earnings tasks show TASK_ID
    """
    if ctx.invoked_subcommand is not None:
        return
    chosen = {task_column(name): value for name, value in filters.items() if value is not None}
    query = TaskQuery(filters=chosen, since=since, until=until, limit=limit or None)
    store = app_state().store
    tasks = iter_tasks(store, query)
    if output is None:
        _write_tasks(tasks, form, sys.stdout)
        return
    found = count_tasks(store, query)
    length = min(found, limit) if limit else found
    with _opened(output) as file, click.progressbar(tasks, length=length, label="Exporting tasks") as bar:
        _write_tasks(bar, form, file)
    click.echo(f"Wrote {output}.", err=True)


@tasks_command.command("show")
@click.argument("task_id")
@click.option("--format", "form", type=click.Choice(["text", "json"]), default="text", show_default=True)
@with_appcontext
def show_task_command(task_id: str, form: str) -> None:
    """One task, every field."""
    task = app_state().store.load_task(task_id)
    if task is None:
        raise click.ClickException(f"There is no task {task_id!r}.")
    data = task.to_dict()
    if form == "json":
        click.echo(json.dumps(data, indent=2))
        return
    earnings = data.pop("earnings", None) or {}
    width = max(map(len, [*data, *earnings]))
    for name, value in [*data.items(), *(("earnings." + k, v) for k, v in earnings.items())]:
        click.echo(f"{name:<{width + 9}} {'' if value is None else value}")


@contextlib.contextmanager
def _opened(path: str | None) -> Iterator[IO[str]]:
    if path is None:
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8", newline="") as file:
        yield file


def _pairs(where: Sequence[str]) -> dict[str, str]:
    pairs = {}
    for item in where:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise click.UsageError(f"--where takes NAME=VALUE, not {item!r}.")
        pairs[name.strip()] = value
    return pairs


def _write_tasks(tasks: Iterable[Task], form: str, output: IO[str]) -> None:
    if form == "jsonl":
        for task in tasks:
            output.write(json.dumps(task.to_dict()) + "\n")
    elif form == "csv":
        writer = csv.writer(output, lineterminator="\n")
        writer.writerow(TASK_CSV_COLUMNS)
        for task in tasks:
            data = task.to_dict()
            data.update(data.pop("earnings") or {})
            writer.writerow(["" if data.get(name) is None else data[name] for name in TASK_CSV_COLUMNS])
    else:
        rows = [_task_cells(task) for task in tasks]
        output.write(_table(TASK_COLUMNS, rows, numbers=range(7, 11)) if rows else "No tasks.\n")


def _task_cells(task: Task) -> list[str]:
    estimated = "*" if task.tokens_source is not None and task.tokens_source.value == "estimated" else ""
    return [
        task.id,
        task.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        task.status.value,
        task.framework,
        task.task_type,
        task.model or "",
        task.client or "",
        "" if task.input_tokens is None else f"{task.input_tokens}{estimated}",
        "" if task.output_tokens is None else str(task.output_tokens),
        "" if task.duration_ms is None else str(task.duration_ms),
        "" if task.earnings is None else format_money(task.earnings.total),
    ]


def _report_table(report: Report) -> str:
    if not report.rows:
        return "No tasks.\n"
    statuses = [status for status in TaskStatus if report.total.by_status[status]]
    header = [*report.query.group_by, "tasks", *(status.value for status in statuses), "in", "out", "earnings"]

    def cells(key: Sequence[Any], row: Any) -> list[str]:
        return [
            *("-" if value is None else str(value) for value in key),
            str(row.tasks),
            *(str(row.by_status[status]) for status in statuses),
            str(row.input_tokens),
            str(row.output_tokens),
            format_money(row.earnings),
        ]

    groups = len(report.query.group_by)
    if not groups:
        return _table(header, [cells([], report.total)], numbers=range(len(header)))
    rows = [cells(row.key, row) for row in report.rows]
    total = cells(["total", *[""] * (groups - 1)], report.total)
    return _table(header, [*rows, total], numbers=range(groups, len(header)), rule_before_last=True)


def _table(
    header: Sequence[str], rows: list[list[str]], *, numbers: Iterable[int], rule_before_last: bool = False
) -> str:
    """Plain aligned columns, numbers on the right: readable in any terminal and in a log."""
    right = set(numbers)
    widths = [max(len(line[column]) for line in [list(header), *rows]) for column in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if column in right else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    body = [line(row) for row in rows]
    if rule_before_last:
        body.insert(len(body) - 1, rule)
    return "\n".join([line(header), rule, *body]) + "\n"
