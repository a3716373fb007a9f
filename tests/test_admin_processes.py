"""Every process serving the app prices with a new rate version within 2 s of its commit,
through the database alone, on SQLite and on PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import MakeApp
from .helpers import TASK_HEADER, stored_task

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-admin-token-0123456789"


@pytest.fixture
def other_process(database_url: str) -> Iterator[str]:
    """A second process serving the app on the same database; yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.served_app", database_url], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("port "), line
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        process.terminate()
        process.wait(10)
        assert process.stdout is not None
        process.stdout.close()


def test_an_edit_made_in_one_process_is_used_by_another_within_two_seconds(
    make_app: MakeApp, database_url: str, other_process: str
) -> None:
    app, earnings = make_app(admin_token=TOKEN, database_uri=database_url)
    with httpx.Client(base_url=other_process, timeout=10) as other:
        warm_up = other.post("/v1/embeddings", json={"model": "BAAI/bge-m3", "input": "hi"})
        assert stored_task(app, earnings, warm_up.headers[TASK_HEADER]).rate_version == 1

        edit = app.test_client().patch(
            "/earnings/api/rates/vllm/embeddings",
            json={"input": "0.001"},
            headers={"Authorization": f"Bearer {TOKEN}", "If-Match": '"1"'},
        )
        committed = time.monotonic()
        sent = []
        while time.monotonic() - committed < 3.0:  # bounded: three seconds of calls, 20 a second
            response = other.post("/v1/embeddings", json={"model": "BAAI/bge-m3", "input": "hi"})
            sent.append((time.monotonic() - committed, response.headers[TASK_HEADER]))
            time.sleep(0.05)

    assert edit.status_code == 200
    versions = [(after, stored_task(app, earnings, task_id).rate_version) for after, task_id in sent]
    switched = min(after for after, version in versions if version == 2)
    assert switched < 2.0
    assert all(version == 2 for after, version in versions if after >= switched), versions
