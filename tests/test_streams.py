"""Streamed replies: passed through unchanged and unbuffered, counted exactly, ended correctly."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from flask import Flask, Response, stream_with_context

from flask_earnings import Earnings, Task, TaskStatus, TokensSource

from . import payloads
from .conftest import MakeApp
from .helpers import TASK_HEADER, received_signals, serving, stored_task, wait_for

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"


def streaming_view(app: Flask, path: str, chunks: list[bytes], content_type: str) -> None:
    @app.post(path, endpoint=f"stream {path}")
    def stream() -> Response:
        return Response(iter(chunks), content_type=content_type)


def stream_call(app: Flask, earnings: Earnings, path: str, body: Any) -> tuple[bytes, Task]:
    response = app.test_client().post(path, json=body, buffered=True)
    return response.get_data(), stored_task(app, earnings, response.headers[TASK_HEADER])


def chat_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


# What is counted.


@pytest.mark.parametrize(("path", "kind"), [("/api/chat", "chat"), ("/ollama/api/generate", "generate")])
def test_ollama_stream_is_counted_from_its_final_chunk(make_app: MakeApp, path: str, kind: str) -> None:
    app, earnings = make_app()
    chunks = payloads.ollama_stream(kind, prompt_eval_count=26, eval_count=9)
    streaming_view(app, path, chunks, NDJSON)

    body, task = stream_call(app, earnings, path, {"model": "llama3.2", "prompt": "hi", "messages": []})

    assert body == b"".join(chunks)
    assert task.status is TaskStatus.COMPLETED
    assert (task.input_tokens, task.output_tokens, task.tokens_source) == (26, 9, TokensSource.REPORTED)
    assert task.streamed is True
    assert task.earnings is not None
    assert task.earnings.total == Decimal("0.026") + Decimal("0.018") + Decimal("0.01")


def test_ollama_counts_left_out_of_the_final_chunk_are_zero(make_app: MakeApp) -> None:
    app, earnings = make_app()
    streaming_view(app, "/api/chat", payloads.ollama_stream(prompt_eval_count=None, eval_count=None), NDJSON)

    _, task = stream_call(app, earnings, "/api/chat", payloads.ollama_chat_request())

    assert (task.input_tokens, task.output_tokens, task.tokens_source) == (0, 0, TokensSource.REPORTED)


@pytest.mark.parametrize(("path", "kind"), [("/v1/chat/completions", "chat"), ("/openai/completions", "completion")])
@pytest.mark.parametrize("compact", [True, False], ids=["compact", "spaced"])
def test_openai_stream_is_counted_from_its_usage_chunk(make_app: MakeApp, path: str, kind: str, compact: bool) -> None:
    app, earnings = make_app()
    chunks = payloads.openai_stream(kind, usage=chat_usage(1234, 567), compact=compact)
    streaming_view(app, path, chunks, SSE)

    body, task = stream_call(app, earnings, path, {"model": "Qwen/Qwen2.5-7B-Instruct", "stream": True})

    assert body == b"".join(chunks)
    assert (task.status, task.input_tokens, task.output_tokens) == (TaskStatus.COMPLETED, 1234, 567)
    assert task.tokens_source is TokensSource.REPORTED and task.streamed is True
    assert task.earnings is not None and task.earnings.total == Decimal("3.567")


def sse_event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def chunk_with_usage(text: str, usage: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    return sse_event({"id": "c", "object": "text_completion", "model": "m", "choices": [choice], "usage": usage})


def test_vllm_running_usage_counts_its_last_total(make_app: MakeApp) -> None:
    """vLLM's ``continuous_usage_stats`` puts running totals in every chunk: the last one wins."""
    app, earnings = make_app()
    chunks = [chunk_with_usage(word, chat_usage(12, n + 1)) for n, word in enumerate(payloads.WORDS)]
    streaming_view(app, "/v1/completions", [*chunks, b"data: [DONE]\n\n"], SSE)

    _, task = stream_call(app, earnings, "/v1/completions", {"model": "m", "stream": True})

    assert (task.input_tokens, task.output_tokens) == (12, len(payloads.WORDS))


