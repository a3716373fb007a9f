"""Nothing lost: the journal, the spool and crash recovery, each on their own and together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from flask_earnings import TaskStatus
from flask_earnings import storage as storage_module
from flask_earnings.commands import earnings_cli
from flask_earnings.owners import Owner
from flask_earnings.recovery import recover
from flask_earnings.rows import Batch, record_row, task_row
from flask_earnings.spool import Journal, Spool, Started, orphans, read_batches, read_started
from flask_earnings.storage import Store, define_tables, standalone_engine
from flask_earnings.tasks import EarningsBreakdown

from . import payloads
from .conftest import MakeApp
from .helpers import TASK_HEADER, add_upstream_view, database_away, stored_task
from .test_storage import a_task

ROOT = Path(__file__).resolve().parent.parent
HERE = Owner.current()


def a_dead_owner() -> Owner:
    """A process of this host that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return Owner(HERE.host, HERE.boot, process.pid, 12345)


def started(task_id: str) -> Started:
    return Started(task_id, "vllm", "openai", "chat/completions", "/v1/chat/completions", datetime.now(UTC), "r", None,
                   'key "k"', 1)  # fmt: skip


def store_for(url: str) -> Store:
    return Store(define_tables(sa.MetaData()), lambda: standalone_engine(url), owned=True)


# Owners.


def test_an_owner_names_host_boot_pid_and_start_time() -> None:
    again = Owner.parse(str(HERE))

    assert again == HERE
    assert not HERE.is_gone(HERE)
    assert a_dead_owner().is_gone(HERE)
    assert Owner(HERE.host, "otherboot", HERE.pid, HERE.start).is_gone(HERE)  # the host rebooted since
    assert not Owner("another-host", HERE.boot, 1, 1).is_gone(HERE)  # not ours to judge
    assert Owner.parse("not an owner") is None


# The journal and the spool.


def test_the_journal_keeps_a_line_per_task_and_rotates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flask_earnings.spool.JOURNAL_ROTATE_BYTES", 300)
    journal = Journal(tmp_path, HERE)

    closed = [journal.record(started(f"t{index}")) for index in range(6)]

    files = [path for path in closed if path is not None]
    assert len(files) >= 1 and journal.current() not in files
    lines = [item for path in [*files, journal.current()] for item in read_started(path)]  # type: ignore[list-item]
    assert [item.id for item in lines] == [f"t{index}" for index in range(6)]
    assert lines[0].client == 'key "k"' and lines[0].created_at.tzinfo is not None


def test_a_journal_line_cut_short_by_a_crash_is_skipped(tmp_path: Path) -> None:
    journal = Journal(tmp_path, HERE)
    journal.record(started("whole"))
    path = journal.current()
    assert path is not None
    with open(path, "ab") as file:
        file.write(b'["half","vl')

    assert [item.id for item in read_started(path)] == ["whole"]


def test_the_spool_keeps_batches_in_order_with_exact_values(tmp_path: Path) -> None:
    spool = Spool(tmp_path, HERE)
    now = datetime.now(UTC)
    earnings = EarningsBreakdown(
        Decimal("0.1"), Decimal("0.000000000000000001"), Decimal(0), Decimal(0), Decimal("0.1")
    )
    batches = []
    for index in range(3):
        batch = Batch()
        batch.add_task(task_row(a_task(f"t{index}", now), "owner"))
        batch.records.append(record_row(f"t{index}", earnings, 1, now))
        spool.append(batch)
        batches.append(batch)

    [path] = spool.take()
    again = list(read_batches(path))

    assert [list(batch.tasks) for batch in again] == [["t0"], ["t1"], ["t2"]]
    assert again[0].tasks == batches[0].tasks and again[0].records == batches[0].records
    assert not spool.waiting()


def test_files_of_a_dead_process_are_claimed_once(tmp_path: Path) -> None:
    dead = a_dead_owner()
    Spool(tmp_path, dead).append(Batch())
    Journal(tmp_path, dead).record(started("x"))
    Spool(tmp_path, HERE).append(Batch())  # a live process's file: never taken from it

    claimed = list(orphans(tmp_path, "spool", HERE)) + list(orphans(tmp_path, "journal", HERE))
    again = list(orphans(tmp_path, "spool", HERE))

    assert len(claimed) == 2 and all(f".claimed-{HERE}" in path.name for path in claimed)
    assert again == claimed[:1]  # still this process's to finish: offered again, not claimed again
    assert len([path for path in tmp_path.iterdir() if str(HERE) in path.name.split(".jsonl")[0]]) == 1


