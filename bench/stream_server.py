"""The server of benchmark B2: ``python -m bench.stream_server tracked|untracked``.

Serves a 1,000-chunk Ollama NDJSON stream at ``/api/chat`` and a 1,000-chunk OpenAI SSE
stream at ``/v1/chat/completions`` with Werkzeug's threaded server on a free loopback port,
which it prints; with ``tracked`` the app has the extension. ``GET /cpu`` answers the
process's CPU time (all its threads, the writer's included).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator

from flask import Flask, Response
from werkzeug.serving import make_server

from flask_earnings import Earnings

CHUNKS = 1_000
NDJSON_CHUNK = (
    b'{"model":"llama3.2","created_at":"2026-12-04T10:00:00.000000Z",'
    b'"message":{"role":"assistant","content":" sky"},"done":false}\n'
)
NDJSON_LAST = (
    b'{"model":"llama3.2","created_at":"2026-12-04T10:00:01.000000Z","message":{"role":"assistant","content":""},'
    b'"done":true,"done_reason":"stop","prompt_eval_count":26,"eval_count":1000}\n'
)
SSE_CHUNK = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764842400,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":" sky"},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
)
SSE_LAST = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764842400,"model":"m","choices":[],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":1000,"total_tokens":1005}}\n\ndata: [DONE]\n\n'
)


def stream(chunk: bytes, last: bytes) -> Iterator[bytes]:
    for _ in range(CHUNKS):
        yield chunk
    yield last


def create_app(tracked: bool) -> Flask:
    app = Flask("bench_stream", instance_path=tempfile.mkdtemp())
    if tracked:
        Earnings(app, admin_url_prefix=None)

    @app.post("/api/chat")
    def ndjson() -> Response:
        return Response(stream(NDJSON_CHUNK, NDJSON_LAST), content_type="application/x-ndjson")

    @app.post("/v1/chat/completions")
    def sse() -> Response:
        return Response(stream(SSE_CHUNK, SSE_LAST), content_type="text/event-stream")

    @app.get("/cpu")
    def cpu() -> str:
        """This process's CPU time, to the nanosecond (``/proc``'s ticks are 10 ms)."""
        return repr(time.process_time())

    return app


if __name__ == "__main__":
    server = make_server("127.0.0.1", 0, create_app(sys.argv[1] == "tracked"), threaded=True)
    print(server.port, flush=True)
    server.serve_forever()