def test_ollama_openai_zeros_then_real_counts_the_real_ones(make_app: MakeApp) -> None:
    """Ollama's /v1/completions sends zero usage in every chunk and the real numbers last."""
    app, earnings = make_app()
    chunks = [chunk_with_usage(word, chat_usage(0, 0)) for word in payloads.WORDS]
    chunks += [chunk_with_usage("", chat_usage(7, 9), finish="stop"), b"data: [DONE]\n\n"]
    streaming_view(app, "/v1/completions", chunks, SSE)

    _, task = stream_call(app, earnings, "/v1/completions", {"model": "m", "stream": True})

    assert (task.input_tokens, task.output_tokens) == (7, 9)


@pytest.mark.parametrize("newline", ["\r\n", "\r", "\n"], ids=["CRLF", "CR", "LF"])
def test_sse_line_ends_comments_and_multi_line_data_follow_the_sse_rules(make_app: MakeApp, newline: str) -> None:
    app, earnings = make_app()
    usage_event = json.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": chat_usage(5, 9)})
    split = usage_event.index('"usage"')  # the usage chunk's JSON spread over two data: lines
    chunks = [f": ping{newline}{newline}".encode()]
    chunks += payloads.openai_stream("chat", usage=None, newline=newline)[:-1]
    chunks += [
        f": keep-alive{newline}".encode(),
        f"data: {usage_event[:split]}{newline}data: {usage_event[split:]}{newline}{newline}".encode(),
        f"data: [DONE]{newline}{newline}".encode(),
    ]
    streaming_view(app, "/v1/chat/completions", chunks, SSE)

    _, task = stream_call(app, earnings, "/v1/chat/completions", {"model": "m", "stream": True})

    assert (task.status, task.input_tokens, task.output_tokens) == (TaskStatus.COMPLETED, 5, 9)
    assert task.tokens_source is TokensSource.REPORTED


def test_a_stream_split_at_every_byte_reads_the_same(make_app: MakeApp) -> None:
    app, earnings = make_app()
    whole = b"".join(payloads.openai_stream("chat", usage=chat_usage(3, 9), newline="\r\n"))
    streaming_view(app, "/v1/chat/completions", [whole[i : i + 1] for i in range(len(whole))], SSE)

    _, task = stream_call(app, earnings, "/v1/chat/completions", {"model": "m", "stream": True})

    assert (task.status, task.input_tokens, task.output_tokens) == (TaskStatus.COMPLETED, 3, 9)


@pytest.mark.parametrize(
    ("path", "chunks", "content_type"),
    [
        ("/v1/chat/completions", payloads.openai_stream("chat", usage=None), SSE),
        ("/v1/completions", payloads.openai_stream("completion", usage=None), SSE),
    ],
    ids=["chat", "completions"],
)
def test_a_stream_without_usage_is_estimated_from_its_text(
    make_app: MakeApp, path: str, chunks: list[bytes], content_type: str
) -> None:
    app, earnings = make_app()
    streaming_view(app, path, chunks, content_type)
    # Request: "Why is the sky blue?", 20 characters, 5 tokens. Reply: the 48 characters of
    # "The sky is blue because of Rayleigh scattering.", 12 tokens.
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "Why is the sky blue?"}]}
    if path.endswith("/completions") and "chat" not in path:
        body = {"model": "m", "stream": True, "prompt": "Why is the sky blue?"}

    _, task = stream_call(app, earnings, path, body)

    assert task.status is TaskStatus.COMPLETED
    assert (task.input_tokens, task.output_tokens, task.tokens_source) == (5, 12, TokensSource.ESTIMATED)


def test_a_json_reply_relayed_through_a_generator_is_not_a_stream(make_app: MakeApp) -> None:
    app, earnings = make_app()
    reply = json.dumps(payloads.ollama_chat_reply(3, 4)).encode()
    streaming_view(app, "/api/chat", [reply[:10], reply[10:]], "application/json")

    _, task = stream_call(app, earnings, "/api/chat", payloads.ollama_chat_request())

    assert (task.streamed, task.input_tokens, task.output_tokens) == (False, 3, 4)


