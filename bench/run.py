"""flask-earnings benchmarks: ``python -m bench.run`` (from the repository root).

Every figure is a ratio measured side by side in one run, variants interleaved, medians of
several rounds, so that the machine's mood cancels out:

* B1 — CPU per non-streamed tracked request ÷ untracked (Flask's test client, a view that
  reads the request and answers an OpenAI-shaped JSON reply; the writer's CPU and its
  flush to a file-backed SQLite included), with prometheus_flask_exporter's ratio beside it.
* B2 — CPU of a 1,000-chunk stream, SSE and NDJSON, tracked ÷ untracked, served by
  Werkzeug's server in a process of its own and read by a client in this one.
* B3 — task rows per second the writer stores (upserts) into SQLite and PostgreSQL ÷ a bare
  ``executemany`` insert of the same rows.
* B4 — growth of resident memory over 100,000 tracked requests.

``--quick`` runs fewer rounds (for a smoke test); ``--write FILE`` writes the results as
Markdown (``bench/RESULTS.md`` keeps the latest).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from flask import Flask, Response, jsonify, request

from flask_earnings import Earnings, Task, TaskStatus, TokensSource
from flask_earnings.rows import Batch, RowWriter, record_row, task_row
from flask_earnings.storage import Store, define_tables, standalone_engine
from flask_earnings.tasks import EarningsBreakdown

ROOT = Path(__file__).resolve().parent.parent
POSTGRESQL_URL = os.environ.get("EARNINGS_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TARGETS = {"B1": 1.10, "B2": 1.05, "B3": 0.5, "B4": 5.0}

CHAT_REQUEST = {"model": "Qwen/Qwen2.5-7B-Instruct", "messages": [{"role": "user", "content": "Why is the sky blue?"}]}
#: The streams of B2 carry their usage, as the requests ask (Ollama's always do).
STREAM_REQUEST = {**CHAT_REQUEST, "stream": True, "stream_options": {"include_usage": True}}


@dataclass
class Figure:
    name: str
    value: float
    target: str
    met: bool
    detail: str


# B1: a non-streamed request.


def chat_reply() -> dict[str, Any]:
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "The sky is blue because of Rayleigh scattering."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1234, "completion_tokens": 567, "total_tokens": 1801},
    }


def json_app(variant: str, folder: Path) -> tuple[Flask, Callable[[], None]]:
    app = Flask(f"bench_{variant}", instance_path=str(folder / variant))
    flush: Callable[[], None] = lambda: None  # noqa: E731
    if variant == "flask-earnings":
        earnings = Earnings(app, admin_url_prefix=None)

        def flush() -> None:
            with app.app_context():
                assert earnings.flush(60)

    elif variant == "prometheus_flask_exporter":
        from prometheus_client import CollectorRegistry
        from prometheus_flask_exporter import PrometheusMetrics

        PrometheusMetrics(app, registry=CollectorRegistry())

    @app.post("/v1/chat/completions")
    def chat() -> Response:
        request.get_json()
        return jsonify(chat_reply())

    return app, flush


def b1(rounds: int, requests: int) -> list[Figure]:
    variants = ["untracked", "flask-earnings", "prometheus_flask_exporter"]
    with tempfile.TemporaryDirectory() as folder:
        apps = {variant: json_app(variant, Path(folder)) for variant in variants}
        clients = {variant: app.test_client() for variant, (app, _) in apps.items()}
        for variant in variants:  # warm up: imports, the SQLite file, the writer thread
            for _ in range(300):
                clients[variant].post("/v1/chat/completions", json=CHAT_REQUEST)
            apps[variant][1]()
        cpu: dict[str, list[float]] = {variant: [] for variant in variants}
        for _ in range(rounds):
            for variant in variants:
                client, flush = clients[variant], apps[variant][1]
                gc.collect()
                start = time.process_time()
                for _ in range(requests):
                    client.post("/v1/chat/completions", json=CHAT_REQUEST)
                flush()
                cpu[variant].append((time.process_time() - start) / requests)
    base = statistics.median(cpu["untracked"])
    ours = statistics.median(cpu["flask-earnings"]) / base
    theirs = statistics.median(cpu["prometheus_flask_exporter"]) / base
    detail = (
        f"untracked {base * 1e6:.0f} µs, flask-earnings {statistics.median(cpu['flask-earnings']) * 1e6:.0f} µs, "
        f"prometheus_flask_exporter {statistics.median(cpu['prometheus_flask_exporter']) * 1e6:.0f} µs of CPU a "
        f"request; prometheus_flask_exporter's ratio {theirs:.3f}"
    )
    return [Figure("B1 non-streamed request, tracked ÷ untracked CPU", ours, "≤ 1.10", ours <= TARGETS["B1"], detail)]


# B2: a 1,000-chunk stream through a real server.


def server_cpu(client: httpx.Client, base: str) -> float:
    """Seconds of CPU the server process used, all its threads (ended ones too), to the
    nanosecond: ``/proc``'s 10 ms ticks would quantise a stream's 7 ms to tenths of a ms."""
    return float(client.get(base + "/cpu").text)


def b2(rounds: int, streams: int) -> list[Figure]:
    servers = {}
    for variant in ("untracked", "tracked"):
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.stream_server", variant],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert process.stdout is not None
        servers[variant] = (process, f"http://127.0.0.1:{int(process.stdout.readline())}")
    figures = []
    try:
        with httpx.Client(timeout=60) as client:
            for path, kind in (("/api/chat", "NDJSON"), ("/v1/chat/completions", "SSE")):
                cpu: dict[str, list[float]] = {variant: [] for variant in servers}
                for _, base in servers.values():  # warm up
                    for _ in range(5):
                        client.post(base + path, json=STREAM_REQUEST).read()
                for _ in range(rounds):
                    for variant, (_, base) in servers.items():
                        start = server_cpu(client, base)
                        for _ in range(streams):
                            with client.stream("POST", base + path, json=STREAM_REQUEST) as reply:
                                for _ in reply.iter_raw():
                                    pass
                        time.sleep(0.3)  # the writer's share, counted in the same window
                        cpu[variant].append((server_cpu(client, base) - start) / streams)
                ratio = statistics.median(cpu["tracked"]) / statistics.median(cpu["untracked"])
                detail = (
                    f"untracked {statistics.median(cpu['untracked']) * 1e3:.2f} ms, "
                    f"tracked {statistics.median(cpu['tracked']) * 1e3:.2f} ms of server CPU a stream"
                )
                name = f"B2 1,000-chunk {kind} stream, tracked ÷ untracked CPU"
                figures.append(Figure(name, ratio, "≤ 1.05", ratio <= TARGETS["B2"], detail))
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(10)
            if process.stdout is not None:
                process.stdout.close()
    return figures


# B3: the writer's stores.


def sample_batch(size: int) -> Batch:
    now = datetime.now(UTC)
    earnings = EarningsBreakdown(Decimal("1.851"), Decimal("1.701"), Decimal("0.015"), Decimal(0), Decimal("3.567"))
    batch = Batch()
    for _ in range(size):
        task = Task(
            uuid.uuid4().hex, None, TaskStatus.COMPLETED, "vllm", "openai", "chat/completions", "/v1/chat/completions",
            "Qwen/Qwen2.5-7B-Instruct", "node-1", "key-1", False, 1234, 567, None, None, TokensSource.REPORTED, now,
            now, now, 2500, 200, None, 1, earnings,
        )  # fmt: skip
        batch.add_task(task_row(task, "host_boot_1_1"))
        batch.records.append(record_row(task.id, earnings, 1, now))
    return batch


def b3(rounds: int, rows: int) -> list[Figure]:
    figures = []
    with tempfile.TemporaryDirectory() as folder:
        for name, url in (("SQLite", f"sqlite:///{folder}/bench.sqlite3"), ("PostgreSQL", POSTGRESQL_URL)):
            writer_rate, bare_rate = [], []
            for _ in range(rounds):
                ours, bare = _store_rates(url, rows)
                writer_rate.append(ours)
                bare_rate.append(bare)
            ratio = statistics.median(writer_rate) / statistics.median(bare_rate)
            detail = (
                f"writer {statistics.median(writer_rate):,.0f} tasks/s, bare executemany "
                f"{statistics.median(bare_rate):,.0f} tasks/s (a task: its row and its earnings row)"
            )
            figures.append(
                Figure(f"B3 writer ÷ bare executemany, {name}", ratio, "≥ 0.5", ratio >= TARGETS["B3"], detail)
            )
    return figures


def _store_rates(url: str, rows: int) -> tuple[float, float]:
    """Tasks a second through the writer's path, and through a bare insert of the same rows."""
    metadata = sa.MetaData()
    tables = define_tables(metadata)
    engine = standalone_engine(url)
    metadata.drop_all(engine, tables=[tables.records, tables.tasks, tables.versions])
    store = Store(tables, lambda: engine, owned=True)
    batches = [sample_batch(500) for _ in range(rows // 500)]
    with store.connect():
        pass
    start = time.perf_counter()
    for batch in batches:
        store.write(batch)
    ours = rows / (time.perf_counter() - start)

    metadata.drop_all(engine, tables=[tables.records, tables.tasks, tables.versions])
    metadata.create_all(engine, tables=[tables.tasks, tables.records])
    batches = [sample_batch(500) for _ in range(rows // 500)]
    with engine.connect() as connection:
        writer = RowWriter(connection.dialect, "x", "y")
    mark = "?" if engine.dialect.name == "sqlite" else "%s"
    from flask_earnings.rows import RECORD_COLUMNS, TASK_COLUMNS

    task_sql = (
        f"INSERT INTO earnings_tasks ({', '.join(TASK_COLUMNS)}) VALUES ({', '.join([mark] * len(TASK_COLUMNS))})"
    )
    record_sql = (
        f"INSERT INTO earnings_records ({', '.join(RECORD_COLUMNS)}) VALUES ({', '.join([mark] * len(RECORD_COLUMNS))})"
    )
    ready = [
        (
            [writer._convert_tasks(row) for row in batch.tasks.values()],
            [writer._convert_records(r) for r in batch.records],
        )
        for batch in batches
    ]  # the bare insert gets its rows ready-made: only the database's work is timed
    start = time.perf_counter()
    for task_rows, record_rows in ready:
        with engine.begin() as connection:
            cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cursor.executemany(task_sql, task_rows)
            cursor.executemany(record_sql, record_rows)
    bare = rows / (time.perf_counter() - start)
    metadata.drop_all(engine, tables=[tables.records, tables.tasks, tables.versions])
    engine.dispose()
    return ours, bare


# B4: memory over many requests.


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def b4(requests: int) -> list[Figure]:
    with tempfile.TemporaryDirectory() as folder:
        app, flush = json_app("flask-earnings", Path(folder))
        client = app.test_client()
        for _ in range(5_000):  # warm up: caches, the SQLite page cache, the allocator
            client.post("/v1/chat/completions", json=CHAT_REQUEST)
        flush()
        gc.collect()
        before = rss()
        for _ in range(requests):
            client.post("/v1/chat/completions", json=CHAT_REQUEST)
        flush()
        gc.collect()
        growth = (rss() - before) / 1024 / 1024
    detail = f"resident memory {before / 1024 / 1024:.1f} MB before, {growth:+.2f} MB after {requests:,} requests"
    return [Figure(f"B4 memory growth over {requests:,} tracked requests (MB)", growth, "≤ 5 MB", growth <= 5, detail)]


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}"


def markdown(figures: list[Figure], started: datetime, quick: bool) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC with `python -m bench.run{' --quick' if quick else ''}`",
        f"on {machine()}.",
        "",
        "| benchmark | figure | target | met |",
        "|---|---|---|---|",
        *(
            f"| {figure.name} | {figure.value:.3f} | {figure.target} | {'yes' if figure.met else '**no**'} |"
            for figure in figures
        ),
        "",
        *(f"- {figure.name}: {figure.detail}." for figure in figures),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke test")
    parser.add_argument("--write", type=Path, help="write the results as Markdown to this file")
    parser.add_argument("--only", nargs="*", choices=["B1", "B2", "B3", "B4"], help="run only these")
    arguments = parser.parse_args()
    quick = arguments.quick
    started = datetime.now(UTC)
    selected = arguments.only or ["B1", "B2", "B3", "B4"]
    figures: list[Figure] = []
    if "B1" in selected:
        figures += b1(rounds=3 if quick else 9, requests=500 if quick else 3_000)
    if "B2" in selected:
        figures += b2(rounds=3 if quick else 9, streams=20 if quick else 100)
    if "B3" in selected:
        figures += b3(rounds=1 if quick else 5, rows=2_000 if quick else 20_000)
    if "B4" in selected:
        figures += b4(requests=5_000 if quick else 100_000)
    report = markdown(figures, started, quick)
    print(report)
    if arguments.write:
        arguments.write.write_text(report, encoding="utf-8")
    sys.exit(0 if all(figure.met for figure in figures) else 1)


if __name__ == "__main__":
    main()
