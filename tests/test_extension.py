"""Registering the extension: app factories, several apps, options, where the records go."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_earnings import Earnings, TaskStatus
from flask_earnings.options import OPTION_NAMES, Options, config_key

from . import payloads
from .conftest import MakeApp
from .helpers import TASK_HEADER, add_upstream_view, call, stored_task


def test_app_factory_with_two_apps_keeps_their_state_apart(tmp_path: Path) -> None:
    earnings = Earnings()
    first = Flask("first", instance_path=str(tmp_path / "first"))
    second = Flask("second", instance_path=str(tmp_path / "second"))
    second.config["EARNINGS_DEVICE_ID"] = "second-node"
    for app in (first, second):
        earnings.init_app(app)
        add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))

    _, task = call(first, earnings, "/api/embed", payloads.ollama_embed_request())
    _, other = call(second, earnings, "/api/embed", payloads.ollama_embed_request())

    assert task.device_id is None and other.device_id == "second-node"
    with second.app_context():
        assert earnings.get_task(task.id) is None  # each app has its own database
    assert (tmp_path / "first" / "earnings.sqlite3").exists()
    assert (tmp_path / "second" / "earnings.sqlite3").exists()


def test_registering_twice_on_one_app_is_an_error(make_app: MakeApp) -> None:
    app, earnings = make_app()

    with pytest.raises(RuntimeError, match="already been registered"):
        earnings.init_app(app)
    with pytest.raises(RuntimeError, match="already been registered"):
        Earnings(app)


def test_helpers_need_an_app_the_extension_is_registered_on(make_app: MakeApp) -> None:
    app, _ = make_app()
    stranger = Earnings()

    with app.app_context(), pytest.raises(RuntimeError, match="not registered with this 'Earnings' instance"):
        stranger.is_trackable_endpoint("/api/chat")


def test_without_db_it_needs_no_configuration(tmp_path: Path) -> None:
    app = Flask("bare", instance_path=str(tmp_path / "instance"))
    earnings = Earnings(app)
    add_upstream_view(app, "/api/chat", payloads.ollama_chat_reply(1, 2))

    _, task = call(app, earnings, "/api/chat", payloads.ollama_chat_request())

    assert task.status is TaskStatus.COMPLETED
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'instance' / 'earnings.sqlite3'}")
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT status FROM earnings_tasks")).scalar_one() == "completed"
    engine.dispose()


def test_with_the_apps_db_the_tables_join_its_metadata_and_database(tmp_path: Path) -> None:
    app = Flask("with_db", instance_path=str(tmp_path / "instance"))
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'app.sqlite3'}"
    db = SQLAlchemy()
    db.init_app(app)
    earnings = Earnings(app, db=db)
    add_upstream_view(app, "/api/chat", payloads.ollama_chat_reply(1, 2))
    assert {"earnings_tasks", "earnings_records"} <= set(db.metadata.tables)  # what Alembic autogenerate reads
    with app.app_context():
        db.create_all()

    _, task = call(app, earnings, "/api/chat", payloads.ollama_chat_request())

    with app.app_context():
        assert db.session.execute(sa.text("SELECT id FROM earnings_tasks")).scalar_one() == task.id
    assert not (tmp_path / "instance" / "earnings.sqlite3").exists()


def test_db_must_be_registered_on_the_app_first(tmp_path: Path) -> None:
    app = Flask("early", instance_path=str(tmp_path))

    with pytest.raises(RuntimeError, match=r"db.init_app\(app\)"):
        Earnings(app, db=SQLAlchemy())


def test_the_database_uri_option_sends_records_elsewhere(make_app: MakeApp, database_url: str) -> None:
    app, earnings = make_app(database_uri=database_url)
    add_upstream_view(app, "/api/chat", payloads.ollama_chat_reply(3, 4))

    _, task = call(app, earnings, "/api/chat", payloads.ollama_chat_request())

    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT input_tokens FROM earnings_tasks")).scalar_one() == 3
    engine.dispose()
    assert task.input_tokens == 3


def test_every_option_is_a_config_key_with_its_default(make_app: MakeApp) -> None:
    app, _ = make_app()

    for name in OPTION_NAMES:
        assert config_key(name) in app.config
    assert app.config["EARNINGS_TASK_ID_HEADER"] == "X-Earnings-Task-Id"
    assert app.config["EARNINGS_ENABLED"] is True
    assert set(OPTION_NAMES) == {field for field in Options.__dataclass_fields__}


def test_an_argument_wins_over_the_config_key(make_app: MakeApp) -> None:
    app, _ = make_app(config={"EARNINGS_TASK_ID_HEADER": "X-From-Config"}, task_id_header="X-From-Argument")
    add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))

    response = app.test_client().post("/api/embed", json=payloads.ollama_embed_request(), buffered=True)

    assert "X-From-Argument" in response.headers and "X-From-Config" not in response.headers


def test_the_task_id_header_can_be_turned_off(make_app: MakeApp) -> None:
    app, _ = make_app(task_id_header=None)
    add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))

    response = app.test_client().post("/api/embed", json=payloads.ollama_embed_request(), buffered=True)

    assert TASK_HEADER not in response.headers


def test_disabled_tracking_makes_no_task(make_app: MakeApp) -> None:
    app, earnings = make_app(config={"EARNINGS_ENABLED": False})
    add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))

    response = app.test_client().post("/api/embed", json=payloads.ollama_embed_request(), buffered=True)

    assert TASK_HEADER not in response.headers
    with app.app_context():
        assert earnings.flush(1)
        assert earnings.is_trackable_endpoint("/api/embed")  # the helpers still answer


def test_the_framework_falls_back_to_the_environment_then_vllm(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODEL_INFERENCE_FRAMEWORK", raising=False)
    default_app, earnings = make_app()
    monkeypatch.setenv("MODEL_INFERENCE_FRAMEWORK", "ollama")
    env_app, env_earnings = make_app()
    configured_app, configured = make_app(config={"EARNINGS_FRAMEWORK": "vllm"})

    with default_app.app_context():
        assert earnings.get_framework("/v1/chat/completions") == "vllm"
    with env_app.app_context():
        assert env_earnings.get_framework("/openai/chat/completions") == "ollama"
        assert env_earnings.get_framework("/api/chat") == "ollama"
    with configured_app.app_context():
        assert configured.get_framework("/openai/chat/completions") == "vllm"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("enabled", "yes", "EARNINGS_ENABLED must be True or False"),
        ("framework", "vLLM!", "EARNINGS_FRAMEWORK must be a lower-case framework name"),
        ("framework", "default", "EARNINGS_FRAMEWORK must be a framework name"),
        ("device_id", 42, "EARNINGS_DEVICE_ID must be a string or a function"),
        ("client", "alice", "EARNINGS_CLIENT must be a function"),
        ("rates", 3, "EARNINGS_RATES must be a mapping or the path of a JSON file"),
        ("endpoints", ["/x"], "EARNINGS_ENDPOINTS must be a mapping"),
        ("batch_size", 0, "EARNINGS_BATCH_SIZE must be a positive whole number"),
        ("flush_interval", -1, "EARNINGS_FLUSH_INTERVAL must be a number of seconds"),
    ],
)
def test_a_bad_option_stops_the_app_with_a_clear_error(
    make_app: MakeApp, option: str, value: Any, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        make_app(**{option: value})
    with pytest.raises(TypeError, match=message):
        make_app(config={config_key(option): value})


def test_an_unknown_argument_is_an_error() -> None:
    with pytest.raises(TypeError, match="Unknown Earnings option"):
        Earnings(rate_table={})


def test_a_task_id_header_comes_back_on_a_real_server(make_app: MakeApp) -> None:
    import httpx

    from .helpers import serving

    app, earnings = make_app()
    add_upstream_view(app, "/v1/embeddings", payloads.openai_embeddings_reply(7))

    with serving(app) as base:
        response = httpx.post(base + "/v1/embeddings", json=payloads.openai_embeddings_request())
    task = stored_task(app, earnings, response.headers[TASK_HEADER])

    assert task.status is TaskStatus.COMPLETED and task.input_tokens == 7
    assert os.path.isabs(app.instance_path)


def test_disabled_tracking_leaves_the_database_alone_at_exit(tmp_path: Path) -> None:
    app = Flask("off", instance_path=str(tmp_path / "instance"))
    Earnings(app, enabled=False, admin_url_prefix=None)

    assert app.extensions["earnings"].recorder.close() is True

    assert not (tmp_path / "instance" / "earnings.sqlite3").exists()
