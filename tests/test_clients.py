"""The official openai and ollama clients, calling the example gateway on a real local port.

Each call leaves a task with the simulated upstream's exact counts: input tokens are the words
of the input, output tokens the requested length (8 by default).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import ollama
import openai
import pytest
from flask import Flask

from example_app import create_app
from example_app import earnings as gateway_earnings
from flask_earnings import TaskStatus, TokensSource

from .helpers import TASK_HEADER, Received, received_signals, serving, stored_task, wait_for

QUESTION = "Why is the sky blue?"  # five words: five input tokens


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Flask, str, Received]]:
    monkeypatch.delenv("MODEL_INFERENCE_FRAMEWORK", raising=False)
    app = create_app({"EARNINGS_DATABASE_URI": f"sqlite:///{tmp_path / 'gateway.sqlite3'}"})
    with received_signals(app) as received, serving(app) as base:
        yield app, base, received


@pytest.mark.parametrize("prefix", ["/v1", "/openai", "/openai/v1"])
def test_openai_client_chat_completion(gateway: tuple[Flask, str, Received], prefix: str) -> None:
    app, base, _ = gateway
    client = openai.OpenAI(base_url=base + prefix, api_key="sk-test")

    raw = client.chat.completions.with_raw_response.create(
        model="llama3.2", messages=[{"role": "user", "content": QUESTION}], max_tokens=12
    )
    reply = raw.parse()
    task = stored_task(app, gateway_earnings, raw.headers[TASK_HEADER])

    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (5, 12)
    assert task.status is TaskStatus.COMPLETED
    assert (task.endpoint, task.framework, task.task_type) == (prefix + "/chat/completions", "vllm", "chat/completions")
    assert (task.input_tokens, task.output_tokens, task.tokens_source) == (5, 12, TokensSource.REPORTED)
    assert task.model == "llama3.2"
    assert task.earnings is not None
    assert task.earnings.total == 5 * Decimal("0.0015") + 12 * Decimal("0.003") + Decimal("0.015")
    assert task.client is not None and task.client.startswith("key-")  # attributed, without the key itself


def test_openai_client_completion_and_embeddings(gateway: tuple[Flask, str, Received]) -> None:
    app, base, _ = gateway
    client = openai.OpenAI(base_url=base + "/v1", api_key="sk-test")

    completion = client.completions.with_raw_response.create(model="qwen2.5:7b", prompt="Once upon a time")
    vectors = client.embeddings.with_raw_response.create(model="nomic-embed-text", input=["the sky", "is blue today"])
    completion_task = stored_task(app, gateway_earnings, completion.headers[TASK_HEADER])
    embedding_task = stored_task(app, gateway_earnings, vectors.headers[TASK_HEADER])

    assert completion.parse().choices[0].text == "the sky is blue because molecules in the"
    assert (completion_task.task_type, completion_task.input_tokens, completion_task.output_tokens) == (
        "completions",
        4,
        8,
    )
    assert len(vectors.parse().data) == 2  # the client asked for base64 and decoded it
    assert (embedding_task.task_type, embedding_task.input_tokens, embedding_task.output_tokens) == ("embeddings", 5, 0)
    assert embedding_task.earnings is not None
    assert embedding_task.earnings.total == 5 * Decimal("0.0008") + Decimal("0.008")


def test_openai_client_error_is_a_failed_task(gateway: tuple[Flask, str, Received]) -> None:
    _app, base, received = gateway
    client = openai.OpenAI(base_url=base + "/v1", api_key="sk-test", max_retries=0)

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": QUESTION}])

    [failed] = wait_for(received, "task_failed", 1)
    assert failed.error == "The model `gpt-9` does not exist."
    assert failed.http_status == 404 and failed.earnings is None


@pytest.mark.parametrize("prefix", ["", "/ollama"])
def test_ollama_client_chat_generate_and_embed(gateway: tuple[Flask, str, Received], prefix: str) -> None:
    _app, base, received = gateway
    client = ollama.Client(host=base + prefix)

    chat = client.chat(model="llama3.2", messages=[{"role": "user", "content": QUESTION}], stream=False)
    generated = client.generate(model="llama3.2", prompt=QUESTION, options={"num_predict": 3}, stream=False)
    embedded = client.embed(model="nomic-embed-text", input="the sky is blue")
    legacy = client.embeddings(model="nomic-embed-text", prompt="the sky is blue")

    assert (chat.prompt_eval_count, chat.eval_count) == (5, 8)
    assert (generated.prompt_eval_count, generated.eval_count) == (5, 3)
    assert embedded.prompt_eval_count == 4
    assert len(legacy.embedding) == 16
    chat_task, generate_task, embed_task, legacy_task = wait_for(received, "task_completed", 4)
    assert (chat_task.endpoint, chat_task.input_tokens, chat_task.output_tokens) == (prefix + "/api/chat", 5, 8)
    assert (generate_task.endpoint, generate_task.input_tokens, generate_task.output_tokens) == (
        prefix + "/api/generate",
        5,
        3,
    )
    assert (embed_task.endpoint, embed_task.input_tokens, embed_task.tokens_source) == (
        prefix + "/api/embed",
        4,
        TokensSource.REPORTED,
    )
    # The legacy endpoint reports no counts: 15 characters, estimated as 4 tokens.
    assert (legacy_task.endpoint, legacy_task.input_tokens, legacy_task.tokens_source) == (
        prefix + "/api/embeddings",
        4,
        TokensSource.ESTIMATED,
    )
    for task in (chat_task, generate_task, embed_task, legacy_task):
        assert task.framework == "ollama" and task.streamed is False
    assert chat_task.earnings is not None
    assert chat_task.earnings.total == 5 * Decimal("0.001") + 8 * Decimal("0.002") + Decimal("0.01")


def test_ollama_client_error_is_a_failed_task(gateway: tuple[Flask, str, Received]) -> None:
    _app, base, received = gateway
    client = ollama.Client(host=base)

    with pytest.raises(ollama.ResponseError, match="model 'llama9' not found"):
        client.chat(model="llama9", messages=[{"role": "user", "content": QUESTION}], stream=False)

    [failed] = wait_for(received, "task_failed", 1)
    assert (failed.error, failed.http_status) == ("model 'llama9' not found", 404)


# Streams.


@pytest.mark.parametrize("include_usage", [True, False], ids=["asks for usage", "does not ask"])
@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_openai_client_streams_get_exact_counts(
    gateway: tuple[Flask, str, Received], include_usage: bool, kind: str
) -> None:
    app, base, _ = gateway
    client = openai.OpenAI(base_url=base + "/v1", api_key="sk-test")
    options = {"stream_options": {"include_usage": True}} if include_usage else {}

    if kind == "chat":
        raw = client.chat.completions.with_raw_response.create(
            model="llama3.2", messages=[{"role": "user", "content": QUESTION}], max_tokens=6, stream=True, **options
        )
    else:
        raw = client.completions.with_raw_response.create(
            model="llama3.2", prompt=QUESTION, max_tokens=6, stream=True, **options
        )
    chunks = list(raw.parse())
    task = stored_task(app, gateway_earnings, raw.headers[TASK_HEADER])

    usage_chunks = [chunk for chunk in chunks if chunk.usage is not None]
    if include_usage:
        assert [chunk.choices for chunk in usage_chunks] == [[]]
        assert usage_chunks[0].usage is not None
        assert (usage_chunks[0].usage.prompt_tokens, usage_chunks[0].usage.completion_tokens) == (5, 6)
    else:
        assert usage_chunks == []  # the client sees the stream it asked for
        assert all(chunk.choices for chunk in chunks)
    assert task.status is TaskStatus.COMPLETED and task.streamed is True
    assert (task.input_tokens, task.output_tokens, task.tokens_source) == (5, 6, TokensSource.REPORTED)
    assert task.earnings is not None
    assert task.earnings.total == 5 * Decimal("0.0015") + 6 * Decimal("0.003") + Decimal("0.015")


@pytest.mark.parametrize("prefix", ["", "/ollama"])
def test_ollama_client_streams_get_exact_counts(gateway: tuple[Flask, str, Received], prefix: str) -> None:
    _app, base, received = gateway
    client = ollama.Client(host=base + prefix)

    chat = list(client.chat(model="llama3.2", messages=[{"role": "user", "content": QUESTION}], stream=True))
    generated = list(client.generate(model="llama3.2", prompt=QUESTION, options={"num_predict": 4}, stream=True))

    assert (chat[-1].done, chat[-1].prompt_eval_count, chat[-1].eval_count) == (True, 5, 8)
    assert "".join(part.message.content or "" for part in chat) == "the sky is blue because molecules in the"
    assert (generated[-1].prompt_eval_count, generated[-1].eval_count) == (5, 4)
    chat_task, generate_task = wait_for(received, "task_completed", 2)
    assert (chat_task.endpoint, chat_task.input_tokens, chat_task.output_tokens) == (prefix + "/api/chat", 5, 8)
    assert (generate_task.input_tokens, generate_task.output_tokens) == (5, 4)
    assert chat_task.streamed and generate_task.streamed
    assert chat_task.tokens_source is TokensSource.REPORTED


def test_ollama_client_stream_error_fails_the_task(gateway: tuple[Flask, str, Received]) -> None:
    _app, base, received = gateway
    client = ollama.Client(host=base)

    with pytest.raises(ollama.ResponseError, match="model 'llama9' not found"):
        list(client.chat(model="llama9", messages=[{"role": "user", "content": QUESTION}], stream=True))

    [failed] = wait_for(received, "task_failed", 1)
    assert failed.error == "model 'llama9' not found"