# Recovery.


def test_recovery_stores_what_a_dead_process_left(tmp_path: Path, database_url: str) -> None:
    store = store_for(database_url)
    tmp_path = tmp_path / "spool"
    dead = a_dead_owner()
    now = datetime.now(UTC)
    spooled = Batch()
    spooled.add_task(task_row(a_task("spooled", now), str(dead)))
    spooled.records.append(
        record_row("spooled", EarningsBreakdown(Decimal(1), Decimal(0), Decimal(0), Decimal(0), Decimal(1)), 1, now)
    )
    Spool(tmp_path, dead).append(spooled)
    journal = Journal(tmp_path, dead)
    for task_id in ("spooled", "journalled"):
        journal.record(started(task_id))
    running = Batch()
    running.add_task(task_row(a_task("running", now, TaskStatus.RUNNING), str(dead)))
    running.add_task(task_row(a_task("alive", now, TaskStatus.RUNNING), str(HERE)))
    store.write(running)

    found = recover(store, tmp_path, HERE)
    again = recover(store, tmp_path, HERE)

    assert (found.spooled_batches, found.journal_tasks, found.interrupted) == (1, 2, 1)
    assert not again
    statuses = {task_id: store.load_task(task_id).status for task_id in ("spooled", "journalled", "running", "alive")}  # type: ignore[union-attr]
    assert statuses == {
        "spooled": TaskStatus.COMPLETED,  # its journal line did not undo its end
        "journalled": TaskStatus.INTERRUPTED,
        "running": TaskStatus.INTERRUPTED,
        "alive": TaskStatus.RUNNING,  # a live process's task is left alone
    }
    interrupted = store.load_task("journalled")
    assert interrupted is not None and interrupted.error is not None and str(dead) in interrupted.error
    assert interrupted.client == 'key "k"' and interrupted.earnings is None
    assert list(tmp_path.iterdir()) == []


def test_a_recovery_the_database_broke_off_is_finished_by_the_same_process(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_for(database_url)
    tmp_path = tmp_path / "spool"
    batch = Batch()
    batch.add_task(task_row(a_task("left-behind", datetime.now(UTC)), "dead"))
    Spool(tmp_path, a_dead_owner()).append(batch)
    original = storage_module.Store.write

    monkeypatch.setattr(storage_module.Store, "write", database_away)
    with pytest.raises(sa.exc.OperationalError):
        recover(store, tmp_path, HERE)
    assert [path.name.split(".jsonl")[1] for path in tmp_path.iterdir()] == [f".claimed-{HERE}"]

    monkeypatch.setattr(storage_module.Store, "write", original)
    found = recover(store, tmp_path, HERE)

    assert found.spooled_batches == 1 and list(tmp_path.iterdir()) == []
    assert store.load_task("left-behind") is not None


def test_a_dead_host_can_be_declared(tmp_path: Path) -> None:
    store = store_for(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    now = datetime.now(UTC)
    batch = Batch()
    batch.add_task(task_row(a_task("far", now, TaskStatus.RUNNING), str(Owner("far-host", "b", 7, 7))))
    store.write(batch)

    assert recover(store, tmp_path, HERE).interrupted == 0
    assert recover(store, tmp_path, HERE, dead_host="far-host").interrupted == 1


def test_flask_earnings_recover_command(make_app: MakeApp, tmp_path: Path) -> None:
    app, earnings = make_app(spool_dir=str(tmp_path / "spool"))
    Journal(tmp_path / "spool", a_dead_owner()).record(started("lost"))

    result = app.test_cli_runner().invoke(earnings_cli, ["recover"])

    assert result.exit_code == 0, result.output
    assert "1 journalled tasks" in result.output
    with app.app_context():
        task = earnings.get_task("lost")
    assert task is not None and task.status is TaskStatus.INTERRUPTED


def test_the_recover_command_needs_the_extension(tmp_path: Path) -> None:
    from flask import Flask

    app = Flask("bare", instance_path=str(tmp_path))

    result = app.test_cli_runner().invoke(earnings_cli, ["recover"])

    assert result.exit_code != 0 and "does not use flask-earnings" in result.output


# The spool in use.


def test_while_the_database_refuses_tasks_wait_in_the_spool(make_app: MakeApp, monkeypatch: pytest.MonkeyPatch) -> None:
    app, earnings = make_app()
    add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))
    state = app.extensions["earnings"]
    original = storage_module.Store.write

    monkeypatch.setattr(storage_module.Store, "write", database_away)
    ids = [
        app.test_client().post("/api/embed", json=payloads.ollama_embed_request(), buffered=True).headers[TASK_HEADER]
        for _ in range(5)
    ]
    with app.app_context():
        assert earnings.flush(5)
    spooled = [batch for path in state.recorder.spool_dir.glob("spool-*") for batch in read_batches(path)]
    assert sorted(task_id for batch in spooled for task_id in batch.tasks) == sorted(ids)

    monkeypatch.setattr(storage_module.Store, "write", original)
    tasks = [stored_task(app, earnings, task_id) for task_id in ids]

    assert all(task.status is TaskStatus.COMPLETED for task in tasks)
    assert not list(state.recorder.spool_dir.glob("spool-*"))  # replayed, then gone