def test_stream_with_context_is_followed_too(make_app: MakeApp) -> None:
    app, earnings = make_app()
    chunks = payloads.ollama_stream(prompt_eval_count=11, eval_count=9)

    @app.post("/api/chat")
    def chat() -> Response:
        @stream_with_context
        def generate() -> Iterator[bytes]:
            from flask import request

            assert request.path == "/api/chat"  # the request context is there while streaming
            yield from chunks

        return Response(generate(), content_type=NDJSON)

    body, task = stream_call(app, earnings, "/api/chat", payloads.ollama_chat_request())

    assert body == b"".join(chunks)
    assert (task.status, task.input_tokens, task.output_tokens) == (TaskStatus.COMPLETED, 11, 9)


# How a stream ends.


def test_an_ollama_error_line_under_status_200_fails_the_task(make_app: MakeApp) -> None:
    app, earnings = make_app()
    chunks = [*payloads.ollama_stream()[:3], b'{"error":"an error was encountered while running the model"}\n']
    streaming_view(app, "/api/chat", chunks, NDJSON)

    with received_signals(app) as received:
        _, task = stream_call(app, earnings, "/api/chat", payloads.ollama_chat_request())

    assert (task.status, task.http_status, task.earnings) == (TaskStatus.FAILED, 200, None)
    assert task.error == "an error was encountered while running the model"
    assert received.names(task.id) == ["task_created", "task_started", "task_failed"]


def test_an_sse_error_event_fails_the_task(make_app: MakeApp) -> None:
    app, earnings = make_app()
    error = {"error": {"message": "CUDA out of memory", "type": "InternalServerError", "param": None, "code": 500}}
    chunks = [*payloads.openai_stream("chat")[:3], b"data: " + json.dumps(error).encode() + b"\n\n"]
    streaming_view(app, "/v1/chat/completions", chunks, SSE)

    _, task = stream_call(app, earnings, "/v1/chat/completions", {"model": "m", "stream": True})

    assert (task.status, task.error, task.earnings) == (TaskStatus.FAILED, "CUDA out of memory", None)


@pytest.mark.parametrize(
    ("path", "chunks", "content_type"),
    [
        ("/api/chat", payloads.ollama_stream()[:-1], NDJSON),
        ("/v1/chat/completions", payloads.openai_stream("chat", usage=chat_usage(5, 9))[:-1], SSE),
    ],
    ids=["ndjson without done", "sse without [DONE]"],
)
def test_a_stream_that_stops_before_its_end_fails_the_task(
    make_app: MakeApp, path: str, chunks: list[bytes], content_type: str
) -> None:
    app, earnings = make_app()
    streaming_view(app, path, chunks, content_type)

    _, task = stream_call(app, earnings, path, {"model": "m", "stream": True})

    assert (task.status, task.error, task.earnings) == (TaskStatus.FAILED, "the stream stopped before its end", None)


@pytest.mark.parametrize("content_type", [NDJSON, SSE])
def test_an_upstream_that_breaks_off_fails_the_task(make_app: MakeApp, content_type: str) -> None:
    app, earnings = make_app(config={"PROPAGATE_EXCEPTIONS": False})
    chunks = payloads.ollama_stream() if content_type == NDJSON else payloads.openai_stream("chat")

    @app.post("/api/chat")
    def chat() -> Response:
        def relay() -> Iterator[bytes]:
            yield from chunks[:3]
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

        return Response(relay(), content_type=content_type)

    with serving(app) as base, httpx.Client() as client:
        with pytest.raises(httpx.RemoteProtocolError), client.stream("POST", base + "/api/chat", json={}) as reply:
            task_id = reply.headers[TASK_HEADER]
            for _ in reply.iter_raw():
                pass
        task = stored_task(app, earnings, task_id)

    assert task.status is TaskStatus.FAILED
    assert (
        task.error
        == "reply broken off: RemoteProtocolError: peer closed connection without sending complete message body"
    )
    assert task.earnings is None


def slow_stream(chunks: list[bytes], produced: threading.Event, limit: float = 10) -> Iterator[bytes]:
    """The chunks, then more of the last one every 5 ms for up to ``limit`` seconds."""
    yield from chunks
    produced.set()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(0.005)
        yield chunks[-1]


