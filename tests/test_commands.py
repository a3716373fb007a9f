"""``flask earnings report | tasks | rates``: the records and the rates from a shell."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask

from flask_earnings import Earnings
from flask_earnings.commands import earnings_cli
from flask_earnings.tasks import Task

from .conftest import MakeApp
from .records import store_tasks, varied_tasks


@pytest.fixture
def seeded(make_app: MakeApp) -> Iterator[tuple[Flask, Earnings, list[Task]]]:
    app, earnings = make_app()
    tasks = varied_tasks(300)
    store_tasks(app.extensions["earnings"].store, tasks)
    yield app, earnings, tasks


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(earnings_cli, list(args))


def earned(tasks: list[Task]) -> Decimal:
    return sum((task.earnings.total for task in tasks if task.earnings), Decimal(0))


def test_the_commands_are_registered_for_every_flask_app() -> None:
    found = [point for point in entry_points(group="flask.commands") if point.name == "earnings"]

    assert [point.load() for point in found] == [earnings_cli]


def test_the_flask_command_runs_them(tmp_path: Path) -> None:
    (tmp_path / "gateway.py").write_text(
        "from flask import Flask\nfrom flask_earnings import Earnings\n"
        f"app = Flask('gateway', instance_path={str(tmp_path / 'instance')!r})\nEarnings(app)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "gateway", "earnings", "report", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"]["tasks"] == 0


# report


def test_report_as_a_table_ends_with_the_total(seeded: tuple[Flask, Earnings, list[Task]]) -> None:
    app, _, tasks = seeded

    result = run(app, "report", "--group-by", "framework")

    assert result.exit_code == 0, result.output
    header, rule, ollama, vllm, rule_again, total = result.output.splitlines()
    assert set(rule) == set(rule_again) == {"-", " "}
    assert header.split()[:2] == ["framework", "tasks"] and header.split()[-1] == "earnings"
    assert ollama.split()[0] == "ollama" and vllm.split()[0] == "vllm"
    assert total.split()[:2] == ["total", str(len(tasks))]
    assert Decimal(total.split()[-1]) == earned(tasks)


def test_report_as_csv_sums_to_the_task_records(seeded: tuple[Flask, Earnings, list[Task]]) -> None:
    app, _, tasks = seeded

    result = run(app, "report", "-g", "day,task_type", "--format", "csv")

    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert {row["day"] for row in rows} == {"2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"}
    assert sum(int(row["tasks"]) for row in rows) == len(tasks)
    assert sum(int(row["completed"]) for row in rows) == sum(t.status.value == "completed" for t in tasks)
    assert sum(int(row["input_tokens"]) for row in rows) == sum(t.input_tokens or 0 for t in tasks)
    assert sum(Decimal(row["earnings"]) for row in rows) == earned(tasks)


def test_report_as_json_over_a_time_range_and_a_filter(seeded: tuple[Flask, Earnings, list[Task]]) -> None:
    app, _, tasks = seeded

    result = run(
        app,
        "report",
        "--since",
        "2026-12-02",
        "--until",
        "2026-12-03T12:00Z",
        "--where",
        "client=alice",
        "--format",
        "json",
    )

    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    chosen = [t for t in tasks if t.client == "alice" and "2026-12-02" <= t.created_at.isoformat() < "2026-12-03T12:00"]
    assert data["filters"] == {"client": "alice"} and data["since"] == "2026-12-02T00:00:00+00:00"
    assert data["total"]["tasks"] == len(chosen) > 0
    assert Decimal(data["total"]["earnings"]) == earned(chosen)


def test_report_to_a_file(seeded: tuple[Flask, Earnings, list[Task]], tmp_path: Path) -> None:
    app, _, tasks = seeded

    result = run(app, "report", "-g", "client", "--format", "csv", "--output", str(tmp_path / "report.csv"))

    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO((tmp_path / "report.csv").read_text())))
    assert [row["client"] for row in rows] == ["alice", "bob", ""]
    assert sum(Decimal(row["earnings"]) for row in rows) == earned(tasks)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["-g", "week"], "Cannot group by week"),
        (["--where", "colour=red"], "Cannot filter on colour"),
        (["--where", "client"], "NAME=VALUE"),
        (["--since", "last tuesday"], "is not a time"),
        (["--since", "2026-12-03", "--until", "2026-12-02"], "since must come before until"),
    ],
)
def test_report_refuses_what_it_cannot_do(
    seeded: tuple[Flask, Earnings, list[Task]], arguments: list[str], message: str
) -> None:
    result = run(seeded[0], "report", *arguments)

    assert result.exit_code == 2 and message in result.output


def test_report_of_no_tasks_says_so(make_app: MakeApp) -> None:
    app, _ = make_app()

    assert run(app, "report", "-g", "day").output == "No tasks.\n"
    assert json.loads(run(app, "report", "--format", "json").output)["total"]["tasks"] == 0


# tasks


def test_tasks_lists_the_newest_first_with_filters(seeded: tuple[Flask, Earnings, list[Task]]) -> None:
    app, _, tasks = seeded
    failed = sorted((t for t in tasks if t.status.value == "failed"), key=lambda t: t.created_at, reverse=True)

    result = run(app, "tasks", "--status", "failed", "--limit", "5")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["id", "created", "status"]
    assert [line.split()[0] for line in lines[2:]] == [task.id for task in failed[:5]]


def test_tasks_export_every_task_to_csv(seeded: tuple[Flask, Earnings, list[Task]], tmp_path: Path) -> None:
    app, _, tasks = seeded

    result = run(app, "tasks", "--limit", "0", "--format", "csv", "--output", str(tmp_path / "tasks.csv"))

    assert result.exit_code == 0, result.output
    assert "Exporting tasks" in result.output  # the progress bar's label, on standard error
    rows = list(csv.DictReader(io.StringIO((tmp_path / "tasks.csv").read_text())))
    assert sorted(row["id"] for row in rows) == sorted(task.id for task in tasks)
    assert sum(Decimal(row["total"]) for row in rows if row["total"]) == earned(tasks)


def test_tasks_as_json_lines(seeded: tuple[Flask, Earnings, list[Task]]) -> None:
    app, _, tasks = seeded

    result = run(app, "tasks", "--device", "gpu-0", "--framework", "vllm", "--limit", "0", "--format", "jsonl")

    lines = [json.loads(line) for line in result.output.splitlines()]
    assert {(line["framework"], line["device_id"]) for line in lines} == {("vllm", "gpu-0")}
    assert len(lines) == sum(t.framework == "vllm" and t.device_id == "gpu-0" for t in tasks)


def test_tasks_show_one(seeded: tuple[Flask, Earnings, list[Task]]) -> None:
    app, _, tasks = seeded
    task = next(t for t in tasks if t.earnings is not None)

    text = run(app, "tasks", "show", task.id)
    data = run(app, "tasks", "show", task.id, "--format", "json")

    assert text.exit_code == 0
    shown = dict(line.split(maxsplit=1) for line in text.output.splitlines() if len(line.split()) == 2)
    assert shown["status"] == task.status.value and shown["earnings.total"] == task.to_dict()["earnings"]["total"]
    assert json.loads(data.output) == task.to_dict()


def test_tasks_show_an_unknown_id(seeded: tuple[Flask, Earnings, list[Task]]) -> None:
    result = run(seeded[0], "tasks", "show", "no-such-task")

    assert result.exit_code == 1 and "There is no task 'no-such-task'" in result.output


# rates


def current(app: Flask, earnings: Earnings) -> tuple[int | None, dict[str, object]]:
    with app.app_context():
        version = app.extensions["earnings"].rate_book.refresh()
        return version.number, version.table.to_dict()


def test_rates_show(make_app: MakeApp) -> None:
    app, _ = make_app()

    result = run(app, "rates", "show")
    data = json.loads(run(app, "rates", "show", "--format", "json").output)

    assert result.output.startswith("Version 1 (config")
    assert "vllm/chat/completions: input=0.0015, output=0.003, base=0.015" in result.output
    assert data["version"] == 1 and data["table"]["vllm"]["chat/completions"]["input"] == "0.0015"


def test_rates_set_makes_a_version_by_the_local_user(make_app: MakeApp) -> None:
    app, earnings = make_app()

    result = run(app, "rates", "set", "vllm/chat/completions", "input=0.0012", "output=0.0024")

    assert result.exit_code == 0, result.output
    assert "vllm.chat/completions.input: 0.0015 -> 0.0012" in result.output
    number, table = current(app, earnings)
    assert number == 2 and table["vllm"]["chat/completions"]["input"] == "0.0012"  # type: ignore[index]
    with app.app_context():
        version = earnings.rate_version
    assert version.source == "cli" and version.actor and "@" in version.actor
    with app.app_context():
        assert earnings.calculate_earnings(
            "vllm", "chat/completions", input_tokens=1000, output_tokens=1000, duration_ms=0
        ).total == Decimal("3.615")


def test_rates_set_a_nested_field(make_app: MakeApp) -> None:
    app, earnings = make_app()

    result = run(app, "rates", "set", "duration_bonus", "cap=0.5")

    assert result.exit_code == 0, result.output
    assert current(app, earnings)[1]["duration_bonus"]["cap"] == "0.5"  # type: ignore[index]


@pytest.mark.parametrize(
    "arguments",
    [
        ["vllm/chat/completions", "input=-1"],
        ["vllm/chat/completions", "input=lots"],
        ["nosuch/chat", "input=1", "output=1", "base=1"],
    ],
)
def test_rates_set_refuses_a_bad_value_and_changes_nothing(make_app: MakeApp, arguments: list[str]) -> None:
    app, earnings = make_app()
    before = current(app, earnings)

    result = run(app, "rates", "set", *arguments)

    assert result.exit_code == 1 and "refused; nothing changed" in result.output
    assert current(app, earnings) == before


def test_rates_export_then_import_round_trips(make_app: MakeApp, tmp_path: Path) -> None:
    app, earnings = make_app()
    run(app, "rates", "set", "ollama/chat", "base=0.02")
    exported = tmp_path / "rates.json"
    assert run(app, "rates", "export", str(exported)).exit_code == 0
    run(app, "rates", "rollback", "1")

    result = run(app, "rates", "import", str(exported))

    assert result.exit_code == 0, result.output
    number, table = current(app, earnings)
    assert number == 4 and table == json.loads(exported.read_text())
    assert table["ollama"]["chat"]["base"] == "0.02"  # type: ignore[index]


def test_rates_import_refuses_an_invalid_file_and_changes_nothing(make_app: MakeApp, tmp_path: Path) -> None:
    app, earnings = make_app()
    before = current(app, earnings)
    broken, invalid = tmp_path / "broken.json", tmp_path / "invalid.json"
    broken.write_text("{not json")
    invalid.write_text(json.dumps({"vllm": {"chat/completions": {"input": "NaN", "output": "1", "base": "1"}}}))

    for path, message in [(broken, "is not valid JSON"), (invalid, "vllm.chat/completions.input")]:
        result = run(app, "rates", "import", str(path))
        assert result.exit_code == 1 and message in result.output, result.output

    assert current(app, earnings) == before
    assert "Version 1" in run(app, "rates", "history").output
    assert "Version 2" not in run(app, "rates", "history").output


def test_rates_import_with_a_stale_expected_version_changes_nothing(make_app: MakeApp, tmp_path: Path) -> None:
    app, earnings = make_app()
    exported = tmp_path / "rates.json"
    run(app, "rates", "export", str(exported))
    run(app, "rates", "set", "ollama/chat", "base=0.03")

    result = run(app, "rates", "import", str(exported), "--expect-version", "1")

    assert result.exit_code == 1 and "at version 2, not 1" in result.output
    assert current(app, earnings)[0] == 2


def test_rates_history_and_rollback(make_app: MakeApp) -> None:
    app, earnings = make_app()
    run(app, "rates", "set", "ollama/chat", "base=0.02")

    rolled = run(app, "rates", "rollback", "1")
    history = run(app, "rates", "history")

    assert rolled.exit_code == 0 and "version 3, the table of version 1" in rolled.output
    assert history.output.index("Version 3 (rollback") < history.output.index("Version 2 (cli")
    assert "back to version 1" in history.output and "ollama.chat.base: 0.01 -> 0.02" in history.output
    assert current(app, earnings)[1]["ollama"]["chat"]["base"] == "0.01"  # type: ignore[index]
    assert run(app, "rates", "rollback", "99").output.strip() == "Error: there is no rate version 99"


def test_rates_set_one_field_of_an_entrys_bonus_keeps_the_others(make_app: MakeApp) -> None:
    app, earnings = make_app()
    bonus = ["duration_bonus.threshold_ms=2000", "duration_bonus.per_ms=0.0001", "duration_bonus.cap=0.02"]
    assert run(app, "rates", "set", "ollama/chat", *bonus).exit_code == 0

    result = run(app, "rates", "set", "ollama/chat", "duration_bonus.cap=0.05")

    assert result.exit_code == 0, result.output
    assert current(app, earnings)[1]["ollama"]["chat"]["duration_bonus"] == {  # type: ignore[index]
        "threshold_ms": 2000,
        "per_ms": "0.0001",
        "cap": "0.05",
    }