def test_a_full_queue_spools_on_the_request_thread(make_app: MakeApp) -> None:
    app, earnings = make_app(queue_size=1, flush_interval=5)
    add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))
    recorder = app.extensions["earnings"].recorder

    ids = [
        app.test_client().post("/api/embed", json=payloads.ollama_embed_request(), buffered=True).headers[TASK_HEADER]
        for _ in range(10)
    ]
    tasks = [stored_task(app, earnings, task_id) for task_id in ids]

    assert recorder.spilled > 0
    assert all(task.status is TaskStatus.COMPLETED and task.earnings is not None for task in tasks)
    assert recorder.dropped == 0


# A process killed in the middle of its work.


def test_a_killed_process_leaves_nothing_lost(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    spool = tmp_path / "spool"
    command = [sys.executable, "-m", "tests.served_app", database, str(spool)]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None
    port = int(first.stdout.readline().split()[1])
    seen = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for _ in range(30):
            seen.append(client.post("/v1/embeddings", json={"model": "m", "input": "hi"}).headers[TASK_HEADER])
    os.kill(first.pid, signal.SIGKILL)  # its writer had no time to store the last of them
    first.wait(10)
    first.stdout.close()

    second = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert second.stdout is not None
        second.stdout.readline()
        engine = sa.create_engine(database)
        deadline = time.monotonic() + 15
        while True:  # the new process recovers on its own, in its background thread
            with engine.connect() as connection:
                rows = dict(connection.execute(sa.text("SELECT id, status FROM earnings_tasks")).all())
            if set(seen) <= set(rows) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        engine.dispose()
    finally:
        second.terminate()
        second.wait(10)
        if second.stdout is not None:
            second.stdout.close()

    assert set(seen) <= set(rows)  # every task the clients saw is stored...
    assert set(rows[task_id] for task_id in seen) <= {"completed", "interrupted"}  # ...ended or interrupted
    assert not list(spool.glob("journal-*"))


def test_an_idle_writer_waits_on_its_queue_even_with_tiny_batches(make_app: MakeApp) -> None:
    app, _ = make_app(batch_size=1)
    recorder = app.extensions["earnings"].recorder
    waits: list[float | None] = []
    real_queue = recorder._queue

    class Watched:
        def qsize(self) -> int:
            return real_queue.qsize()

        def get(self, timeout: float | None = None) -> object:
            waits.append(timeout)
            return real_queue.get(timeout=timeout)

        def get_nowait(self) -> object:
            return real_queue.get_nowait()

    recorder._queue = Watched()
    try:
        assert recorder._collect() == []  # nothing came: it waited for the queue, then gave up
    finally:
        recorder._queue = real_queue
    assert waits and waits[0] is not None and waits[0] > 0
