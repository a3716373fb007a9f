"""Four gunicorn workers on PostgreSQL under load from another process, through faults:
the database away for 10 s, a worker stopped (SIGTERM), a worker killed (SIGKILL). Each
ends with every successful response's task in the database, none twice, and the money right."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import sqlalchemy as sa

from .tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parent.parent
#: What each call earns: vLLM embeddings, 100 input tokens: 100 × 0.0008 + 0.008.
EARNED = Decimal("0.088")

pytestmark = pytest.mark.slow


@dataclass
class Load:
    """Calls from 8 threads, paced, for a while; what came back."""

    succeeded: set[str] = field(default_factory=set)
    failed: int = 0
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, base: str, seconds: float, limit: int = 20_000) -> None:
        numbers = itertools.count()
        deadline = time.monotonic() + seconds

        def caller() -> None:
            with httpx.Client(base_url=base, timeout=30) as client:
                while time.monotonic() < deadline and next(numbers) < limit:
                    try:
                        response = client.post("/v1/embeddings", json={"model": "BAAI/bge-m3", "input": "hi"})
                        ok = response.status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    with self.lock:
                        self.sent += 1
                        if ok:
                            self.succeeded.add(response.headers["X-Earnings-Task-Id"])
                        else:
                            self.failed += 1
                    time.sleep(0.02)

        threads = [threading.Thread(target=caller) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + 60)


class Gunicorn:
    def __init__(self, database_url: str, spool: Path, log: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        factory = f"tests.served_app:create_app({database_url!r}, {str(spool)!r}, 0.5)"
        self.log = open(log, "w")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "gunicorn", "-w", "4", "-b", f"127.0.0.1:{self.port}"]
        self.process = subprocess.Popen(
            [*command, "--graceful-timeout", "30", factory], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while len(self.workers()) < 4 or not self._answers():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)

    def _answers(self) -> bool:
        try:
            return httpx.get(self.base + "/", timeout=2).status_code == 404
        except httpx.HTTPError:
            return False

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        self.log.close()


@pytest.fixture
def through_proxy(postgresql_url: str) -> Iterator[tuple[str, TcpProxy]]:
    """The test schema's URL, reached through a proxy that the test can cut."""
    parts = urlsplit(postgresql_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}"
    yield urlunsplit(parts._replace(netloc=netloc)), proxy
    proxy.close()


def stored(postgresql_url: str) -> tuple[dict[str, tuple[str, str]], int, Decimal]:
    engine = sa.create_engine(postgresql_url)
    with engine.connect() as connection:
        tasks = {
            row[0]: (row[1], row[2])
            for row in connection.execute(sa.text("SELECT id, status, owner FROM earnings_tasks"))
        }
        count, total = connection.execute(
            sa.text("SELECT count(*), coalesce(sum(total), 0) FROM earnings_records")
        ).one()
    engine.dispose()
    return tasks, count, total


def run_with_fault(
    tmp_path: Path, database_url: str, seconds: float, fault: Callable[[Gunicorn], None]
) -> tuple[Load, Gunicorn]:
    server = Gunicorn(database_url, tmp_path / "spool", tmp_path / "gunicorn.log")
    load = Load()
    runner = threading.Thread(target=load.run, args=(server.base, seconds))
    try:
        runner.start()
        fault(server)
        runner.join(seconds + 90)
    finally:
        server.stop()  # SIGTERM: every worker stores what it holds, then exits
    return load, server


def check(load: Load, postgresql_url: str, tmp_path: Path, *, interrupted_allowed: bool = False) -> None:
    tasks, records, total = stored(postgresql_url)
    assert len(load.succeeded) > 1000, load
    missing = load.succeeded - set(tasks)
    assert not missing, f"{len(missing)} answered calls have no task"
    statuses = {tasks[task_id][0] for task_id in load.succeeded}
    assert statuses <= ({"completed", "interrupted"} if interrupted_allowed else {"completed"}), statuses
    completed = sum(1 for status, _ in tasks.values() if status == "completed")
    assert records == completed  # one earnings record per completed task, none twice
    assert total == completed * EARNED
    assert not list((tmp_path / "spool").glob("*")), "spool or journal files left behind"


def test_four_workers_under_load(tmp_path: Path, postgresql_url: str) -> None:
    load, _ = run_with_fault(tmp_path, postgresql_url, 8, lambda server: None)

    check(load, postgresql_url, tmp_path)
    assert load.failed == 0


def test_the_database_away_for_ten_seconds_in_the_middle(
    tmp_path: Path, postgresql_url: str, through_proxy: tuple[str, TcpProxy]
) -> None:
    url, proxy = through_proxy

    def cut(server: Gunicorn) -> None:
        time.sleep(4)
        proxy.down()
        time.sleep(10)
        proxy.up()

    load, _ = run_with_fault(tmp_path, url, 22, cut)

    check(load, postgresql_url, tmp_path)
    assert load.failed == 0  # no client noticed
    assert "spooling them" in (tmp_path / "gunicorn.log").read_text()


def test_a_worker_stopped_with_sigterm_in_the_middle(tmp_path: Path, postgresql_url: str) -> None:
    def stop_one(server: Gunicorn) -> None:
        time.sleep(4)
        os.kill(server.workers()[0], signal.SIGTERM)

    load, _ = run_with_fault(tmp_path, postgresql_url, 10, stop_one)

    check(load, postgresql_url, tmp_path)


def test_a_worker_killed_with_sigkill_in_the_middle(tmp_path: Path, postgresql_url: str) -> None:
    killed: list[int] = []

    def kill_one(server: Gunicorn) -> None:
        time.sleep(4)
        killed.append(server.workers()[0])
        os.kill(killed[0], signal.SIGKILL)

    load, _ = run_with_fault(tmp_path, postgresql_url, 10, kill_one)

    check(load, postgresql_url, tmp_path, interrupted_allowed=True)
    tasks, _, _ = stored(postgresql_url)
    interrupted = {owner for status, owner in tasks.values() if status == "interrupted"}
    assert all(f"_{killed[0]}_" in owner for owner in interrupted)  # only the killed worker's tasks
    extra = set(tasks) - load.succeeded
    assert all(tasks[task_id][0] == "interrupted" for task_id in extra)  # calls cut off by the kill
