"""The tables in an app's own Flask-Migrate migrations: autogenerate writes them, upgrade makes them.

Each test is a gateway with a model of its own and its own migrations folder, passing its
Flask-SQLAlchemy instance to the extension, and runs Flask-Migrate's commands as an operator
would (``flask db init / migrate / upgrade``), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.operations import ops
from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from flask_earnings import Earnings, TaskStatus
from flask_earnings.commands import earnings_cli
from flask_earnings.migrations import render_item

from . import payloads
from .helpers import TASK_HEADER, add_upstream_view, call, stored_task

EARNINGS_TABLES = ("earnings_tasks", "earnings_records", "earnings_rate_versions")
EARNINGS_INDEXES = ("ix_earnings_tasks_status", "ix_earnings_tasks_created_at", "ix_earnings_records_recorded_at")

Gateway = Callable[..., tuple[Flask, Earnings]]

# Flask-Migrate's env.py tries Flask-SQLAlchemy's deprecated ``db.get_engine()`` before ``db.engine``.
pytestmark = pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True)
def logging_kept() -> Iterator[None]:
    """Alembic's ``env.py`` reconfigures logging from ``alembic.ini`` (``fileConfig``), which
    disables every other logger: fine in a ``flask db`` process, not in the test process."""
    manager = logging.Logger.manager
    root = logging.getLogger()
    saved = {
        name: (logger.disabled, logger.level, list(logger.handlers), logger.propagate)
        for name, logger in manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    root_state = (root.level, list(root.handlers))
    yield
    for name, (disabled, level, handlers, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.disabled, logger.level, logger.handlers, logger.propagate = disabled, level, handlers, propagate
    for name, logger in list(manager.loggerDict.items()):
        if name not in saved and isinstance(logger, logging.Logger):
            logger.handlers = []
    root.level, root.handlers = root_state


@pytest.fixture
def gateway(database_url: str, tmp_path: Path) -> Iterator[Gateway]:
    """``gateway(**migrate_options)``: a fresh app process of one deployment (same database, same
    migrations folder), with a ``customers`` model of its own and ``Earnings(app, db=db)``."""
    made: list[tuple[Flask, SQLAlchemy]] = []

    def make(**migrate_options: Any) -> tuple[Flask, Earnings]:
        app = Flask(f"gateway_{len(made)}", instance_path=str(tmp_path / "instance"))
        app.config["SQLALCHEMY_DATABASE_URI"] = database_url
        db = SQLAlchemy()

        class Customer(db.Model):  # type: ignore[name-defined]
            __tablename__ = "customers"
            id = db.Column(db.Integer, primary_key=True)
            name = db.Column(db.String(80), nullable=False)

        db.init_app(app)
        # Each app is a process of its own, with its own spool (in one process they would share a name).
        earnings = Earnings(app, db=db, spool_dir=str(tmp_path / f"spool{len(made)}"))
        Migrate(app, db, directory=str(tmp_path / "migrations"), render_item=render_item, **migrate_options)
        made.append((app, db))
        return app, earnings

    yield make
    for app, db in made:
        app.extensions["earnings"].recorder.stop(10)
        with app.app_context():
            db.engine.dispose()


def flask(app: Flask, *args: str) -> str:
    """Run ``flask ARGS`` for ``app``, as an operator would; its output."""
    result = app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, f"flask {' '.join(args)}: {result.output}{result.exception!r}"
    return result.output


def revisions(app: Flask) -> list[Path]:
    versions = Path(app.extensions["migrate"].directory) / "versions"
    return sorted(versions.glob("*.py"), key=lambda path: path.stat().st_mtime)


def schema(app: Flask) -> dict[str, tuple[set[str], set[str]]]:
    """Each table of the app's database: its columns and its indexes."""
    with app.app_context():
        inspector = sa.inspect(app.extensions["sqlalchemy"].engine)
        return {
            table: (
                {column["name"] for column in inspector.get_columns(table)},
                {str(index["name"]) for index in inspector.get_indexes(table)},
            )
            for table in inspector.get_table_names()
        }


def test_autogenerate_writes_the_earnings_tables_into_the_apps_own_migration(gateway: Gateway) -> None:
    app, _ = gateway()
    flask(app, "db", "init")

    flask(app, "db", "migrate", "-m", "customers and earnings")

    [revision] = revisions(app)
    text = revision.read_text()
    for table in ("customers", *EARNINGS_TABLES):
        assert f"op.create_table('{table}'" in text
    for index in EARNINGS_INDEXES:
        assert f"create_index(batch_op.f('{index}')" in text
    # The extension's column types are named, and imported, so that the revision runs.
    assert "\nimport flask_earnings.money\nimport flask_earnings.storage\n" in text
    assert "sa.Column('total', flask_earnings.money.Money(), nullable=False)" in text
    assert "sa.Column('created_at', flask_earnings.storage.UTCDateTime(), nullable=False)" in text


