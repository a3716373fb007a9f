"""The example gateway: the simulated upstream speaks the wire formats, and the proxy relays a
real upstream over HTTP unchanged."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from example_app import create_app
from example_app import earnings as gateway_earnings
from example_app.simulator import create_simulator
from flask_earnings import TaskStatus

from .helpers import TASK_HEADER, serving, stored_task

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_up(base: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(base + "/", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"nothing answers at {base}")


CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "Why is the sky blue?"}]}


def test_simulated_ollama_chat_is_shaped_like_ollama() -> None:
    client = create_simulator().test_client()

    whole = client.post("/api/chat", json={**CHAT, "stream": False})
    streamed = client.post("/api/chat", json=CHAT)  # Ollama streams unless told not to

    assert whole.content_type == "application/json"
    assert set(whole.json) >= {"model", "created_at", "message", "done", "done_reason", "total_duration",
                               "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
                               "eval_duration"}  # fmt: skip
    assert (whole.json["prompt_eval_count"], whole.json["eval_count"], whole.json["done"]) == (5, 8, True)
    assert streamed.content_type == "application/x-ndjson"
    lines = [json.loads(line) for line in streamed.data.splitlines()]
    assert [line["done"] for line in lines] == [False] * 8 + [True]
    assert "".join(line["message"]["content"] for line in lines) == whole.json["message"]["content"]
    assert (lines[-1]["prompt_eval_count"], lines[-1]["eval_count"]) == (5, 8)


def test_simulated_openai_stream_carries_usage_only_when_asked() -> None:
    client = create_simulator().test_client()
    body = {**CHAT, "stream": True}

    plain = client.post("/v1/chat/completions", json=body).data.decode()
    with_usage = client.post("/v1/chat/completions", json={**body, "stream_options": {"include_usage": True}}).data

    events = [block for block in with_usage.decode().split("\n\n") if block]
    assert events[-1] == "data: [DONE]"
    usage_chunk = json.loads(events[-2].removeprefix("data: "))
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13}
    assert all(json.loads(event.removeprefix("data: "))["usage"] is None for event in events[:-2])
    assert '"usage"' not in plain


def test_simulated_errors_are_shaped_like_each_protocol() -> None:
    client = create_simulator().test_client()

    ollama_error = client.post("/api/generate", json={"model": "llama9", "prompt": "hi"})
    openai_error = client.post("/v1/completions", json={"model": "gpt-9", "prompt": "hi"})

    assert (ollama_error.status_code, ollama_error.json) == (404, {"error": "model 'llama9' not found"})
    assert openai_error.status_code == 404
    assert set(openai_error.json["error"]) == {"message", "type", "param", "code"}


def test_proxy_mode_relays_a_real_upstream_unchanged(tmp_path: Path) -> None:
    with serving(create_simulator()) as upstream:
        app = create_app(
            {
                "EXAMPLE_UPSTREAM": "proxy",
                "UPSTREAM_OLLAMA_URL": upstream,
                "UPSTREAM_OPENAI_URL": upstream + "/v1",
                "EARNINGS_DATABASE_URI": f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
            }
        )
        with serving(app) as gateway:
            direct = httpx.post(upstream + "/api/generate", json={"model": "llama3.2", "prompt": "hi", "stream": False})
            relayed = httpx.post(gateway + "/api/generate", json={"model": "llama3.2", "prompt": "hi", "stream": False})
            models = httpx.get(gateway + "/v1/models")

    assert relayed.status_code == direct.status_code == 200
    assert relayed.headers["content-type"] == direct.headers["content-type"]
    assert {key: value for key, value in relayed.json().items() if key != "created_at"} == {
        key: value for key, value in direct.json().items() if key != "created_at"
    }
    assert TASK_HEADER not in models.headers and models.status_code == 200
    task = stored_task(app, gateway_earnings, relayed.headers[TASK_HEADER])
    assert (task.status, task.input_tokens, task.output_tokens) == (TaskStatus.COMPLETED, 1, 8)


def test_an_unreachable_upstream_is_a_502_in_the_protocols_shape_and_a_failed_task(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port with nobody behind it
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    app = create_app(
        {
            "EXAMPLE_UPSTREAM": "proxy",
            "UPSTREAM_OLLAMA_URL": f"http://127.0.0.1:{closed_port}",
            "UPSTREAM_OPENAI_URL": f"http://127.0.0.1:{closed_port}/v1",
            "EARNINGS_DATABASE_URI": f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
        }
    )
    client = app.test_client()

    ollama_reply = client.post("/api/chat", json={**CHAT, "stream": False}, buffered=True)
    openai_reply = client.post("/v1/chat/completions", json=CHAT, buffered=True)

    assert ollama_reply.status_code == openai_reply.status_code == 502
    assert "unreachable" in ollama_reply.json["error"]
    assert "unreachable" in openai_reply.json["error"]["message"]
    task = stored_task(app, gateway_earnings, ollama_reply.headers[TASK_HEADER])
    assert task.status is TaskStatus.FAILED and task.error is not None and "unreachable" in task.error


def test_the_upstream_mode_must_be_known() -> None:
    with pytest.raises(ValueError, match="EXAMPLE_UPSTREAM must be 'simulator' or 'proxy'"):
        create_app({"EXAMPLE_UPSTREAM": "magic"})


def test_usage_is_asked_for_only_when_the_client_streams_without_it() -> None:
    from example_app.usage import with_usage_requested

    asked, added = with_usage_requested(json.dumps({**CHAT, "stream": True}).encode())
    kept, not_added = with_usage_requested(
        json.dumps({**CHAT, "stream": True, "stream_options": {"include_usage": True}}).encode()
    )
    whole, not_streamed = with_usage_requested(json.dumps(CHAT).encode())

    assert added and json.loads(asked)["stream_options"] == {"include_usage": True}
    assert not not_added and json.loads(kept)["stream_options"] == {"include_usage": True}
    assert not not_streamed and json.loads(whole) == CHAT


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_the_added_usage_is_removed_from_what_the_client_receives(newline: str) -> None:
    from example_app.usage import without_usage

    from .payloads import openai_stream

    usage = {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}
    asked_for = b"".join(openai_stream("chat", usage=None, newline=newline))
    with_usage = b"".join(openai_stream("chat", usage=usage, newline=newline))
    pieces = [with_usage[i : i + 7] for i in range(0, len(with_usage), 7)]  # events split anywhere

    assert b"".join(without_usage(iter(pieces))) == asked_for


def test_tap_upstream_outside_a_tracked_request_passes_the_chunks_through(tmp_path: Path) -> None:
    app = create_app({"EARNINGS_DATABASE_URI": f"sqlite:///{tmp_path / 'gateway.sqlite3'}"})

    with app.test_request_context("/v1/models"):
        assert list(gateway_earnings.tap_upstream(iter([b"a", b"b"]), "text/event-stream")) == [b"a", b"b"]


def test_the_readme_run_command_serves_a_gateway_whose_dashboard_shows_its_tasks(tmp_path: Path) -> None:
    """``python -m example_app``, the README's first command, as a user runs it: a real process
    on a real port, called with the official ollama client, its dashboard opened with the
    token it prints."""
    import ollama

    port = free_port()
    environment = {**os.environ, "EARNINGS_DATABASE_URI": f"sqlite:///{tmp_path / 'demo.sqlite3'}"}
    environment["EARNINGS_SPOOL_DIR"] = str(tmp_path / "spool")
    with subprocess.Popen(
        [sys.executable, "-m", "example_app", "--port", str(port)],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as server:
        try:
            assert server.stdout is not None
            banner = [server.stdout.readline()]
            while "report:" not in banner[-1] and banner[-1]:
                banner.append(server.stdout.readline())
            token = next(line for line in banner if "dashboard:" in line).split("token: ")[1].rstrip(")\n")
            base = f"http://127.0.0.1:{port}"
            wait_until_up(base)

            reply = ollama.Client(host=base).chat(
                model="llama3.2", messages=[{"role": "user", "content": "Why is the sky blue?"}], stream=False
            )
            assert reply.message.content

            headers = {"Authorization": f"Bearer {token}"}
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # the writer stores the task after the reply
                tasks = httpx.get(f"{base}/earnings/api/tasks", headers=headers).json()["tasks"]
                if tasks and tasks[0]["status"] == "completed":
                    break
                time.sleep(0.1)
            assert [(task["framework"], task["task_type"], task["status"]) for task in tasks] == [
                ("ollama", "chat", "completed")
            ]
            dashboard = httpx.get(f"{base}/earnings/", headers=headers)
            assert dashboard.status_code == 200 and tasks[0]["earnings"]["total"] in dashboard.text
            assert httpx.get(f"{base}/earnings/").status_code == 401
        finally:
            server.terminate()
            server.wait(10)
