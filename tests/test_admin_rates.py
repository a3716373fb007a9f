"""Live rates through the admin API: versions, optimistic edits, history, rollback, and tasks."""

from __future__ import annotations

import logging
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, jsonify
from werkzeug.test import TestResponse

from flask_earnings import Earnings, TaskStatus
from flask_earnings.signals import rates_changed

from . import payloads
from .conftest import MakeApp
from .helpers import TASK_HEADER, add_upstream_view, stored_task

TOKEN = "s3cret-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Admin:
    """The JSON API of one app, as an operator's script would call it."""

    def __init__(self, app: Flask) -> None:
        self.client = app.test_client()

    def get(self, path: str, **query: Any) -> TestResponse:
        return self.client.get("/earnings/api" + path, query_string=query, headers=AUTH)

    def send(self, method: str, path: str, body: Any, if_match: str | None = None, **headers: str) -> TestResponse:
        if if_match is not None:
            headers["If-Match"] = if_match
        return self.client.open("/earnings/api" + path, method=method, json=body, headers={**AUTH, **headers})

    def table(self) -> dict[str, Any]:
        table: dict[str, Any] = self.get("/rates").json["table"]
        return table

    def version(self) -> int:
        version: int = self.get("/rates").json["version"]
        return version


@pytest.fixture
def admin_app(make_app: MakeApp) -> tuple[Flask, Earnings, Admin]:
    app, earnings = make_app(admin_token=TOKEN)
    return app, earnings, Admin(app)


def test_get_rates_gives_the_table_its_version_and_an_etag(admin_app: tuple[Flask, Earnings, Admin]) -> None:
    _, _, admin = admin_app

    response = admin.get("/rates")

    assert response.status_code == 200
    assert response.headers["ETag"] == '"1"'
    assert response.json["version"] == 1 and response.json["source"] == "config"
    assert response.json["table"]["vllm"]["chat/completions"] == {"input": "0.0015", "output": "0.003", "base": "0.015"}
    assert response.json["table"]["duration_bonus"] == {"threshold_ms": 1000, "per_ms": "0.0001", "cap": "0.01"}


def test_put_replaces_the_table_as_a_new_version(admin_app: tuple[Flask, Earnings, Admin]) -> None:
    app, earnings, admin = admin_app
    table = admin.table()
    table["vllm"]["chat/completions"]["output"] = "0.0035"

    response = admin.send("PUT", "/rates", table, if_match='"1"', **{"X-Request-ID": "req-1"})

    assert response.status_code == 200
    assert response.headers["ETag"] == '"2"'
    body = response.json
    assert (body["version"], body["based_on"], body["actor"], body["request_id"]) == (2, 1, "token", "req-1")
    assert body["changes"] == [{"path": "vllm.chat/completions.output", "from": "0.003", "to": "0.0035"}]
    with app.app_context():
        assert earnings.rate_version.number == 2  # this process prices with it at once
        assert earnings.rate_table.lookup("vllm", "chat/completions", None)[0].output == Decimal("0.0035")


def test_an_edit_needs_if_match(admin_app: tuple[Flask, Earnings, Admin]) -> None:
    _, _, admin = admin_app
    table = admin.table()

    missing = admin.send("PUT", "/rates", table)
    star = admin.send("PUT", "/rates", table, if_match="*")
    patched = admin.send("PATCH", "/rates/vllm/embeddings", {"base": "1"})

    assert missing.status_code == 428 and patched.status_code == 428
    assert star.status_code == 412
    assert admin.version() == 1


def test_an_edit_based_on_an_old_version_is_refused(admin_app: tuple[Flask, Earnings, Admin]) -> None:
    _, _, admin = admin_app
    table = admin.table()
    table["default"]["base"] = "0.02"
    assert admin.send("PUT", "/rates", table, if_match='"1"').status_code == 200
    table["default"]["base"] = "0.03"

    stale = admin.send("PUT", "/rates", table, if_match='"1"')

    assert stale.status_code == 412
    assert stale.json["current_version"] == 2
    assert admin.table()["default"]["base"] == "0.02"


