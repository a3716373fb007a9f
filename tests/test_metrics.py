"""Prometheus metrics (``EARNINGS_METRICS``): what a scrape of ``<admin prefix>/metrics`` says
equals what the database holds, in one process and summed over gunicorn workers; the route
is the admin's; and without prometheus_client an app asking for metrics does not start."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from flask_earnings import Earnings, TaskStatus
from flask_earnings import spool as spool_module
from flask_earnings import storage as storage_module
from flask_earnings.reports import ReportQuery, summary
from flask_earnings.rows import Batch
from flask_earnings.signals import task_completed
from flask_earnings.storage import Store, define_tables, standalone_engine

from . import payloads
from .conftest import MakeApp
from .helpers import TASK_HEADER, add_upstream_view, call, database_away, stored_task

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "metrics-admin-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}

Group = tuple[str, str]  # framework, task type


@dataclass(frozen=True)
class Figures:
    """Tasks by (framework, task type, status); tokens and earnings by (framework, task type).
    Zeros are left out, so that a series at 0 and no series compare equal."""

    tasks: dict[tuple[str, str, str], int]
    input_tokens: dict[Group, int]
    output_tokens: dict[Group, int]
    earnings: dict[Group, float]

    def minus(self, before: Figures) -> Figures:
        """What changed since ``before`` (the metrics are the process's, over every test's apps)."""

        def less(after: dict[Any, Any], earlier: dict[Any, Any]) -> dict[Any, Any]:
            return _nonzero({key: value - earlier.get(key, 0) for key, value in after.items()})

        return Figures(
            less(self.tasks, before.tasks),
            less(self.input_tokens, before.input_tokens),
            less(self.output_tokens, before.output_tokens),
            less(self.earnings, before.earnings),
        )


def _nonzero(values: dict[Any, Any]) -> dict[Any, Any]:
    return {key: value for key, value in values.items() if value}


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Each sample name's (labels, value) pairs in a text exposition."""
    found: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name].append((sample.labels, sample.value))
    return found


def scraped(text: str) -> Figures:
    found = samples(text)

    def by_group(name: str) -> dict[Group, float]:
        return {(labels["framework"], labels["task_type"]): value for labels, value in found[name]}

    return Figures(
        _nonzero(
            {
                (labels["framework"], labels["task_type"], labels["status"]): int(value)
                for labels, value in found["earnings_tasks_total"]
            }
        ),
        _nonzero({group: int(value) for group, value in by_group("earnings_input_tokens_total").items()}),
        _nonzero({group: int(value) for group, value in by_group("earnings_output_tokens_total").items()}),
        _nonzero(by_group("earnings_total")),
    )


def in_database(store: Store) -> tuple[Figures, dict[Group, Decimal]]:
    """The same figures from the records, by the report every other reader uses; and the exact
    earnings, to compare the scrape's floats with."""
    report = summary(store, ReportQuery(group_by=("framework", "task_type")))
    groups = {(str(row.key[0]), str(row.key[1])): row for row in report.rows}
    exact = _nonzero({group: row.earnings for group, row in groups.items()})
    figures = Figures(
        _nonzero(
            {(*group, status.value): count for group, row in groups.items() for status, count in row.by_status.items()}
        ),
        _nonzero({group: row.input_tokens for group, row in groups.items()}),
        _nonzero({group: row.output_tokens for group, row in groups.items()}),
        {group: float(total) for group, total in exact.items()},
    )
    return figures, exact


def assert_scrape_matches(scrape: Figures, stored: Figures, exact: dict[Group, Decimal]) -> None:
    assert scrape.tasks == stored.tasks
    assert scrape.input_tokens == stored.input_tokens
    assert scrape.output_tokens == stored.output_tokens
    # The exposition format carries floats, and a counter adds one float per task: equal to the
    # exact Decimal sums within float rounding (about 1e-16 per addition), never more.
    assert scrape.earnings.keys() == exact.keys()
    for group, total in exact.items():
        assert abs(scrape.earnings[group] - float(total)) <= 1e-9 * max(1.0, float(total)), group


def scrape(app: Flask) -> str:
    response = app.test_client().get("/earnings/metrics", headers=BEARER)
    assert response.status_code == 200, response.text
    return response.text


def eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    """Wait (boundedly) for what the writer does after each of its loops."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.05)


def gauge(text: str, name: str) -> float:
    [(_, value)] = samples(text)[name]
    return value


def dropped(text: str) -> float:
    return sum(value for _, value in samples(text)["earnings_dropped_records_total"])


def metrics_app(make_app: MakeApp, **options: Any) -> tuple[Flask, Earnings]:
    """An app with metrics, and upstream views of each kind of reply."""
    app, earnings = make_app(metrics=True, admin_token=TOKEN, **options)
    add_upstream_view(app, "/api/chat", payloads.ollama_chat_reply(12, 30))
    stream = b"".join(payloads.ollama_stream(prompt_eval_count=7, eval_count=9))
    add_upstream_view(app, "/ollama/api/chat", stream, shape="relay", content_type="application/x-ndjson")
    add_upstream_view(app, "/v1/chat/completions", payloads.openai_chat_reply(payloads.openai_usage(10, 20)))
    add_upstream_view(app, "/api/generate", payloads.ollama_error(), status=404)
    add_upstream_view(app, "/api/embeddings", payloads.ollama_embeddings_reply())  # estimated counts
    return app, earnings


CALLS = [
    ("/api/chat", payloads.ollama_chat_request()),
    ("/api/chat", payloads.ollama_chat_request("Why?")),
    ("/ollama/api/chat", {**payloads.ollama_chat_request(), "stream": True}),
    ("/v1/chat/completions", payloads.openai_chat_request()),
    ("/v1/chat/completions", payloads.openai_chat_request()),
    ("/api/generate", payloads.ollama_generate_request()),
    ("/api/embeddings", payloads.ollama_embeddings_request()),
]


# One process.


def test_a_scrape_counts_what_the_database_holds(make_app: MakeApp) -> None:
    app, earnings = metrics_app(make_app)
    before = scraped(scrape(app))

    tasks = [call(app, earnings, path, body)[1] for path, body in CALLS]
    with app.app_context():
        assert earnings.flush(10)
    after = scraped(scrape(app))

    stored, exact = in_database(app.extensions["earnings"].store)
    assert {task.status for task in tasks} == {TaskStatus.COMPLETED, TaskStatus.FAILED}
    assert stored.tasks == {
        ("ollama", "chat", "completed"): 3,  # two whole replies and a stream
        ("vllm", "chat/completions", "completed"): 2,
        ("ollama", "generate", "failed"): 1,
        ("ollama", "embeddings", "completed"): 1,  # counts estimated: the legacy reply has none
    }
    assert_scrape_matches(after.minus(before), stored, exact)


def test_tasks_spooled_while_the_database_refuses_are_counted_once(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, earnings = metrics_app(make_app)
    recorder = app.extensions["earnings"].recorder
    before = scraped(scrape(app))
    original = storage_module.Store.write

    monkeypatch.setattr(storage_module.Store, "write", database_away)
    ids = [app.test_client().post(path, json=body, buffered=True).headers[TASK_HEADER] for path, body in CALLS]
    with app.app_context():
        assert earnings.flush(10)
    spooled = sum(path.stat().st_size for path in recorder.spool_dir.glob("spool-*"))
    assert spooled > 0
    eventually(lambda: gauge(scrape(app), "earnings_spool_bytes") == spooled)  # set by the writer
    counted = scraped(scrape(app)).minus(before)
    assert sum(counted.tasks.values()) == len(CALLS)  # counted as they ended, spooled or not

    monkeypatch.setattr(storage_module.Store, "write", original)
    for task_id in ids:
        stored_task(app, earnings, task_id)  # the spool is replayed
    eventually(lambda: gauge(scrape(app), "earnings_spool_bytes") == 0)

    stored, exact = in_database(app.extensions["earnings"].store)
    assert scraped(scrape(app)).minus(before) == counted  # the replay counted nothing again
    assert_scrape_matches(counted, stored, exact)


def test_the_queue_depth_is_what_waits_for_the_writer(make_app: MakeApp) -> None:
    app, earnings = metrics_app(make_app)
    recorder = app.extensions["earnings"].recorder
    release = threading.Event()
    held = threading.Event()

    def hold_the_writer(sender: Flask, **extra: Any) -> None:
        held.set()
        release.wait(10)

    task_completed.connect(hold_the_writer, sender=app)
    try:
        client = app.test_client()
        client.post("/api/chat", json=payloads.ollama_chat_request(), buffered=True)
        assert held.wait(10)
        for _ in range(3):  # requests are not held up: they queue their tasks
            client.post("/api/chat", json=payloads.ollama_chat_request(), buffered=True)
        assert recorder.queued >= 3
        assert recorder.on_loop is not None
        recorder.on_loop(recorder)  # what the writer calls after each loop
        assert gauge(scrape(app), "earnings_queue_depth") == recorder.queued
    finally:
        release.set()
        task_completed.disconnect(hold_the_writer, sender=app)

    with app.app_context():
        assert earnings.flush(10)
    eventually(lambda: gauge(scrape(app), "earnings_queue_depth") == 0)  # the writer's own report


def test_rows_neither_the_database_nor_the_spool_took_are_counted_as_dropped(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, earnings = metrics_app(make_app)
    recorder = app.extensions["earnings"].recorder
    before = dropped(scrape(app))

    def refuse(self: Any, batch: Batch, **extra: Any) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr("flask_earnings.recorder.GIVE_UP_SECONDS", 0.0)
    monkeypatch.setattr(storage_module.Store, "write", refuse)
    monkeypatch.setattr(spool_module.Spool, "append", refuse)
    app.test_client().post("/api/chat", json=payloads.ollama_chat_request(), buffered=True)
    with app.app_context():
        assert earnings.flush(10)

    assert recorder.dropped > 0
    eventually(lambda: dropped(scrape(app)) - before == recorder.dropped)


# The route.


def test_the_route_is_the_admins(make_app: MakeApp) -> None:
    app, _ = metrics_app(make_app)
    client = app.test_client()

    refused = client.get("/earnings/metrics")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == 'Bearer realm="earnings"'
    assert refused.json == {"message": "Sign in to the earnings admin."}  # a scraper's answer, not a page
    assert client.get("/earnings/metrics", headers={"Authorization": "Bearer not-the-token-at-all"}).status_code == 401
    response = client.get("/earnings/metrics", headers=BEARER)
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert "# TYPE earnings_tasks_total counter" in response.text


def test_the_admins_callback_lets_a_scraper_in_too(make_app: MakeApp) -> None:
    app, earnings = make_app(metrics=True)
    earnings.admin_auth(lambda: "prometheus")

    assert app.test_client().get("/earnings/metrics").status_code == 200


def test_a_closed_admin_serves_no_metrics(make_app: MakeApp) -> None:
    app, _ = make_app(metrics=True)  # neither a token nor a callback

    assert app.test_client().get("/earnings/metrics", headers=BEARER).status_code == 403


def test_without_metrics_there_is_no_route(make_app: MakeApp) -> None:
    app, _ = make_app(admin_token=TOKEN)

    assert app.test_client().get("/earnings/metrics", headers=BEARER).status_code == 404
    assert app.test_client().get("/earnings/metrics").status_code == 404  # not even a sign-in page


def test_metrics_must_be_true_or_false(make_app: MakeApp) -> None:
    with pytest.raises(TypeError, match="EARNINGS_METRICS must be True or False"):
        make_app(config={"EARNINGS_METRICS": "yes"})


def test_without_prometheus_client_metrics_stop_the_app_at_start_up(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import prometheus_client fails
    monkeypatch.delitem(sys.modules, "flask_earnings.metrics", raising=False)

    with pytest.raises(RuntimeError, match=r"pip install 'flask-earnings\[prometheus\]'"):
        make_app(metrics=True, admin_token=TOKEN)

    app, earnings = make_app(admin_token=TOKEN)  # the extra is optional: without metrics, all works
    add_upstream_view(app, "/api/chat", payloads.ollama_chat_reply(12, 30))
    _, task = call(app, earnings, "/api/chat", payloads.ollama_chat_request())
    assert task.status is TaskStatus.COMPLETED
    assert app.test_client().get("/earnings/metrics", headers=BEARER).status_code == 404


# Four gunicorn workers.

#: gunicorn's config: a worker that exits takes its live gauges with it (its counters stay).
GUNICORN_CONFIG = """\
from prometheus_client import multiprocess


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)
"""


def call_for(number: int) -> tuple[str, dict[str, Any]]:
    """Call ``number`` of the load: each kind of task, with counts that vary from call to call."""
    words = " ".join(["word"] * (number % 7 + 1))
    kind = number % 5
    if kind in (0, 1):
        body = payloads.ollama_chat_request(words)
        return "/api/chat", {**body, "stream": kind == 1, "options": {"num_predict": number % 13 + 1}}
    if kind == 2:  # every other one a model Ollama does not have: a failed task
        model = "llama9" if number % 10 == 2 else "llama3.2"
        return "/api/chat", {**payloads.ollama_chat_request(words, model), "options": {"num_predict": 3}}
    if kind == 3:
        return "/v1/chat/completions", {**payloads.openai_chat_request(words), "max_tokens": number % 17 + 1}
    return "/v1/embeddings", {"model": "BAAI/bge-m3", "input": words}


@dataclass
class GunicornLoad:
    """A bounded number of calls from 8 threads of this process, within a time limit."""

    calls: int
    seconds: float

    def run(self, base: str) -> tuple[set[str], list[str]]:
        numbers = itertools.count()
        deadline = time.monotonic() + self.seconds
        answered: set[str] = set()
        problems: list[str] = []
        lock = threading.Lock()

        def caller() -> None:
            with httpx.Client(base_url=base, timeout=30) as client:
                while time.monotonic() < deadline and (number := next(numbers)) < self.calls:
                    path, body = call_for(number)
                    try:
                        response = client.post(path, json=body)
                        task_id = response.headers.get(TASK_HEADER)
                        problem = None if task_id and response.status_code in (200, 404) else response.text
                    except httpx.HTTPError as error:
                        task_id, problem = None, repr(error)
                    with lock:
                        if task_id:
                            answered.add(task_id)
                        if problem is not None:
                            problems.append(problem)

        threads = [threading.Thread(target=caller) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.seconds + 30)
        return answered, problems


@pytest.fixture
def gunicorn_with_metrics(tmp_path: Path, postgresql_url: str) -> Iterator[tuple[str, Path, Callable[[], set[int]]]]:
    """Four workers with metrics on, in prometheus_client's multiprocess mode, recycled every
    200 to 250 calls (``--max-requests``), so that workers exit and new ones start mid-load."""
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()  # empty, before the server starts
    config = tmp_path / "gunicorn_conf.py"
    config.write_text(GUNICORN_CONFIG)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    factory = f"tests.served_metrics_app:create_app({postgresql_url!r}, {str(tmp_path / 'spool')!r}, {TOKEN!r})"
    command = [sys.executable, "-m", "gunicorn", "-c", str(config), "-w", "4", "-b", f"127.0.0.1:{port}"]
    command += ["--max-requests", "200", "--max-requests-jitter", "50", "--graceful-timeout", "30", factory]
    log_path = tmp_path / "gunicorn.log"
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def workers() -> set[int]:
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        return {int(pid) for pid in children}

    def answers() -> bool:
        try:
            return httpx.get(base + "/", timeout=2).status_code == 404
        except httpx.HTTPError:
            return False

    try:
        deadline = time.monotonic() + 30
        while len(workers()) < 4 or not answers():
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        yield base, multiproc, workers
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)


def stored_statuses(store: Store) -> dict[str, str]:
    tasks = store.tables.tasks
    with store.connect() as connection:
        return {row.id: row.status for row in connection.execute(sa.select(tasks.c.id, tasks.c.status))}


@pytest.mark.slow
def test_a_scrape_of_four_gunicorn_workers_sums_to_the_database(
    gunicorn_with_metrics: tuple[str, Path, Callable[[], set[int]]], postgresql_url: str
) -> None:
    """The issue's promise: a Prometheus scrape of a multi-worker deployment sums to the
    database's totals, by status, tokens in and out, and earnings."""
    base, multiproc, workers = gunicorn_with_metrics
    store = Store(define_tables(sa.MetaData()), lambda: standalone_engine(postgresql_url), owned=True)

    answered, problems = GunicornLoad(calls=1200, seconds=60).run(base)

    assert not problems, problems[:5]
    assert len(answered) == 1200
    deadline = time.monotonic() + 60  # the writers store within their flush interval
    while True:
        statuses = stored_statuses(store)
        if answered <= statuses.keys() and TaskStatus.RUNNING.value not in statuses.values():
            break
        assert time.monotonic() < deadline, f"{len(answered - statuses.keys())} answered calls not stored"
        time.sleep(0.2)
    stored, exact = in_database(store)
    assert set(statuses) == answered

    def scrape_text() -> str:
        response = httpx.get(base + "/earnings/metrics", headers=BEARER, timeout=10)  # any worker answers
        assert response.status_code == 200, response.text
        return response.text

    # A worker counts a task just after storing it: wait for the last counts to land.
    eventually(lambda: sum(scraped(scrape_text()).tasks.values()) >= len(answered), timeout=30)
    figures = scraped(scrape_text())
    print(  # the figures, for -s
        f"\nscrape of {len(workers())} workers: tasks {figures.tasks}, tokens in {sum(figures.input_tokens.values())}"
        f" out {sum(figures.output_tokens.values())}, earnings {sum(figures.earnings.values())!r};"
        f" database: earnings {sum(exact.values())}"
    )
    assert_scrape_matches(figures, stored, exact)
    assert {status for _, _, status in stored.tasks} == {"completed", "failed"}

    # Workers were recycled mid-load, and what the exited ones counted is in the sums above.
    assert len(list(multiproc.glob("counter_*.db"))) > 4
    # child_exit removed the exited workers' live gauges: one sum over the live workers, idle now.
    eventually(lambda: {int(path.stem.rpartition("_")[2]) for path in multiproc.glob("gauge_livesum_*")} == workers())
    eventually(lambda: gauge(scrape_text(), "earnings_queue_depth") == 0)
    assert gauge(scrape_text(), "earnings_spool_bytes") == 0
