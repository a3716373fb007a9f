"""``flask earnings init-db`` and ``flask earnings spool status | replay``, run as an operator would.

The apps here track nothing (``enabled=False``) unless a test makes calls: a tracking app's own
writer would recover the same spool files in the background, a second or so after it starts,
and the commands are what these tests are about.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import pytest
import sqlalchemy as sa
from click.testing import Result
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_earnings import Earnings, TaskStatus
from flask_earnings.commands import earnings_cli
from flask_earnings.money import money_sum
from flask_earnings.owners import Owner
from flask_earnings.spool import Journal, Spool

from . import payloads
from .conftest import MakeApp
from .helpers import add_upstream_view, call
from .records import a_task, batch_of
from .test_durability import a_dead_owner, started

HERE = Owner.current()
EARNINGS_TABLES = "earnings_tasks, earnings_records, earnings_rate_versions"

#: A database that cannot be reached, of each kind, and what its driver says about it.
UNREACHABLE = {
    "sqlite": (lambda tmp: f"sqlite:///{tmp / 'no-such-folder' / 'earnings.sqlite3'}", "unable to open database file"),
    "postgresql": (lambda tmp: "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=5", "refused"),
}

AppOn = Callable[..., tuple[Flask, Earnings]]


def invoke(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(earnings_cli, list(args))


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def app_on(tmp_path: Path, spool_dir: Path) -> Iterator[AppOn]:
    """``app_on(database_uri, **options)``: an app whose records go to that one database."""
    made: list[Flask] = []

    def make(database_uri: str, **options: Any) -> tuple[Flask, Earnings]:
        app = Flask(f"operations_{len(made)}", instance_path=str(tmp_path / "instance"))
        options.setdefault("enabled", False)
        earnings = Earnings(app, database_uri=database_uri, spool_dir=str(spool_dir), **options)
        made.append(app)
        return app, earnings

    yield make
    for app in made:
        app.extensions["earnings"].recorder.stop(10)


@pytest.fixture(params=sorted(UNREACHABLE))
def unreachable(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """The URL of a database that is away, and the words its driver says it in."""
    url, words = UNREACHABLE[request.param]
    return url(tmp_path), words


@pytest.fixture
def sqlalchemy_app(database_url: str, tmp_path: Path, spool_dir: Path) -> Iterator[tuple[Flask, Earnings]]:
    """An app that keeps the tables in its own Flask-SQLAlchemy database (``Earnings(db=db)``)."""
    app = Flask("with_db", instance_path=str(tmp_path / "instance"))
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    db = SQLAlchemy()
    db.init_app(app)
    earnings = Earnings(app, db=db, spool_dir=str(spool_dir))
    yield app, earnings
    app.extensions["earnings"].recorder.stop(10)
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def live_process() -> Iterator[Owner]:
    """Another process of this host, running: a gunicorn worker still at work, say."""
    code = "from flask_earnings.owners import Owner; print(Owner.current(), flush=True); input()"
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdin is not None and process.stdout is not None
    owner = Owner.parse(process.stdout.readline().strip())
    assert owner is not None
    yield owner
    process.stdin.close()
    process.wait(10)
    process.stdout.close()


def spool_of(directory: Path, owner: Owner, *task_ids: str, total: str = "0.000001") -> Path:
    """``owner``'s spool file: a batch per task, each task completed and earning ``total``."""
    spool = Spool(directory, owner)
    now = datetime.now(UTC)
    for task_id in task_ids:
        spool.append(batch_of(a_task(task_id, now), now=now, earnings=Decimal(total)))
    [path] = spool.take()
    return path


def files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir()} if directory.is_dir() else {}


def lines_by_file(output: str) -> dict[str, str]:
    return {line.split(":")[0].strip(): line for line in output.splitlines() if line.startswith("  ")}


def stored(app: Flask, earnings: Earnings, *task_ids: str) -> dict[str, TaskStatus | None]:
    with app.app_context():
        return {task_id: getattr(earnings.get_task(task_id), "status", None) for task_id in task_ids}


# init-db


def test_init_db_creates_the_tables_then_finds_them(make_app: MakeApp) -> None:
    app, _ = make_app(enabled=False)

    first = invoke(app, "init-db")
    again = invoke(app, "init-db")

    assert first.exit_code == 0, first.output
    assert f"Created: {EARNINGS_TABLES}" in first.output
    assert again.exit_code == 0, again.output
    assert f"Already there: {EARNINGS_TABLES}" in again.output and "Created" not in again.output
    with app.app_context():
        tables = set(sa.inspect(app.extensions["earnings"].store.engine).get_table_names())
    assert set(EARNINGS_TABLES.split(", ")) <= tables


def test_init_db_creates_the_tables_in_the_apps_own_database(sqlalchemy_app: tuple[Flask, Earnings]) -> None:
    """With ``db=`` the app owns the schema and the extension never creates the tables on
    its own; init-db does, for an app without migrations."""
    app, earnings = sqlalchemy_app
    add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))
    engine = app.extensions["earnings"].store.engine
    assert not set(EARNINGS_TABLES.split(", ")) & set(sa.inspect(engine).get_table_names())

    result = invoke(app, "init-db")

    assert result.exit_code == 0, result.output
    assert f"Created: {EARNINGS_TABLES}" in result.output
    _, task = call(app, earnings, "/api/embed", payloads.ollama_embed_request())
    assert task.status is TaskStatus.COMPLETED and task.earnings is not None