def test_after_upgrade_calls_are_stored_and_the_schema_matches_the_model(gateway: Gateway) -> None:
    operator, _ = gateway()
    flask(operator, "db", "init")
    flask(operator, "db", "migrate", "-m", "customers and earnings")

    flask(operator, "db", "upgrade")

    tables = schema(operator)
    assert set(EARNINGS_TABLES) | {"customers"} <= set(tables)
    assert set(EARNINGS_INDEXES) <= tables["earnings_tasks"][1] | tables["earnings_records"][1]
    app, earnings = gateway()  # the gateway starts once the database is upgraded
    add_upstream_view(app, "/api/chat", payloads.ollama_chat_reply(10, 20))
    _, task = call(app, earnings, "/api/chat", payloads.ollama_chat_request())
    assert task.status is TaskStatus.COMPLETED
    assert task.earnings is not None and task.earnings.total == Decimal("0.06")  # 10 × 0.001 + 20 × 0.002 + 0.01
    # A later autogenerate finds the database exactly as the model describes it: no revision.
    flask(operator, "db", "migrate", "-m", "nothing")
    assert len(revisions(operator)) == 1


def as_an_earlier_release(context: Any, revision: Any, directives: list[Any]) -> None:
    """Alembic's ``process_revision_directives`` hook: the revision written as with an earlier
    release of the extension, whose tasks had no ``owner`` column and no index on ``created_at``."""
    script = directives[0]
    for op in script.upgrade_ops.ops:
        if isinstance(op, ops.CreateTableOp) and op.table_name == "earnings_tasks":
            op.columns = [column for column in op.columns if getattr(column, "name", None) != "owner"]
        if isinstance(op, ops.ModifyTableOps) and op.table_name == "earnings_tasks":
            op.ops = [each for each in op.ops if getattr(each, "index_name", None) != "ix_earnings_tasks_created_at"]
    script.downgrade_ops = script.upgrade_ops.reverse()


def test_autogenerate_picks_up_what_a_newer_release_adds_to_the_tables(gateway: Gateway) -> None:
    earlier, _ = gateway(process_revision_directives=as_an_earlier_release)
    flask(earlier, "db", "init")
    flask(earlier, "db", "migrate", "-m", "customers and earnings")
    flask(earlier, "db", "upgrade")
    columns, indexes = schema(earlier)["earnings_tasks"]
    assert "owner" not in columns and "ix_earnings_tasks_created_at" not in indexes
    operator, _ = gateway()  # the new release is deployed...
    app, earnings = gateway()  # ...and a worker of it starts before the database is upgraded
    add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))
    reply = app.test_client().post("/api/embed", json=payloads.ollama_embed_request(), buffered=True)
    early = reply.headers[TASK_HEADER]
    with app.app_context():
        assert earnings.flush(10)
    assert list(app.extensions["earnings"].recorder.spool_dir.glob("spool-*"))  # refused: no owner column

    flask(operator, "db", "migrate", "-m", "flask-earnings upgrade")

    first, second = revisions(operator)
    text = second.read_text()
    assert "batch_op.add_column(sa.Column('owner', sa.String(length=255), nullable=True))" in text
    assert "batch_op.create_index(batch_op.f('ix_earnings_tasks_created_at'), ['created_at'], unique=False)" in text
    assert "create_table" not in text and "drop_" not in text.split("def downgrade")[0]
    flask(operator, "db", "upgrade")
    columns, indexes = schema(operator)["earnings_tasks"]
    assert "owner" in columns and "ix_earnings_tasks_created_at" in indexes
    # The worker's spooled task is stored once the upgrade is in, and new calls go straight in.
    assert stored_task(app, earnings, early, timeout=30).status is TaskStatus.COMPLETED
    _, task = call(app, earnings, "/api/embed", payloads.ollama_embed_request())
    assert task.status is TaskStatus.COMPLETED and task.input_tokens == 8
    flask(operator, "db", "migrate", "-m", "nothing")
    assert revisions(operator) == [first, second]


def test_init_db_makes_the_tables_a_migration_would(gateway: Gateway) -> None:
    """``flask earnings init-db`` with ``db=``: the same tables, so autogenerate has nothing
    to add for them (only the app's own table)."""
    app, _ = gateway()
    flask(app, "db", "init")

    created = app.test_cli_runner().invoke(earnings_cli, ["init-db"])
    flask(app, "db", "migrate", "-m", "customers")

    assert created.exit_code == 0 and f"Created: {', '.join(EARNINGS_TABLES)}" in created.output
    [revision] = revisions(app)
    text = revision.read_text()
    assert "op.create_table('customers'" in text
    assert "earnings" not in text.split("def upgrade")[1]