@pytest.mark.parametrize(
    ("policy", "content_type"),
    [("partial", NDJSON), ("partial", SSE), ("none", NDJSON)],
)
def test_a_client_that_disconnects_cancels_the_task(make_app: MakeApp, policy: str, content_type: str) -> None:
    app, _ = make_app(cancelled_policy=policy)
    if content_type == NDJSON:
        chunks = payloads.ollama_stream("chat", words=["The", " sky", " is", " blue"])[:-1]
    else:
        chunks = payloads.openai_stream("chat", words=["The", " sky", " is", " blue"])[:-2]
    produced = threading.Event()

    @app.post("/api/chat")
    def chat() -> Response:
        return Response(slow_stream(chunks, produced), content_type=content_type)

    request = json.dumps(payloads.ollama_chat_request("Why is the sky blue?")).encode()
    with serving(app) as base, received_signals(app) as received:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as connection:
            connection.sendall(
                b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(request)}\r\n\r\n".encode()
                + request
            )
            assert produced.wait(5)
            connection.recv(65536)
        [task] = wait_for(received, "task_cancelled", 1)

    assert task.status is TaskStatus.CANCELLED
    assert task.error is None
    # "Why is the sky blue?": 5 tokens; "The sky is blue" and what followed, estimated from the text.
    assert task.tokens_source is TokensSource.ESTIMATED
    assert task.input_tokens == 5
    assert task.output_tokens is not None and task.output_tokens >= 4
    if policy == "partial":
        assert task.earnings is not None
        assert received.names(task.id)[-2:] == ["task_cancelled", "earnings_recorded"]
    else:
        assert task.earnings is None
        assert received.names(task.id)[-1] == "task_cancelled"


# Nothing held back, nothing changed.


@pytest.mark.parametrize("content_type", [NDJSON, SSE])
def test_the_first_chunk_reaches_the_client_before_the_view_makes_the_second(
    make_app: MakeApp, content_type: str
) -> None:
    app, earnings = make_app()
    first_arrived = threading.Event()
    waited: list[bool] = []
    chunks = payloads.ollama_stream() if content_type == NDJSON else payloads.openai_stream("chat")

    @app.post("/api/chat")
    def chat() -> Response:
        def gated() -> Iterator[bytes]:
            yield chunks[0]
            waited.append(first_arrived.wait(5))  # only the client can open the gate
            yield from chunks[1:]

        return Response(gated(), content_type=content_type)

    with serving(app) as base, httpx.Client() as client:
        with client.stream("POST", base + "/api/chat", json=payloads.ollama_chat_request()) as reply:
            received = reply.iter_raw()
            first = next(received)
            first_arrived.set()
            rest = b"".join(received)
        task = stored_task(app, earnings, reply.headers[TASK_HEADER])

    assert first == chunks[0]
    assert waited == [True]
    assert first + rest == b"".join(chunks)
    assert task.status is TaskStatus.COMPLETED


@pytest.mark.parametrize("content_type", [NDJSON, SSE])
def test_a_stream_is_byte_identical_with_tracking_on_and_off(make_app: MakeApp, content_type: str) -> None:
    chunks = (
        payloads.ollama_stream() if content_type == NDJSON else payloads.openai_stream("chat", usage=chat_usage(1, 9))
    )
    replies = []
    for enabled in (True, False):
        app, _ = make_app(enabled=enabled)

        @app.post("/api/chat")
        def chat() -> Response:
            return Response(iter(chunks), content_type=content_type)

        with (
            serving(app) as base,
            httpx.Client() as client,
            client.stream("POST", base + "/api/chat", json={}) as reply,
        ):
            parts = list(reply.iter_raw())
            headers = [(k, v) for k, v in reply.headers.items() if k.lower() not in ("date", TASK_HEADER.lower())]
        replies.append((reply.status_code, headers, b"".join(parts)))

    assert replies[0] == replies[1]
    assert replies[0][2] == b"".join(chunks)


def test_a_task_never_stays_running_once_its_response_is_closed(make_app: MakeApp) -> None:
    app, earnings = make_app()
    streaming_view(app, "/api/chat", payloads.ollama_stream(), NDJSON)

    response = app.test_client().post("/api/chat", json={})  # not read at all
    task_id = response.headers[TASK_HEADER]
    response.close()
    task = stored_task(app, earnings, task_id)

    assert task.status is TaskStatus.CANCELLED