def test_init_db_names_the_columns_an_older_table_lacks(make_app: MakeApp) -> None:
    app, _ = make_app(enabled=False)
    assert invoke(app, "init-db").exit_code == 0
    with app.app_context(), app.extensions["earnings"].store.engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE earnings_tasks DROP COLUMN owner"))

    result = invoke(app, "init-db")

    assert result.exit_code == 1
    assert "earnings_tasks lacks owner" in result.output
    assert "does not change existing ones" in result.output


def test_init_db_says_clearly_when_the_database_cannot_be_reached(app_on: AppOn, unreachable: tuple[str, str]) -> None:
    url, words = unreachable
    app, _ = app_on(url)

    result = invoke(app, "init-db")

    assert result.exit_code == 1
    assert "Error: Could not create the tables in" in result.output and words in result.output


# spool status


def test_spool_status_says_when_nothing_waits(app_on: AppOn, tmp_path: Path, spool_dir: Path) -> None:
    app, _ = app_on(f"sqlite:///{tmp_path / 'earnings.sqlite3'}")

    before = invoke(app, "spool", "status")
    spool_dir.mkdir()
    empty = invoke(app, "spool", "status")

    for result in (before, empty):
        assert result.exit_code == 0, result.output
        assert (
            result.output
            == f"Spool directory: {spool_dir}\nEmpty: no batches wait for the database, no journal is open.\n"
        )


def test_spool_status_lists_each_file_whose_it_is_and_what_is_in_it(
    app_on: AppOn, spool_dir: Path, live_process: Owner
) -> None:
    """It reads the files only: it works while the database is away, and claims nothing."""
    app, _ = app_on("postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=5")
    dead = a_dead_owner()
    stopped = spool_of(spool_dir, dead, "a", "b")
    journal = Journal(spool_dir, dead)
    for task_id in ("a", "b", "c"):
        journal.record(started(task_id))
    live = spool_of(spool_dir, live_process, "live")
    mine = spool_of(spool_dir, HERE, "mine")
    far = spool_of(spool_dir, Owner("far-host", "b00t", 7, 7), "far")
    before = files(spool_dir)

    result = invoke(app, "spool", "status")

    assert result.exit_code == 0, result.output
    listed = lines_by_file(result.output)
    assert "2 batches (2 task rows, 2 earnings records)" in listed[stopped.name]
    assert f"stopped process (pid {dead.pid}): replayable (flask earnings spool replay)" in listed[stopped.name]
    assert "3 journalled tasks" in listed[journal.current().name]  # type: ignore[union-attr]
    assert "flask earnings recover" in listed[journal.current().name]  # type: ignore[union-attr]
    assert f"live process (pid {live_process.pid}): its writer replays it" in listed[live.name]
    assert f"this process (pid {HERE.pid}): its writer replays it" in listed[mine.name]
    assert "another host (far-host)" in listed[far.name]
    assert "Waiting: 5 batches in 4 spool files" in result.output and "2 replayable now; 1 journal." in result.output
    assert files(spool_dir) == before


# spool replay


