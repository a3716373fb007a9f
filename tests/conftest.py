from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_earnings import Earnings

#: The PostgreSQL server the tests use; CI starts it before the tests.
POSTGRESQL_URL = os.environ.get("EARNINGS_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgresql_available() -> bool:
    try:
        engine = sa.create_engine(POSTGRESQL_URL)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except sa.exc.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgresql_server() -> str:
    """The server's URL; a test that needs it is skipped without it, but never in CI."""
    if not postgresql_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {POSTGRESQL_URL}; CI must start it")
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRESQL_URL}")
    return POSTGRESQL_URL


@pytest.fixture
def postgresql_url(postgresql_server: str) -> Iterator[str]:
    """A URL whose connections work in a schema of their own, dropped after the test."""
    schema = "t_" + uuid.uuid4().hex[:12]
    engine = sa.create_engine(postgresql_server)
    with engine.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    yield f"{postgresql_server}?options=-csearch_path%3D{schema}"
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that takes this runs on an SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'earnings.sqlite3'}"
    url: str = request.getfixturevalue("postgresql_url")
    return url


MakeApp = Callable[..., tuple[Flask, Earnings]]


@pytest.fixture
def make_app(tmp_path: Path, database_url: str) -> Iterator[MakeApp]:
    """A fresh app with the extension; keyword arguments are Earnings options.

    ``config`` sets app config before the extension reads it. Its records go to
    ``database_url``: every test that makes an app runs on SQLite and on PostgreSQL.
    """
    counter = iter(range(1000))
    made: list[Flask] = []

    def make(*, config: dict[str, Any] | None = None, **options: Any) -> tuple[Flask, Earnings]:
        app = Flask(f"test_app_{next(counter)}", instance_path=str(tmp_path / f"instance{next(counter)}"))
        app.config.update(config or {})
        if "EARNINGS_DATABASE_URI" not in app.config:
            options.setdefault("database_uri", database_url)
        earnings = Earnings(app, **options)
        made.append(app)
        return app, earnings

    yield make
    for app in made:  # each app's writer stores what it holds and stops, before its database goes
        app.extensions["earnings"].recorder.stop(10)