def test_a_rejected_edit_names_the_field_and_changes_nothing(admin_app: tuple[Flask, Earnings, Admin]) -> None:
    _, _, admin = admin_app
    before = admin.table()
    table = admin.table()
    table["vllm"]["embeddings"]["input"] = "-0.1"
    table["olama"] = {}

    response = admin.send("PUT", "/rates", table, if_match='"1"')

    assert response.status_code == 422
    assert response.json["errors"]["vllm"]["embeddings"]["input"] == ["Must not be negative."]
    assert response.json["errors"]["olama"] == ["Unknown field."]
    assert (admin.version(), admin.table()) == (1, before)
    assert len(admin.get("/rates/versions").json["versions"]) == 1


def test_patch_changes_one_entry(admin_app: tuple[Flask, Earnings, Admin]) -> None:
    _, _, admin = admin_app

    output = admin.send("PATCH", "/rates/ollama/chat", {"output": "0.0025"}, if_match='"1"')
    new_entry = admin.send(
        "PATCH", "/rates/vllm/chat", {"input": "0.002", "output": "0.004", "base": "0.02"}, if_match='"2"'
    )
    default = admin.send("PATCH", "/rates/default", {"base": "0.012"}, if_match='"3"')
    bonus = admin.send("PATCH", "/rates/duration_bonus", {"cap": "0.02"}, if_match='"4"')

    assert [response.status_code for response in (output, new_entry, default, bonus)] == [200] * 4
    table = admin.table()
    assert table["ollama"]["chat"] == {"input": "0.001", "output": "0.0025", "base": "0.01"}
    assert table["vllm"]["chat"] == {"input": "0.002", "output": "0.004", "base": "0.02"}
    assert (table["default"]["base"], table["duration_bonus"]["cap"]) == ("0.012", "0.02")
    assert admin.version() == 5


def test_patch_merges_nested_objects_like_a_json_merge_patch(admin_app: tuple[Flask, Earnings, Admin]) -> None:
    _, _, admin = admin_app
    two_models = {"llama3.2": {"input": "0.002", "output": "0.004"}, "qwen2.5:7b": {"base": "0.05"}}
    admin.send("PATCH", "/rates/ollama/chat", {"models": two_models}, if_match='"1"')

    response = admin.send("PATCH", "/rates/ollama/chat", {"models": {"llama3.2": {"output": "0.003"}}}, if_match='"2"')

    assert response.status_code == 200
    assert admin.table()["ollama"]["chat"]["models"] == {
        "llama3.2": {"input": "0.002", "output": "0.003"},
        "qwen2.5:7b": {"base": "0.05"},
    }
    assert [change["path"] for change in response.json["changes"]] == ["ollama.chat.models.llama3.2.output"]


@pytest.mark.parametrize(
    ("path", "body", "error_path"),
    [
        ("/rates/vllm/embeddings", {"input": "NaN"}, ["vllm", "embeddings", "input"]),
        ("/rates/vllm/chat", {"input": "0.1"}, ["vllm", "chat", "output"]),  # a new entry needs every field
        ("/rates/vllm/chatty", {"input": "0.1", "output": "0", "base": "0"}, ["vllm", "chatty"]),
        ("/rates/sglang/chat", {"input": "0.1", "output": "0", "base": "0"}, ["sglang"]),
        ("/rates/duration_bonus", {"threshold_ms": "soon"}, ["duration_bonus", "threshold_ms"]),
        ("/rates/default", {"discount": "0.5"}, ["default", "discount"]),
    ],
)
def test_a_rejected_patch_changes_nothing(
    admin_app: tuple[Flask, Earnings, Admin], path: str, body: dict[str, Any], error_path: list[str]
) -> None:
    _, _, admin = admin_app
    before = admin.table()

    response = admin.send("PATCH", path, body, if_match='"1"')

    assert response.status_code == 422
    errors = response.json["errors"]
    for key in error_path:
        errors = errors[key]
    assert errors
    assert (admin.version(), admin.table()) == (1, before)


