"""A simulated upstream that speaks Ollama's native API and the OpenAI-compatible API.

It answers like Ollama (``/api/*``) and like vLLM (``/v1/*``), streams included, with token
counts that follow from the request so that a test can know them in advance:

* input tokens: the whitespace-separated words of the input text (messages, prompt,
  system, input), plus one per token id when the input is given as ids;
* output tokens: ``options.num_predict`` (Ollama) or ``max_tokens`` /
  ``max_completion_tokens`` (OpenAI), else :data:`DEFAULT_OUTPUT_TOKENS`;
* the generated text: that many words, one word per streamed chunk.

``EXAMPLE_SIMULATOR_DELAY`` (seconds, default 0) paces the chunks of a stream.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, current_app, jsonify, request

DEFAULT_OUTPUT_TOKENS = 8
EMBEDDING_SIZE = 16
CHAT_MODELS = ("llama3.2", "llama3.2:latest", "qwen2.5:7b")
EMBEDDING_MODELS = ("nomic-embed-text", "nomic-embed-text:latest")
MODELS = CHAT_MODELS + EMBEDDING_MODELS
WORDS = tuple("the sky is blue because molecules in the air scatter blue light from the sun more".split())


def create_simulator() -> Flask:
    app = Flask("example_app.simulator")
    app.config["DELAY"] = float(os.environ.get("EXAMPLE_SIMULATOR_DELAY", "0"))
    _ollama_routes(app)
    _openai_routes(app)
    return app


# What a request asks for.


def count_words(text: str) -> int:
    return len(text.split())


def input_tokens(body: Mapping[str, Any]) -> int:
    """Words of every input text in the request, plus token ids given as ids."""
    total = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            total += count_words(content)
        elif isinstance(content, list):
            total += sum(count_words(part.get("text", "")) for part in content if isinstance(part, Mapping))
    for key in ("system", "prompt", "input"):
        total += _count_value(body.get(key))
    return total


def _count_value(value: Any) -> int:
    if isinstance(value, str):
        return count_words(value)
    if isinstance(value, list):
        return sum(1 if isinstance(item, int) else _count_value(item) for item in value)
    return 0


def generated_words(count: int) -> list[str]:
    return [WORDS[index % len(WORDS)] for index in range(count)]


def _inputs(value: Any) -> list[str]:
    """The texts to embed: a string or a list of strings (token-id input embeds as one text)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    return [json.dumps(value)]


def embedding(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round((byte - 128) / 128, 6) for byte in digest[:EMBEDDING_SIZE]]


def _pause(delay: float) -> None:
    if delay:
        time.sleep(delay)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


# Ollama's native API.


def _ollama_error(message: str, status: int) -> Response:
    response = jsonify({"error": message})
    response.status_code = status
    return response


def _ollama_model(body: Mapping[str, Any], models: tuple[str, ...]) -> Response | str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _ollama_error("model is required", 400)
    if model not in models:
        return _ollama_error(f"model '{model}' not found", 404)
    return model


def _ollama_routes(app: Flask) -> None:
    @app.post("/api/chat")
    @app.post("/api/generate")
    def ollama_generate() -> Response:
        body = request.get_json(force=True, silent=True) or {}
        model = _ollama_model(body, CHAT_MODELS)
        if isinstance(model, Response):
            return model
        chat = request.path.endswith("/chat")
        options = body.get("options") or {}
        words = generated_words(int(options.get("num_predict", DEFAULT_OUTPUT_TOKENS)))
        final = {
            "model": model,
            "created_at": _now(),
            "done": True,
            "done_reason": "stop",
            "total_duration": 1_500_000 * (len(words) + 1),
            "load_duration": 500_000,
            "prompt_eval_count": input_tokens(body),
            "prompt_eval_duration": 300_000,
            "eval_count": len(words),
            "eval_duration": 1_000_000 * len(words),
        }
        if not chat:
            final["context"] = list(range(1, len(words) + 1))
        if body.get("stream", True) is False:  # Ollama streams unless told not to
            text = " ".join(words)
            piece = {"message": {"role": "assistant", "content": text}} if chat else {"response": text}
            return jsonify({**final, **piece})
        stream = _ollama_stream(model, words, chat, final, current_app.config["DELAY"])
        return Response(stream, content_type="application/x-ndjson")

    @app.post("/api/embed")
    def ollama_embed() -> Response:
        body = request.get_json(force=True, silent=True) or {}
        model = _ollama_model(body, EMBEDDING_MODELS)
        if isinstance(model, Response):
            return model
        texts = _inputs(body.get("input", ""))
        return jsonify(
            {
                "model": model,
                "embeddings": [embedding(text) for text in texts],
                "total_duration": 2_000_000,
                "load_duration": 500_000,
                "prompt_eval_count": input_tokens(body),
            }
        )

    @app.post("/api/embeddings")
    def ollama_embeddings() -> Response:
        body = request.get_json(force=True, silent=True) or {}
        model = _ollama_model(body, EMBEDDING_MODELS)
        if isinstance(model, Response):
            return model
        return jsonify({"embedding": embedding(str(body.get("prompt", "")))})

    @app.get("/api/tags")
    def ollama_tags() -> Response:
        return jsonify({"models": [{"name": name, "model": name, "size": 1} for name in MODELS]})

    @app.get("/api/version")
    def ollama_version() -> Response:
        return jsonify({"version": "0.0.0-simulator"})


