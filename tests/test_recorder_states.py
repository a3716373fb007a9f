"""A property-based, stateful test of the recorder: whatever the order of calls, flushes, database
outages and restarts, the database and the spool hold exactly the tasks made, and their money."""

from __future__ import annotations

import itertools
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, jsonify
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from flask_earnings import Earnings
from flask_earnings import owners as owners_module
from flask_earnings import recorder as recorder_module
from flask_earnings.owners import Owner
from flask_earnings.spool import read_batches
from flask_earnings.storage import Store

from . import payloads

#: What each call earns: vLLM embeddings, 100 input tokens: 100 × 0.0008 + 0.008.
EARNED = Decimal("0.088")
_starts = itertools.count(1)


def a_new_process() -> Owner:
    """Each app of the test stands for a process of its own: a start time that is not this
    process's, so that once it is replaced it counts as gone."""
    here = Owner.current()
    return Owner(here.host, here.boot, here.pid, -next(_starts))


class RecorderMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp())
        self.database = f"sqlite:///{self.folder / 'earnings.sqlite3'}"
        self.spool = self.folder / "spool"
        self.made: set[str] = set()
        self.down = False
        self.original_write = Store.write
        self.app, self.earnings = self.start()

    def start(self) -> tuple[Flask, Earnings]:
        owner = a_new_process()
        original = owners_module.Owner.current
        owners_module.Owner.current = classmethod(lambda cls: owner)  # type: ignore[method-assign, assignment]
        recorder_module.Owner.current = owners_module.Owner.current  # type: ignore[method-assign]
        try:
            app = Flask(f"process_{owner.start}", instance_path=str(self.folder / "instance"))
            earnings = Earnings(app, database_uri=self.database, spool_dir=str(self.spool), flush_interval=0.05)
        finally:
            owners_module.Owner.current = original  # type: ignore[method-assign]
            recorder_module.Owner.current = original  # type: ignore[method-assign]

        @app.post("/v1/embeddings")
        def embeddings() -> Response:
            return jsonify(payloads.openai_embeddings_reply(100))

        return app, earnings

    @rule(count=st.integers(min_value=1, max_value=5))
    def call(self, count: int) -> None:
        client = self.app.test_client()
        for _ in range(count):
            response = client.post("/v1/embeddings", json=payloads.openai_embeddings_request(), buffered=True)
            self.made.add(response.headers["X-Earnings-Task-Id"])

    @rule()
    def flush(self) -> None:
        with self.app.app_context():
            assert self.earnings.flush(10)

    @rule()
    def database_goes_away(self) -> None:
        def refuse(store: Store, batch: Any) -> None:
            raise sa.exc.OperationalError("INSERT", {}, ConnectionRefusedError("the database is away"))

        Store.write = refuse  # type: ignore[method-assign]
        self.down = True

    @rule()
    def database_comes_back(self) -> None:
        Store.write = self.original_write  # type: ignore[method-assign]
        self.down = False

    @rule()
    def restart(self) -> None:
        """The process stops (storing or spooling what it holds) and a new one starts."""
        assert self.app.extensions["earnings"].recorder.close(10)
        self.app, self.earnings = self.start()

    @invariant()
    def everything_made_is_stored_or_spooled_with_its_money(self) -> None:
        with self.app.app_context():
            assert self.earnings.flush(10)  # the queue emptied into the database or the spool
        store = self.app.extensions["earnings"].store
        tasks, records = store.tables.tasks, store.tables.records
        with store.connect() as connection:
            stored = dict(connection.execute(sa.select(tasks.c.id, tasks.c.status)).all())
            stored_money = dict(connection.execute(sa.select(records.c.task_id, records.c.total)).all())
        spooled: dict[str, str] = {}
        spooled_money: dict[str, Decimal] = {}
        for path in sorted(self.spool.glob("spool-*")):
            for batch in read_batches(path):
                spooled.update({task_id: row[2] for task_id, row in batch.tasks.items()})
                spooled_money.update({row[0]: row[5] for row in batch.records})

        assert set(stored) | set(spooled) == self.made
        for task_id in self.made:
            assert "completed" in (stored.get(task_id), spooled.get(task_id)), task_id
            assert stored_money.get(task_id, spooled_money.get(task_id)) == EARNED, task_id
        assert set(stored_money) <= self.made  # no record of a task never made
        assert sum(stored_money.values(), Decimal(0)) == EARNED * len(stored_money)

    def teardown(self) -> None:
        Store.write = self.original_write  # type: ignore[method-assign]
        self.app.extensions["earnings"].recorder.close(10)


TestRecorderStates = RecorderMachine.TestCase
TestRecorderStates.settings = settings(
    max_examples=100, stateful_step_count=20, deadline=None, suppress_health_check=list(HealthCheck)
)
