"""Reading what a call cost from its request and its reply, as Ollama and OpenAI write them.

Runs in the background writer, never on the request path. Counts are the upstream's own
(Ollama ``prompt_eval_count``/``eval_count``, OpenAI ``usage``); where a reply has none,
the original's estimate of ``ceil(characters / 4)`` stands in and says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .endpoints import Route

# The values read from replies are plain (not frozen) dataclasses: one is made for every
# task, and a frozen one costs several times as much to make.


@dataclass(slots=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


@dataclass(slots=True)
class Reply:
    """What a reply says about its task."""

    #: The counts the upstream reported; ``None`` when it reported none.
    usage: Usage | None = None
    model: str | None = None
    #: The error the reply carries (an error body, an error line in a stream).
    error: str | None = None
    #: Characters of generated text, for an estimate when ``usage`` is ``None``.
    output_chars: int = 0
    #: Events (lines, SSE events) of a stream whose text was not counted: each is about a token.
    output_events: int = 0
    #: Why reported counts were not usable, if they were malformed.
    usage_problem: str | None = None
    #: A stream that stopped before its proper end (Ollama's ``done``, OpenAI's ``[DONE]``).
    truncated: bool = False


@dataclass(slots=True)
class Prompt:
    """What the request says: its model, and (counted only when needed) how much input it sent."""

    model: str | None = None
    data: Mapping[str, Any] | None = None

    def estimated_tokens(self) -> int:
        """``ceil(characters / 4)`` of the input text, plus input given as token ids."""
        if self.data is None:
            return 0
        texts: list[str] = []
        token_ids = 0
        messages = self.data.get("messages")
        if isinstance(messages, list):
            texts.append(" ".join(_message_text(message) for message in messages))
        for key in ("system", "prompt", "input"):
            text, ids = _text_or_token_ids(self.data.get(key))
            if text is not None:
                texts.append(text)
            token_ids += ids
        return estimate_tokens(len(" ".join(texts))) + token_ids


class ReplyReader(Protocol):
    """Sees a reply's body as it passes, in batches of chunks, and says what it held at the end."""

    def feed(self, chunks: list[bytes]) -> None: ...

    def result(self) -> Reply: ...


class UnreadableReplyError(ValueError):
    """A reply whose body is not what its content type and protocol promise."""


class MalformedUsageError(ValueError):
    pass


def estimate_tokens(chars: int) -> int:
    """The original module's estimate: four characters a token, rounded up."""
    return math.ceil(chars / 4)


class BufferedReply:
    """A JSON reply: its chunks are kept (by reference) and parsed once, in the writer."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.chunks: list[bytes] = []

    def feed(self, chunks: list[bytes]) -> None:
        self.chunks += chunks

    def result(self) -> Reply:
        return read_json_reply(self.route, b"".join(self.chunks))


def read_json_reply(route: Route, body: bytes) -> Reply:
    try:
        data = json.loads(body)
    except ValueError:
        raise UnreadableReplyError(f"reply is not JSON ({_excerpt(body)})") from None
    if not isinstance(data, dict):
        raise UnreadableReplyError(f"reply is not a JSON object ({_excerpt(body)})")
    if route.protocol == "ollama":
        return read_ollama_object(route, data)
    return read_openai_object(route, data)


def read_ollama_object(route: Route, data: Mapping[str, Any]) -> Reply:
    """A whole Ollama reply, or the final ``done`` chunk of a stream."""
    if "error" in data:
        return Reply(error=_text(data["error"]), model=_model(data))
    try:
        usage = _ollama_usage(route, data)
    except MalformedUsageError as problem:
        return Reply(model=_model(data), output_chars=_ollama_output_chars(data), usage_problem=str(problem))
    # The generated text is only counted when there is nothing better to go on.
    output_chars = 0 if usage is not None else _ollama_output_chars(data)
    return Reply(usage=usage, model=_model(data), output_chars=output_chars)


def _ollama_usage(route: Route, data: Mapping[str, Any]) -> Usage | None:
    # Go's omitempty drops zero counts: a missing count is 0, as long as the reply is the
    # kind that carries counts at all (``done`` for chat/generate, ``embeddings`` for
    # /api/embed). The legacy /api/embeddings reply never has counts.
    if route.task_type == "embeddings":
        if "embeddings" not in data:
            return None
        return Usage(_count(data, "prompt_eval_count"), 0)
    if "done" not in data:
        return None
    return Usage(_count(data, "prompt_eval_count"), _count(data, "eval_count"))


def _ollama_output_chars(data: Mapping[str, Any]) -> int:
    message = data.get("message")
    if isinstance(message, Mapping) and isinstance(message.get("content"), str):
        return len(message["content"])
    response = data.get("response")
    return len(response) if isinstance(response, str) else 0


def read_openai_object(route: Route, data: Mapping[str, Any]) -> Reply:
    """A whole OpenAI-compatible reply, or one chunk of a stream."""
    error = openai_error(data)
    if error is not None:
        return Reply(error=error, model=_model(data))
    try:
        usage = openai_usage(data.get("usage"))
    except MalformedUsageError as problem:
        return Reply(model=_model(data), output_chars=openai_output_chars(data), usage_problem=str(problem))
    output_chars = 0 if usage is not None else openai_output_chars(data)
    return Reply(usage=usage, model=_model(data), output_chars=output_chars)


def openai_error(data: Mapping[str, Any]) -> str | None:
    """``{"error": {"message": ...}}``, or older vLLM's flat ``{"object": "error", ...}``."""
    if "error" in data and data["error"] is not None:
        error = data["error"]
        if isinstance(error, Mapping) and "message" in error:
            return _text(error["message"])
        return _text(error)
    if data.get("object") == "error":
        return _text(data.get("message", "error"))
    return None


