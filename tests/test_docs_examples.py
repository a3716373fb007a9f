"""The code in the docs runs as written: each block is taken from its page and executed against a real app."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request

from example_app.simulator import create_simulator
from flask_earnings import Earnings, Task, TaskStatus, TokensSource

from . import payloads
from .conftest import MakeApp
from .helpers import TASK_HEADER, add_upstream_view, call, received_signals, serving, stored_task, wait_for

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```(\w*)$")
HEADING = re.compile(r"^(#+) ")


def python_blocks(page: str, heading: str) -> list[str]:
    """The ```python blocks of a page's section: from ``heading`` to the next heading of its level
    or above (headings inside code blocks do not count)."""
    level = len(heading.split(" ", 1)[0])
    blocks: list[str] = []
    inside = False
    fence: str | None = None
    lines: list[str] = []
    for line in (DOCS / page).read_text(encoding="utf-8").splitlines():
        opening = FENCE.match(line)
        if fence is None and opening is not None:
            fence, lines = opening.group(1), []
            continue
        if fence is not None:
            if line == "```":
                if inside and fence == "python":
                    blocks.append("\n".join(lines) + "\n")
                fence = None
            else:
                lines.append(line)
            continue
        if line == heading:
            inside = True
        elif inside and (match := HEADING.match(line)) and len(match.group(1)) <= level:
            break
    assert blocks, f"no python block under {heading!r} in docs/{page}"
    return blocks


def run(code: str, name: str, **names: Any) -> dict[str, Any]:
    """Execute a block as a module of its own; ``names`` are there as if defined before it."""
    namespace: dict[str, Any] = {"__name__": name, **names}
    exec(compile(code, f"<docs: {name}>", "exec"), namespace)
    return namespace


def paid_calls(app: Flask, earnings: Earnings) -> tuple[Task, Task, Task]:
    """An Ollama chat and an OpenAI chat completion, paid; an Ollama generate that fails."""
    add_upstream_view(app, "/api/chat", payloads.ollama_chat_reply(26, 298))
    add_upstream_view(app, "/v1/chat/completions", payloads.openai_chat_reply(payloads.openai_usage(1234, 567)))
    add_upstream_view(app, "/api/generate", payloads.ollama_error(), status=404)
    _, chat = call(app, earnings, "/api/chat", payloads.ollama_chat_request())
    _, completion = call(app, earnings, "/v1/chat/completions", payloads.openai_chat_request())
    _, failed = call(app, earnings, "/api/generate", payloads.ollama_generate_request())
    assert (chat.status, completion.status, failed.status) == (TaskStatus.COMPLETED,) * 2 + (TaskStatus.FAILED,)
    return chat, completion, failed


CHAT_TOTAL = 26 * Decimal("0.001") + 298 * Decimal("0.002") + Decimal("0.01")  # ollama/chat
COMPLETION_TOTAL = 1234 * Decimal("0.0015") + 567 * Decimal("0.003") + Decimal("0.015")  # vllm/chat/completions


def test_the_json_lines_ledger_of_the_signals_page(make_app: MakeApp, tmp_path: Path) -> None:
    ledger_code, wiring, reading = python_blocks("signals.md", "## A worked sink: a JSON-lines ledger")
    assert "JsonLinesLedger(" in wiring and "ledger.init_app(app)" in wiring
    app, earnings = make_app(device_id="gpu-node-7")
    path = tmp_path / "earnings.jsonl"
    ledger = run(ledger_code, "docs_signals_ledger")["JsonLinesLedger"](path)
    ledger.init_app(app)

    chat, completion, _failed = paid_calls(app, earnings)

    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [line["task_id"] for line in lines] == [chat.id, completion.id]  # the failed task earned nothing
    for line, task in zip(lines, (chat, completion), strict=True):
        assert task.earnings is not None
        assert Decimal(line["total"]) == task.earnings.total
        assert {name: Decimal(line[name]) for name in ("input_reward", "output_reward", "base_reward")} == {
            "input_reward": task.earnings.input_reward,
            "output_reward": task.earnings.output_reward,
            "base_reward": task.earnings.base_reward,
        }
        assert (line["status"], line["device_id"], line["rate_version"]) == ("completed", "gpu-node-7", 1)
        assert (line["input_tokens"], line["output_tokens"]) == (task.input_tokens, task.output_tokens)
    assert [Decimal(line["total"]) for line in lines] == [CHAT_TOTAL, COMPLETION_TOTAL]
    assert lines[1]["framework"] == "vllm" and lines[1]["task_type"] == "chat/completions"

    read_back = run(reading.replace("/var/lib/gateway/earnings.jsonl", str(path)), "docs_signals_reading")
    assert read_back["total"] == CHAT_TOTAL + COMPLETION_TOTAL