def test_bodies_that_are_not_json_objects_are_refused(admin_app: tuple[Flask, Earnings, Admin]) -> None:
    _, _, admin = admin_app
    headers = {**AUTH, "If-Match": '"1"', "Content-Type": "application/json"}

    broken = admin.client.put("/earnings/api/rates", data="{not json", headers=headers)
    listed = admin.send("PATCH", "/rates/vllm/embeddings", ["input"], if_match='"1"')
    text = admin.client.put("/earnings/api/rates", data="x", headers={**headers, "Content-Type": "text/plain"})

    assert (broken.status_code, listed.status_code, text.status_code) == (400, 422, 415)
    assert admin.version() == 1


def test_history_lists_every_version_and_rollback_makes_a_new_one(admin_app: tuple[Flask, Earnings, Admin]) -> None:
    _, _, admin = admin_app
    admin.send("PATCH", "/rates/vllm/embeddings", {"base": "0.009"}, if_match='"1"')
    admin.send("PATCH", "/rates/vllm/embeddings", {"base": "0.01"}, if_match='"2"')

    rolled = admin.send("POST", "/rates/rollback", {"version": 1})
    history = admin.get("/rates/versions").json["versions"]
    first = admin.get("/rates/versions/1")

    assert rolled.status_code == 200
    assert (rolled.json["version"], rolled.json["source"], rolled.json["rolled_back_from"]) == (4, "rollback", 1)
    assert rolled.json["changes"] == [{"path": "vllm.embeddings.base", "from": "0.01", "to": "0.008"}]
    assert [entry["version"] for entry in history] == [4, 3, 2, 1]
    assert all("table" not in entry for entry in history)
    assert first.json["table"] == rolled.json["table"]
    assert admin.get("/rates/versions", limit=2, offset=1).json["versions"][0]["version"] == 3
    assert admin.get("/rates/versions/99").status_code == 404
    assert admin.send("POST", "/rates/rollback", {"version": 99}).status_code == 422


def test_the_history_cannot_be_edited_or_deleted(make_app: MakeApp) -> None:
    app, _ = make_app(admin_token=TOKEN)

    for rule in app.url_map.iter_rules():
        if "/versions" in rule.rule:
            assert rule.methods is not None and rule.methods <= {"GET", "HEAD", "OPTIONS"}, rule
        assert rule.methods is not None and "DELETE" not in rule.methods, rule


def test_an_unchanged_table_makes_no_new_version(admin_app: tuple[Flask, Earnings, Admin]) -> None:
    _, _, admin = admin_app

    response = admin.send("PUT", "/rates", admin.table(), if_match='"1"')

    assert (response.status_code, response.json["version"]) == (200, 1)