def openai_usage(usage: Any) -> Usage | None:
    if usage is None:
        return None
    if not isinstance(usage, Mapping):
        raise MalformedUsageError("usage is not an object")
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    return Usage(
        input_tokens=_count(usage, "prompt_tokens", "usage."),
        output_tokens=_count(usage, "completion_tokens", "usage."),
        cached_tokens=_detail(prompt_details, "cached_tokens", "usage.prompt_tokens_details."),
        reasoning_tokens=_detail(completion_details, "reasoning_tokens", "usage.completion_tokens_details."),
    )


def openai_output_chars(data: Mapping[str, Any]) -> int:
    """Generated text of ``choices``: ``message.content`` (chat), ``text`` (completions),
    ``delta.content`` (a chat stream chunk); joined by spaces as the original did."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return 0
    texts = []
    for choice in choices:
        if not isinstance(choice, Mapping):
            continue
        holder = choice.get("message") or choice.get("delta")
        text = holder.get("content") if isinstance(holder, Mapping) else choice.get("text")
        texts.append(text if isinstance(text, str) else "")
    return len(" ".join(texts))


def read_prompt(body: bytes) -> Prompt:
    """The model of a request body (any protocol), and the body for an estimate."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        return Prompt()
    if not isinstance(data, dict):
        return Prompt()
    return Prompt(model=_model(data), data=data)


def _message_text(message: Any) -> str:
    if not isinstance(message, Mapping):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(
            part["text"] for part in content if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def _text_or_token_ids(value: Any) -> tuple[str | None, int]:
    """A prompt or input: a string, strings, token ids, or lists of token ids."""
    if isinstance(value, str):
        return value, 0
    if not isinstance(value, list) or not value:
        return None, 0
    if all(isinstance(item, str) for item in value):
        return " ".join(value), 0
    if all(_is_count(item) for item in value):
        return None, len(value)
    if all(isinstance(item, list) and all(_is_count(token) for token in item) for item in value):
        return None, sum(len(item) for item in value)
    return None, 0


def _count(data: Mapping[str, Any], key: str, prefix: str = "") -> int:
    value = data.get(key, 0)
    if value is None:
        return 0
    if not _is_count(value):
        raise MalformedUsageError(f"{prefix}{key} is not a whole number: {value!r}")
    return int(value)


def _detail(details: Any, key: str, prefix: str) -> int | None:
    if not isinstance(details, Mapping) or details.get(key) is None:
        return None
    return _count(details, key, prefix)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _model(data: Mapping[str, Any]) -> str | None:
    model = data.get("model")
    return model if isinstance(model, str) and model else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _excerpt(body: bytes, limit: int = 120) -> str:
    text = body[:limit].decode("utf-8", "replace")
    return repr(text + ("…" if len(body) > limit else ""))
