"""Which requests are inference calls: exact path rules, not substring matches.

A path is tracked when it is one of the built-in rules (the original's paths plus
``/api/embed``, ``/openai/v1/...`` and ``/v1/...``) or an extra rule from config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from marshmallow import ValidationError

from .schemas import PROTOCOL_TASK_TYPES, flatten_errors, load_endpoint_rule

#: Ollama's native API, served at the root or under ``/ollama``; always the ``ollama`` framework.
OLLAMA_PREFIXES = ("", "/ollama")
OLLAMA_TASK_TYPES = {
    "/api/chat": "chat",
    "/api/generate": "generate",
    "/api/embed": "embeddings",
    "/api/embeddings": "embeddings",
}
#: The OpenAI-compatible API; its framework is whichever engine serves it (config).
OPENAI_PREFIXES = ("/openai", "/openai/v1", "/v1")
OPENAI_TASK_TYPES = {
    "/chat/completions": "chat/completions",
    "/completions": "completions",
    "/embeddings": "embeddings",
}


@dataclass(frozen=True, slots=True)
class Route:
    """What a tracked path is: who serves it, which wire format it speaks, which task it is."""

    path: str
    framework: str
    protocol: str
    task_type: str


class EndpointRuleError(ValueError):
    pass


def built_in_routes(framework: str) -> dict[str, Route]:
    """The built-in rules; ``framework`` is the engine behind the OpenAI-compatible paths."""
    routes = {}
    for prefix in OLLAMA_PREFIXES:
        for suffix, task_type in OLLAMA_TASK_TYPES.items():
            routes[prefix + suffix] = Route(prefix + suffix, "ollama", "ollama", task_type)
    for prefix in OPENAI_PREFIXES:
        for suffix, task_type in OPENAI_TASK_TYPES.items():
            routes[prefix + suffix] = Route(prefix + suffix, framework, "openai", task_type)
    return routes


def build_routes(framework: str, extra: Mapping[str, Any] | None) -> dict[str, Route]:
    """The built-in rules plus ``EARNINGS_ENDPOINTS``; a rule of ``None`` removes a path.

    ``extra`` maps a path to ``{"protocol": "ollama"|"openai", "task_type": ...,
    "framework": ...}``; ``framework`` defaults as for the built-in paths.
    """
    routes = built_in_routes(framework)
    errors: dict[str, Any] = {}
    for path, rule in (extra or {}).items():
        if not isinstance(path, str) or not path.startswith("/") or "?" in path or "#" in path:
            errors[str(path)] = ["Must be a path starting with '/', without a query."]
        elif rule is None:
            routes.pop(path, None)
        else:
            try:
                loaded = load_endpoint_rule(rule)
            except ValidationError as error:
                errors[path] = error.messages
                continue
            default_framework = "ollama" if loaded["protocol"] == "ollama" else framework
            routes[path] = Route(
                path, loaded.get("framework", default_framework), loaded["protocol"], loaded["task_type"]
            )
    if errors:
        raise EndpointRuleError("Invalid EARNINGS_ENDPOINTS: " + "; ".join(flatten_errors(errors)))
    return routes


def known_task_types() -> set[str]:
    return {task_type for task_types in PROTOCOL_TASK_TYPES.values() for task_type in task_types}


def path_of(url: str) -> str:
    """The path of a path or URL, query string and fragment dropped."""
    return urlsplit(url).path