# Memory.


def tracking_memory_along_a_stream(make_app: MakeApp, content_type: str, marks: list[int]) -> list[int]:
    """Bytes held by allocations of flask_earnings' own code at each mark (a chunk number) of
    one tracked stream, read chunk by chunk as a client would."""
    import tracemalloc

    app, earnings = make_app()
    count = marks[-1] + 1

    def chunks() -> Iterator[bytes]:
        for index in range(count):
            if content_type == NDJSON:
                yield b'{"model":"m","created_at":"t","message":{"content":" w%d"},"done":false}\n' % index
            else:
                yield b'data: {"id":"c","choices":[{"index":0,"delta":{"content":" w%d"}}]}\n\n' % index

    @app.post("/api/chat")
    def chat() -> Response:
        return Response(chunks(), content_type=content_type)

    ours = [tracemalloc.Filter(True, "*flask_earnings*")]
    held = []
    tracemalloc.start(10)
    try:
        response = app.test_client().post("/api/chat", json={})
        for index, _ in enumerate(response.response):
            if index in marks:
                held.append(
                    sum(stat.size for stat in tracemalloc.take_snapshot().filter_traces(ours).statistics("filename"))
                )
        response.close()
    finally:
        tracemalloc.stop()
    stored_task(app, earnings, response.headers[TASK_HEADER])
    return held


@pytest.mark.parametrize("content_type", [NDJSON, SSE])
def test_a_streamed_tasks_memory_does_not_grow_with_the_stream(make_app: MakeApp, content_type: str) -> None:
    after_1k, after_50k, after_100k = tracking_memory_along_a_stream(make_app, content_type, [1_000, 50_000, 99_999])

    assert after_100k < 128 * 1024, f"{after_100k} bytes held after 100,000 chunks"
    assert after_100k < after_1k + 32 * 1024, (after_1k, after_50k, after_100k)  # no growth with the stream
    assert after_50k < after_1k + 32 * 1024, (after_1k, after_50k, after_100k)


# Servers that never call close().


def call_without_close(app: Flask, path: str, body: Any, *, read: int | None = None) -> str:
    """Call the app as a WSGI server would, but never call ``close()`` on what it returns,
    as Werkzeug's development server does not when the client resets the connection.
    ``read`` chunks are read (all when ``None``), then the iterable is let go."""
    from werkzeug.test import EnvironBuilder

    headers: dict[str, str] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        headers.update(response_headers)
        return lambda data: None

    environ = EnvironBuilder(path=path, method="POST", json=body).get_environ()
    iterable = app(environ, start_response)
    iterator = iter(iterable)
    for count, _ in enumerate(iterator, start=1):
        if read is not None and count >= read:
            break
    del iterator, iterable  # dropped, never closed
    return headers[TASK_HEADER]


@pytest.mark.parametrize("shape", ["json", "stream"])
def test_a_reply_read_to_its_end_completes_its_task_even_without_close(make_app: MakeApp, shape: str) -> None:
    app, earnings = make_app()
    if shape == "json":
        body = json.dumps(payloads.ollama_chat_reply(3, 4)).encode()
        streaming_view(app, "/api/chat", [body], "application/json")
    else:
        streaming_view(app, "/api/chat", payloads.ollama_stream(prompt_eval_count=3, eval_count=4), NDJSON)

    task = stored_task(app, earnings, call_without_close(app, "/api/chat", payloads.ollama_chat_request()))

    assert (task.status, task.input_tokens, task.output_tokens) == (TaskStatus.COMPLETED, 3, 4)


def test_a_stream_let_go_before_its_end_is_cancelled_even_without_close(make_app: MakeApp) -> None:
    app, earnings = make_app()
    streaming_view(app, "/api/chat", payloads.ollama_stream(), NDJSON)

    task = stored_task(app, earnings, call_without_close(app, "/api/chat", payloads.ollama_chat_request(), read=2))

    assert task.status is TaskStatus.CANCELLED
