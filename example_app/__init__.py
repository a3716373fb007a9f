"""An inference gateway in front of Ollama or vLLM, with every call tracked by flask-earnings.

``create_app()`` serves Ollama's native API (``/api/*``, ``/ollama/api/*``) and the
OpenAI-compatible API (``/openai/*``, ``/openai/v1/*``, ``/v1/*``) and relays each call to
its upstream. ``EXAMPLE_UPSTREAM=simulator`` (the default) relays to the built-in simulated
upstream, ``EXAMPLE_UPSTREAM=proxy`` to ``UPSTREAM_OLLAMA_URL`` and ``UPSTREAM_OPENAI_URL``.

Any ``EARNINGS_*`` environment variable is read as config (JSON values are parsed), e.g.
``EARNINGS_RATES=rates.json`` or ``EARNINGS_DATABASE_URI=postgresql+psycopg://...``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Mapping
from typing import Any

import httpx
from flask import Flask, request

from .extensions import earnings
from .gateway import gateway
from .simulator import create_simulator

#: Where the simulator answers, inside the process (httpx hands the calls to it directly).
SIMULATOR_URL = "http://simulator"

__all__ = ["create_app", "earnings"]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(
        EXAMPLE_UPSTREAM=os.environ.get("EXAMPLE_UPSTREAM", "simulator"),
        UPSTREAM_OLLAMA_URL=os.environ.get("UPSTREAM_OLLAMA_URL", "http://127.0.0.1:11434"),
        UPSTREAM_OPENAI_URL=os.environ.get("UPSTREAM_OPENAI_URL", "http://127.0.0.1:8000/v1"),
        EARNINGS_DEVICE_ID=socket.gethostname(),
        EARNINGS_CLIENT=caller,
        EARNINGS_LOG_LEVEL="INFO",
    )
    app.config.update(_earnings_environment())
    app.config.update(config or {})
    app.extensions["example_upstream"] = _upstream_client(app)
    app.register_blueprint(gateway)
    earnings.init_app(app)
    return app


def caller() -> str | None:
    """Who is calling: a digest of the API key (never the key itself), else the address."""
    auth = request.authorization
    if auth is not None and auth.token:
        return "key-" + hashlib.sha256(auth.token.encode()).hexdigest()[:12]
    return request.remote_addr


def _upstream_client(app: Flask) -> httpx.Client:
    timeout = httpx.Timeout(10.0, read=600.0)
    mode = app.config["EXAMPLE_UPSTREAM"]
    if mode == "simulator":
        app.config["UPSTREAM_OLLAMA_URL"] = SIMULATOR_URL
        app.config["UPSTREAM_OPENAI_URL"] = SIMULATOR_URL + "/v1"
        return httpx.Client(transport=httpx.WSGITransport(app=create_simulator()), timeout=timeout)
    if mode == "proxy":
        return httpx.Client(timeout=timeout)
    raise ValueError(f"EXAMPLE_UPSTREAM must be 'simulator' or 'proxy', not {mode!r}")


def _earnings_environment() -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, text in os.environ.items():
        if key.startswith("EARNINGS_"):
            try:
                values[key] = json.loads(text)
            except ValueError:
                values[key] = text
    return values