def test_the_first_version_comes_from_config_and_edits_outlive_a_restart(make_app: MakeApp, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    configured = {"vllm": {"embeddings": {"input": "0.5", "output": "0", "base": "0"}}}
    first, _ = make_app(admin_token=TOKEN, database_uri=database, rates=configured)
    admin = Admin(first)
    assert admin.table()["vllm"]["embeddings"]["input"] == "0.5"
    admin.send("PATCH", "/rates/vllm/embeddings", {"input": "0.7"}, if_match='"1"')

    restarted, earnings = make_app(admin_token=TOKEN, database_uri=database, rates=configured)

    with restarted.app_context():
        assert earnings.rate_version.number == 2
        assert earnings.rate_table.lookup("vllm", "embeddings", None)[0].input == Decimal("0.7")


def test_a_config_table_changed_after_the_history_began_is_not_used_and_says_so(
    make_app: MakeApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    first, _ = make_app(
        database_uri=database, rates={"vllm": {"embeddings": {"input": "0.5", "output": "0", "base": "0"}}}
    )
    with first.app_context():
        first.extensions["earnings"].rate_book.current()
    changed = {"vllm": {"embeddings": {"input": "0.9", "output": "0", "base": "0"}}}

    with caplog.at_level(logging.WARNING, logger="flask_earnings"):
        restarted, earnings = make_app(database_uri=database, rates=changed)
        with restarted.app_context():
            assert earnings.rate_table.lookup("vllm", "embeddings", None)[0].input == Decimal("0.5")

    assert "differs from the one the rate history began with; it is not used" in caplog.text


def test_an_unchanged_config_table_restarts_quietly(
    make_app: MakeApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    first, _ = make_app(admin_token=TOKEN, database_uri=database)
    Admin(first).send("PATCH", "/rates/vllm/embeddings", {"input": "0.7"}, if_match='"1"')

    with caplog.at_level(logging.WARNING, logger="flask_earnings"):
        restarted, earnings = make_app(database_uri=database)
        with restarted.app_context():
            assert earnings.rate_version.number == 2

    assert "rate history began with" not in caplog.text


def test_a_task_is_priced_with_the_version_in_effect_when_it_started(make_app: MakeApp) -> None:
    app, earnings = make_app(admin_token=TOKEN)
    admin = Admin(app)
    started, release = threading.Event(), threading.Event()

    @app.post("/v1/embeddings")
    def slow() -> Response:
        started.set()
        release.wait(10)
        return jsonify(payloads.openai_embeddings_reply(100))

    results: list[Any] = []
    caller = threading.Thread(
        target=lambda: results.append(
            app.test_client().post("/v1/embeddings", json=payloads.openai_embeddings_request(), buffered=True)
        )
    )
    caller.start()
    assert started.wait(10)
    edited = admin.send("PATCH", "/rates/vllm/embeddings", {"input": "1"}, if_match='"1"')
    release.set()
    caller.join(10)
    task = stored_task(app, earnings, results[0].headers[TASK_HEADER])

    assert edited.status_code == 200
    assert task.rate_version == 1
    assert task.earnings is not None and task.earnings.total == 100 * Decimal("0.0008") + Decimal("0.008")


def test_rates_changed_is_sent_when_this_process_moves_to_a_new_version(
    admin_app: tuple[Flask, Earnings, Admin],
) -> None:
    app, _, admin = admin_app
    seen: list[int | None] = []

    def remember(sender: Flask, version: Any, **extra: Any) -> None:
        seen.append(version.number)

    rates_changed.connect(remember, app, weak=False)
    try:
        admin.send("PATCH", "/rates/vllm/embeddings", {"base": "0.02"}, if_match='"1"')
        admin.send("POST", "/rates/rollback", {"version": 1})
    finally:
        rates_changed.disconnect(remember, app)

    assert seen == [2, 3]


def test_tasks_are_listed_and_shown_as_json(admin_app: tuple[Flask, Earnings, Admin]) -> None:
    app, earnings, admin = admin_app
    add_upstream_view(app, "/api/chat", payloads.ollama_chat_reply(26, 298))
    add_upstream_view(app, "/api/generate", payloads.ollama_error(), status=500)
    client = app.test_client()
    chat = payloads.ollama_chat_request()
    ids = [client.post("/api/chat", json=chat, buffered=True).headers[TASK_HEADER] for _ in range(3)]
    failed_id = client.post("/api/generate", json={}, buffered=True).headers[TASK_HEADER]
    stored_task(app, earnings, failed_id)

    everything = admin.get("/tasks").json
    completed = admin.get("/tasks", status="completed", limit=2).json
    second_page = admin.get("/tasks", status="completed", limit=2, offset=2).json
    one = admin.get(f"/tasks/{ids[0]}").json

    assert [task["id"] for task in everything["tasks"]] == [failed_id, *reversed(ids)]
    assert [task["id"] for task in completed["tasks"]] == [ids[2], ids[1]]
    assert completed["next_offset"] == 2
    assert [task["id"] for task in second_page["tasks"]] == [ids[0]] and second_page["next_offset"] is None
    assert one["status"] == TaskStatus.COMPLETED.value
    assert one["earnings"] == {
        "input_reward": "0.026",
        "output_reward": "0.596",
        "base_reward": "0.01",
        "duration_bonus": "0",
        "total": "0.632",
    }
    assert admin.get("/tasks/unknown").status_code == 404
    assert admin.get("/tasks", limit=0).status_code == 400
    assert admin.get("/tasks", since="yesterday").status_code == 400
    assert admin.get("/tasks", since="2999-01-01T00:00:00Z").json["tasks"] == []
