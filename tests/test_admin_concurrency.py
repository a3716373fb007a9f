"""Rate edits under contention: one winner per version, and every task priced by the version it records."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import httpx
from flask import Response, jsonify

from flask_earnings.pricing import price

from . import payloads
from .conftest import MakeApp
from .helpers import TASK_HEADER, serving, stored_task

TOKEN = "s3cret-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def race(clients: list[Any], current: dict[str, Any], round_: int) -> list[int]:
    """Both clients send a different edit of the same version at the same moment."""
    barrier = threading.Barrier(len(clients))
    statuses: list[int] = []

    def write(writer: int) -> None:
        table = current["table"]
        edited = {**table, "default": {**table["default"], "base": f"0.0{round_}{writer + 1}"}}
        barrier.wait(5)
        response = clients[writer].put(
            "/earnings/api/rates", json=edited, headers={**AUTH, "If-Match": f'"{current["version"]}"'}
        )
        statuses.append(response.status_code)

    writers = [threading.Thread(target=write, args=(writer,)) for writer in range(len(clients))]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(10)
    return statuses


def test_two_writers_with_the_same_if_match_exactly_one_wins(make_app: MakeApp, database_url: str) -> None:
    app, _ = make_app(admin_token=TOKEN, database_uri=database_url)
    clients = [app.test_client(), app.test_client()]

    for round_ in range(30):
        current = clients[0].get("/earnings/api/rates", headers=AUTH).json

        statuses = race(clients, current, round_)

        assert sorted(statuses) == [200, 412], (round_, statuses)
        assert clients[0].get("/earnings/api/rates", headers=AUTH).json["version"] == current["version"] + 1


def test_tasks_recorded_while_the_rates_flip_are_each_priced_by_their_own_version(
    make_app: MakeApp, database_url: str
) -> None:
    app, earnings = make_app(admin_token=TOKEN, database_uri=database_url)

    @app.post("/v1/chat/completions")
    def chat() -> Response:
        return jsonify(payloads.openai_chat_reply(payloads.openai_usage(1234, 567)))

    done = threading.Event()
    task_ids: list[str] = []
    lock = threading.Lock()

    with serving(app) as base:

        def record() -> None:
            with httpx.Client(base_url=base) as client:
                for _ in range(5_000):  # bounded: stops as soon as the flips are over
                    if done.is_set():
                        return
                    response = client.post("/v1/chat/completions", json=payloads.openai_chat_request())
                    with lock:
                        task_ids.append(response.headers[TASK_HEADER])

        callers = [threading.Thread(target=record) for _ in range(8)]
        for thread in callers:
            thread.start()
        with httpx.Client(base_url=base + "/earnings/api", headers=AUTH, timeout=30) as admin:
            first = admin.get("/rates").json()["table"]
            chat_rate = {"input": "0.002", "output": "0.001", "base": "0"}
            second = {**first, "vllm": {**first["vllm"], "chat/completions": chat_rate}}
            for flip in range(100):
                version = admin.get("/rates").json()["version"]
                table = second if flip % 2 == 0 else first
                response = admin.put("/rates", json=table, headers={"If-Match": f'"{version}"'})
                assert response.status_code == 200
        done.set()
        for thread in callers:
            thread.join(30)

    tasks = [stored_task(app, earnings, task_id) for task_id in task_ids]
    with app.app_context():
        book = app.extensions["earnings"].rate_book
        tables = {number: book.version(number).table for number in {task.rate_version for task in tasks}}
    for task in tasks:
        rate, _ = tables[task.rate_version].lookup("vllm", "chat/completions", task.model)
        expected = price(rate, input_tokens=1234, output_tokens=567, duration_ms=task.duration_ms or 0)
        assert task.earnings == expected, task
    assert {task.earnings.total for task in tasks if task.earnings} == {Decimal("3.567"), Decimal("3.035")}
    assert len(tables) > 20, f"the tasks saw only {len(tables)} of the 101 versions"