def test_spool_replay_stores_what_stopped_processes_left_and_only_that(
    make_app: MakeApp, spool_dir: Path, live_process: Owner, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, earnings = make_app(spool_dir=str(spool_dir), enabled=False)
    spool_of(spool_dir, a_dead_owner(), "a", "b")
    interrupted = spool_of(spool_dir, a_dead_owner(), "c")  # a process died while replaying this one:
    interrupted.rename(interrupted.with_name(f"{interrupted.name}.claimed-{a_dead_owner()}"))  # it is free again
    journal = Journal(spool_dir, a_dead_owner())
    journal.record(started("j"))  # recover's business, not the spool's
    left = {spool_of(spool_dir, live_process, "live").name, spool_of(spool_dir, HERE, "mine").name}
    left.add(journal.current().name)  # type: ignore[union-attr]
    bars = []
    progressbar = click.progressbar

    def recorded_progressbar(*args: Any, **kwargs: Any) -> Any:
        bars.append(progressbar(*args, **kwargs))
        return bars[-1]

    monkeypatch.setattr(click, "progressbar", recorded_progressbar)

    result = invoke(app, "spool", "replay")

    assert result.exit_code == 0, result.output
    assert "Replaying 2 spool files" in result.output and "Replayed 3 batches from 2 spool files" in result.output
    [bar] = bars
    assert (bar.length, bar.pos) == (3, 3)  # the bar counts batches, all of them
    assert stored(app, earnings, "a", "b", "c", "live", "mine", "j") == {
        **dict.fromkeys(("a", "b", "c"), TaskStatus.COMPLETED),
        **dict.fromkeys(("live", "mine", "j"), None),
    }
    with app.app_context():
        task = earnings.get_task("a")
    assert task is not None and task.earnings is not None and task.earnings.total == Decimal("0.000001")
    assert set(files(spool_dir)) == left
    again = invoke(app, "spool", "replay")
    assert again.exit_code == 0
    assert "Nothing to replay" in again.output and "2 spool files of running processes or other hosts" in again.output


def test_a_batch_replayed_twice_is_stored_once(make_app: MakeApp, spool_dir: Path) -> None:
    """As when a replay stopped after storing a file but before deleting it."""
    app, _ = make_app(spool_dir=str(spool_dir), enabled=False)
    spool_of(spool_dir, a_dead_owner(), "a", total="1.5")
    assert invoke(app, "spool", "replay").exit_code == 0
    spool_of(spool_dir, a_dead_owner(), "a", total="1.5")

    result = invoke(app, "spool", "replay")

    assert result.exit_code == 0, result.output
    records = app.extensions["earnings"].store.tables.records
    with app.app_context(), app.extensions["earnings"].store.connect() as connection:
        count, total = connection.execute(sa.select(sa.func.count(), money_sum(records.c.total))).one()
    assert (count, total) == (1, Decimal("1.5"))


def test_spool_replay_refuses_when_the_database_cannot_be_reached(
    app_on: AppOn, spool_dir: Path, unreachable: tuple[str, str]
) -> None:
    url, words = unreachable
    app, _ = app_on(url)
    spool_of(spool_dir, a_dead_owner(), "a", "b")
    before = files(spool_dir)

    result = invoke(app, "spool", "replay")

    assert result.exit_code == 1
    assert "cannot take the batches" in result.output and words in result.output
    assert "Nothing was replayed; the spool is as it was." in result.output
    assert files(spool_dir) == before  # not even claimed


def test_spool_replay_refuses_while_the_tables_are_missing(
    sqlalchemy_app: tuple[Flask, Earnings], spool_dir: Path
) -> None:
    app, earnings = sqlalchemy_app
    spool_of(spool_dir, a_dead_owner(), "a")
    before = files(spool_dir)

    refused = invoke(app, "spool", "replay")

    assert refused.exit_code == 1
    assert "Tables missing? flask db upgrade, or flask earnings init-db." in refused.output
    assert files(spool_dir) == before
    assert invoke(app, "init-db").exit_code == 0
    replayed = invoke(app, "spool", "replay")
    assert replayed.exit_code == 0, replayed.output
    assert stored(app, earnings, "a") == {"a": TaskStatus.COMPLETED}


def test_spool_replay_of_an_empty_spool_says_so(app_on: AppOn, spool_dir: Path, unreachable: tuple[str, str]) -> None:
    """Nothing to do needs no database."""
    app, _ = app_on(unreachable[0])

    result = invoke(app, "spool", "replay")

    assert result.exit_code == 0, result.output
    assert result.output == f"Nothing to replay in {spool_dir}: no spool files of stopped processes.\n"


def test_a_spool_file_that_cannot_be_read_stops_the_replay_and_stays(make_app: MakeApp, spool_dir: Path) -> None:
    app, earnings = make_app(spool_dir=str(spool_dir), enabled=False)
    readable = spool_of(spool_dir, a_dead_owner(), "a")
    hour_ago = time.time() - 3600
    os.utime(readable, (hour_ago, hour_ago))  # the older file: replayed first
    garbled = spool_of(spool_dir, a_dead_owner(), "b")
    with open(garbled, "a", encoding="utf-8") as file:
        file.write('{"tasks": [["c", \n')

    status = invoke(app, "spool", "status")
    result = invoke(app, "spool", "replay")

    assert "unreadable" in lines_by_file(status.output)[garbled.name]
    assert result.exit_code == 1
    assert f"Could not replay {garbled.name}" in result.output
    assert "after 1 batch from 1 file before it. It stays in the spool, for the next process" in result.output
    assert stored(app, earnings, "a") == {"a": TaskStatus.COMPLETED}
    [kept] = files(spool_dir)
    assert kept.startswith(garbled.name)  # claimed by this (CLI) process: the next one takes it


@pytest.mark.parametrize("command", [["init-db"], ["spool", "status"], ["spool", "replay"]])
def test_the_commands_need_the_extension(tmp_path: Path, command: list[str]) -> None:
    result = Flask("bare", instance_path=str(tmp_path)).test_cli_runner().invoke(earnings_cli, command)

    assert result.exit_code == 1 and "does not use flask-earnings" in result.output


@pytest.mark.parametrize(
    ("command", "complaint"),
    [
        (["spool", "rewind"], "No such command 'rewind'"),
        (["spool", "replay", "--all"], "No such option"),
        (["init-db", "now"], "Got unexpected extra argument (now)"),
    ],
)
def test_bad_input_is_a_usage_error(app_on: AppOn, tmp_path: Path, command: list[str], complaint: str) -> None:
    app, _ = app_on(f"sqlite:///{tmp_path / 'earnings.sqlite3'}")

    result = invoke(app, *command)

    assert result.exit_code == 2 and complaint in result.output
