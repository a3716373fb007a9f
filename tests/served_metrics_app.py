"""A tracked app with metrics on, for gunicorn:
``tests.served_metrics_app:create_app(DATABASE_URL, SPOOL_DIR, ADMIN_TOKEN)``.

It answers as a simulated upstream would, with counts taken from the call, so that the tasks
differ in framework, task type, tokens, earnings and status:

- ``POST /api/chat`` (Ollama): input tokens the words of the message, output tokens
  ``options.num_predict``; streamed (NDJSON) when ``stream`` is true; model ``llama9`` is
  Ollama's 404, a failed task;
- ``POST /v1/chat/completions`` (vLLM): input tokens the words of the message, output tokens
  ``max_tokens``;
- ``POST /v1/embeddings`` (vLLM): input tokens the words of the input.
"""

from __future__ import annotations

import tempfile
from typing import Any

from flask import Flask, Response, jsonify, request

from flask_earnings import Earnings

from . import payloads


def create_app(database_uri: str, spool_dir: str, admin_token: str) -> Flask:
    app = Flask("served_metrics_app", instance_path=tempfile.mkdtemp())
    Earnings(
        app, database_uri=database_uri, spool_dir=spool_dir, admin_token=admin_token, metrics=True, flush_interval=0.5
    )

    @app.post("/api/chat")
    def ollama_chat() -> Response:
        call: dict[str, Any] = request.get_json()
        if call["model"] == "llama9":
            failure = jsonify(payloads.ollama_error("model 'llama9' not found"))
            failure.status_code = 404
            return failure
        words = len(call["messages"][-1]["content"].split())
        generated = call["options"]["num_predict"]
        if call.get("stream"):
            chunks = payloads.ollama_stream(prompt_eval_count=words, eval_count=generated)
            return Response(iter(chunks), content_type="application/x-ndjson")
        return jsonify(payloads.ollama_chat_reply(words, generated))

    @app.post("/v1/chat/completions")
    def openai_chat() -> Response:
        call: dict[str, Any] = request.get_json()
        words = len(call["messages"][-1]["content"].split())
        return jsonify(payloads.openai_chat_reply(payloads.openai_usage(words, call["max_tokens"])))

    @app.post("/v1/embeddings")
    def embeddings() -> Response:
        call: dict[str, Any] = request.get_json()
        return jsonify(payloads.openai_embeddings_reply(len(call["input"].split())))

    return app
