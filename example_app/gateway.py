"""The gateway's routes: Ollama's native API and the OpenAI-compatible API, relayed upstream.

Each call is relayed with httpx and its reply passed back as it comes: status, content type
and body unchanged, streamed chunk by chunk. The gateway's views know nothing of earnings;
the extension follows every call on its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
from flask import Blueprint, Response, current_app, jsonify, request

from .extensions import earnings
from .usage import with_usage_requested, without_usage

#: Ollama's native API, at the root and under /ollama.
OLLAMA_PREFIXES = ("", "/ollama")
OLLAMA_POSTS = ("/api/chat", "/api/generate", "/api/embed", "/api/embeddings")
OLLAMA_GETS = ("/api/tags", "/api/version")
#: The OpenAI-compatible API, under /openai, /openai/v1 and /v1.
OPENAI_PREFIXES = ("/openai", "/openai/v1", "/v1")
OPENAI_POSTS = ("/chat/completions", "/completions", "/embeddings")
OPENAI_GETS = ("/models",)

#: Request headers worth passing on; hop-by-hop and framing headers are httpx's business.
FORWARDED_HEADERS = ("Authorization", "Content-Type", "Accept", "X-Request-ID")

gateway = Blueprint("gateway", __name__)


def upstream() -> httpx.Client:
    client: httpx.Client = current_app.extensions["example_upstream"]
    return client


def relay(url: str, protocol: str, *, body: bytes | None = None, strip_usage: bool = False) -> Response:
    """Send this request on to ``url`` and hand back the reply as it arrives.

    The tracker reads the upstream's own reply; with ``strip_usage`` the client gets it
    without the usage the gateway asked for on its behalf.
    """
    headers = {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers}
    headers["Accept-Encoding"] = "identity"
    content = request.get_data() if body is None else body
    outgoing = upstream().build_request(request.method, url, content=content, headers=headers)
    try:
        reply = upstream().send(outgoing, stream=True)
    except httpx.HTTPError as error:
        return upstream_unreachable(protocol, url, error)
    content_type = reply.headers.get("Content-Type", "application/json")
    chunks = earnings.tap_upstream(reply.iter_bytes(), content_type)
    if strip_usage and content_type.startswith("text/event-stream"):
        chunks = without_usage(chunks)

    def relayed() -> Iterator[bytes]:
        try:
            yield from chunks
        finally:
            reply.close()

    return Response(relayed(), status=reply.status_code, content_type=content_type)


def upstream_unreachable(protocol: str, url: str, error: httpx.HTTPError) -> Response:
    message = f"upstream {url} unreachable: {error}"
    if protocol == "ollama":
        response = jsonify({"error": message})
    else:
        response = jsonify({"error": {"message": message, "type": "BadGateway", "param": None, "code": 502}})
    response.status_code = 502
    return response


def _ollama_view(suffix: str) -> Response:
    return relay(current_app.config["UPSTREAM_OLLAMA_URL"].rstrip("/") + suffix, "ollama")


def _openai_view(suffix: str) -> Response:
    url = current_app.config["UPSTREAM_OPENAI_URL"].rstrip("/") + suffix
    if request.method != "POST" or suffix == "/embeddings":
        return relay(url, "openai")
    body, added = with_usage_requested(request.get_data())
    return relay(url, "openai", body=body, strip_usage=added)


def _endpoint_name(protocol: str, prefix: str, suffix: str) -> str:
    return protocol + (prefix + suffix).replace("/", "_").replace(".", "_")


for _prefix in OLLAMA_PREFIXES:
    for _suffix in OLLAMA_POSTS + OLLAMA_GETS:
        gateway.add_url_rule(
            _prefix + _suffix,
            endpoint=_endpoint_name("ollama", _prefix, _suffix),
            view_func=_ollama_view,
            defaults={"suffix": _suffix},
            methods=["POST"] if _suffix in OLLAMA_POSTS else ["GET"],
        )
for _prefix in OPENAI_PREFIXES:
    for _suffix in OPENAI_POSTS + OPENAI_GETS:
        gateway.add_url_rule(
            _prefix + _suffix,
            endpoint=_endpoint_name("openai", _prefix, _suffix),
            view_func=_openai_view,
            defaults={"suffix": _suffix},
            methods=["POST"] if _suffix in OPENAI_POSTS else ["GET"],
        )