def test_the_webhook_forwarder_of_the_signals_page(make_app: MakeApp) -> None:
    [forwarder_code] = python_blocks("signals.md", "## A slow sink: a webhook behind a queue of its own")
    hook = Flask("webhook")
    posted: list[dict[str, Any]] = []

    @hook.post("/hook")
    def receive() -> tuple[str, int]:
        posted.append(request.get_json())
        return "", 204

    app, earnings = make_app()
    with serving(hook) as base:
        forwarder = run(forwarder_code, "docs_signals_webhook")["WebhookForwarder"](base + "/hook")
        forwarder.init_app(app)

        chat, completion, _failed = paid_calls(app, earnings)

        deadline = time.monotonic() + 10
        while len(posted) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert sorted(event["task_id"] for event in posted) == sorted([chat.id, completion.id])
    totals = {event["task_id"]: Decimal(event["total"]) for event in posted}
    assert totals == {chat.id: CHAT_TOTAL, completion.id: COMPLETION_TOTAL}
    assert forwarder.dropped == 0


def test_a_full_webhook_queue_drops_and_counts_instead_of_waiting(make_app: MakeApp) -> None:
    [forwarder_code] = python_blocks("signals.md", "## A slow sink: a webhook behind a queue of its own")
    hook = Flask("stuck_webhook")
    release = threading.Event()

    @hook.post("/hook")
    def stuck() -> tuple[str, int]:
        release.wait(10)
        return "", 204

    app, earnings = make_app()
    with serving(hook) as base:
        forwarder = run(forwarder_code, "docs_signals_webhook")["WebhookForwarder"](base + "/hook", max_pending=1)
        forwarder.init_app(app)
        add_upstream_view(app, "/api/embed", payloads.ollama_embed_reply(8))
        try:
            started = time.monotonic()
            for _ in range(4):  # one being posted (stuck), one waiting, two dropped
                call(app, earnings, "/api/embed", payloads.ollama_embed_request())
            assert time.monotonic() - started < 5  # the extension's writer never waited for the webhook
        finally:
            release.set()
        assert forwarder.dropped >= 2  # room for two: the one being posted and one waiting
        deadline = time.monotonic() + 10
        while forwarder.pending.unfinished_tasks and time.monotonic() < deadline:  # let it post before the hook goes
            time.sleep(0.01)


@pytest.fixture
def quickstart_gateway(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Flask, Earnings, str]]:
    """The quickstart's gateway, as its page has it, on a real port in front of the simulated upstream."""
    [gateway_code] = python_blocks("quickstart.md", "## The gateway")
    with serving(create_simulator()) as upstream_base:
        monkeypatch.setenv("FLASK_UPSTREAM_URL", upstream_base)  # read by app.config.from_prefixed_env()
        monkeypatch.setenv("FLASK_EARNINGS_DATABASE_URI", database_url)
        monkeypatch.setenv("FLASK_EARNINGS_SPOOL_DIR", str(tmp_path / "spool"))
        module = run(gateway_code, "docs_quickstart_gateway")
        app: Flask = module["create_app"]()
        try:
            with serving(app) as base:
                yield app, module["earnings"], base
        finally:
            app.extensions["earnings"].recorder.stop(10)
            module["upstream"].close()


def test_the_quickstart_gateway_with_the_openai_and_ollama_clients(
    quickstart_gateway: tuple[Flask, Earnings, str], capsys: pytest.CaptureFixture[str]
) -> None:
    app, earnings, base = quickstart_gateway
    openai_code, ollama_code = python_blocks("quickstart.md", "## Call it")
    assert app.config["EARNINGS_FRAMEWORK"] == "ollama" and app.config["EARNINGS_DEVICE_ID"] == "gpu-node-7"

    with received_signals(app) as received:
        openai_calls = run(openai_code.replace("http://127.0.0.1:5000", base), "docs_quickstart_openai")
        run(ollama_code.replace("http://127.0.0.1:5000", base), "docs_quickstart_ollama")
        tasks = wait_for(received, "task_completed", 4)

    first = stored_task(app, earnings, openai_calls["raw"].headers[TASK_HEADER])
    assert f"task {first.id}" in capsys.readouterr().out
    assert (first.endpoint, first.framework, first.task_type) == ("/v1/chat/completions", "ollama", "chat/completions")
    by_call = {(task.endpoint, task.streamed): task for task in tasks}
    assert set(by_call) == {
        ("/v1/chat/completions", False),
        ("/v1/chat/completions", True),
        ("/api/chat", False),
        ("/api/generate", True),
    }
    for task in tasks:  # the simulator's counts: five words in, eight out; Ollama's default rates
        assert (task.input_tokens, task.output_tokens, task.tokens_source) == (5, 8, TokensSource.REPORTED)
        assert task.device_id == "gpu-node-7"
        assert task.earnings is not None
        assert task.earnings.total == 5 * Decimal("0.001") + 8 * Decimal("0.002") + Decimal("0.01") == Decimal("0.031")
