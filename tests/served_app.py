"""A small tracked app, run in a process of its own:
``python -m tests.served_app DATABASE_URL [SPOOL_DIR]``, or by gunicorn through ``create_app``.

It prints ``port <n>`` once it serves, on a free loopback port, and answers
``POST /v1/embeddings`` with a vLLM-shaped reply of 100 input tokens.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

from flask import Flask, Response, jsonify
from werkzeug.serving import make_server

from flask_earnings import Earnings

from . import payloads


def create_app(database_uri: str, spool_dir: str | None = None, flush_interval: float = 5) -> Flask:
    app = Flask("served_app", instance_path=tempfile.mkdtemp())
    log_level = os.environ.get("EARNINGS_TEST_LOG_LEVEL", "WARNING")
    Earnings(app, database_uri=database_uri, spool_dir=spool_dir, log_level=log_level, flush_interval=flush_interval)

    @app.post("/v1/embeddings")
    def embeddings() -> Response:
        return jsonify(payloads.openai_embeddings_reply(100))

    return app


if os.environ.get("EARNINGS_TEST_LOG_LEVEL"):
    logging.basicConfig(format="%(asctime)s %(process)d %(threadName)s %(message)s")


def main() -> None:
    server = make_server("127.0.0.1", 0, create_app(*sys.argv[1:3]), threaded=True)
    print(f"port {server.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