def _ollama_stream(model: str, words: list[str], chat: bool, final: dict[str, Any], delay: float) -> Iterator[bytes]:
    for index, word in enumerate(words):
        _pause(delay)
        text = word if index == 0 else " " + word
        piece = {"message": {"role": "assistant", "content": text}} if chat else {"response": text}
        yield _ndjson({"model": model, "created_at": _now(), **piece, "done": False})
    closing = {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
    yield _ndjson({**final, **closing, "created_at": _now()})


def _ndjson(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data).encode() + b"\n"


# The OpenAI-compatible API, as vLLM serves it.


def _openai_error(message: str, status: int, kind: str = "BadRequestError", param: str | None = None) -> Response:
    response = jsonify({"error": {"message": message, "type": kind, "param": param, "code": status}})
    response.status_code = status
    return response


def _openai_model(body: Mapping[str, Any], models: tuple[str, ...]) -> Response | str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _openai_error("model is required", 400, param="model")
    if model not in models:
        return _openai_error(f"The model `{model}` does not exist.", 404, "NotFoundError", "model")
    return model


def _openai_routes(app: Flask) -> None:
    @app.post("/v1/chat/completions")
    @app.post("/v1/completions")
    def openai_completions() -> Response:
        body = request.get_json(force=True, silent=True) or {}
        model = _openai_model(body, CHAT_MODELS)
        if isinstance(model, Response):
            return model
        chat = request.path.endswith("/chat/completions")
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_OUTPUT_TOKENS
        words = generated_words(int(limit))
        usage = {
            "prompt_tokens": input_tokens(body),
            "completion_tokens": len(words),
            "total_tokens": input_tokens(body) + len(words),
        }
        reply_id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        if body.get("stream"):
            options = body.get("stream_options")
            include_usage = isinstance(options, Mapping) and bool(options.get("include_usage"))
            stream = _openai_stream(
                reply_id, model, words, chat, usage if include_usage else None, current_app.config["DELAY"]
            )
            return Response(stream, content_type="text/event-stream")
        text = " ".join(words)
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return jsonify(
            {
                "id": reply_id,
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": model,
                "choices": [choice],
                "usage": usage,
            }
        )

    @app.post("/v1/embeddings")
    def openai_embeddings() -> Response:
        body = request.get_json(force=True, silent=True) or {}
        model = _openai_model(body, EMBEDDING_MODELS)
        if isinstance(model, Response):
            return model
        texts = _inputs(body.get("input", ""))
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = embedding(text)
            encoded: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = input_tokens(body)
        return jsonify(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    @app.get("/v1/models")
    def openai_models() -> Response:
        created = int(time.time())
        return jsonify(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": created, "owned_by": "simulator"} for name in MODELS
                ],
            }
        )


def _openai_stream(
    reply_id: str, model: str, words: list[str], chat: bool, usage: Mapping[str, int] | None, delay: float
) -> Iterator[bytes]:
    created = int(time.time())
    kind = "chat.completion.chunk" if chat else "text_completion"
    extra = {"usage": None} if usage is not None else {}

    def chunk(choices: list[dict[str, Any]], **more: Any) -> bytes:
        data = {"id": reply_id, "object": kind, "created": created, "model": model, "choices": choices}
        return b"data: " + json.dumps({**data, **extra, **more}).encode() + b"\n\n"

    def choice(text: str, finish: str | None, first: bool = False) -> dict[str, Any]:
        if chat:
            delta = {"role": "assistant", "content": text} if first else {"content": text}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    if chat:
        yield chunk([choice("", None, first=True)])
    for index, word in enumerate(words):
        _pause(delay)
        yield chunk([choice(word if index == 0 else " " + word, None)])
    yield chunk([choice("", "stop")])
    if usage is not None:
        yield chunk([], usage=dict(usage))
    yield b"data: [DONE]\n\n"
