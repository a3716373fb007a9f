"""Request and reply bodies shaped exactly as Ollama and the OpenAI-compatible servers send them."""

from __future__ import annotations

import json
from typing import Any

CREATED_AT = "2026-12-04T10:00:00.000000Z"


def ollama_chat_request(content: str = "Why is the sky blue?", model: str = "llama3.2") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], "stream": False}


def ollama_generate_request(prompt: str = "Why is the sky blue?", model: str = "llama3.2") -> dict[str, Any]:
    return {"model": model, "prompt": prompt, "stream": False}


def ollama_chat_reply(prompt_eval_count: int | None, eval_count: int | None, model: str = "llama3.2") -> dict[str, Any]:
    reply: dict[str, Any] = {
        "model": model,
        "created_at": CREATED_AT,
        "message": {"role": "assistant", "content": "The sky is blue because of Rayleigh scattering."},
        "done_reason": "stop",
        "done": True,
        "total_duration": 4_883_583_458,
        "load_duration": 1_334_875,
        "prompt_eval_duration": 342_546_000,
        "eval_duration": 4_535_599_000,
    }
    # Ollama leaves zero counts out (Go's omitempty).
    if prompt_eval_count:
        reply["prompt_eval_count"] = prompt_eval_count
    if eval_count:
        reply["eval_count"] = eval_count
    return reply


def ollama_generate_reply(prompt_eval_count: int, eval_count: int, model: str = "llama3.2") -> dict[str, Any]:
    return {
        "model": model,
        "created_at": CREATED_AT,
        "response": "The sky is blue because of Rayleigh scattering.",
        "done": True,
        "done_reason": "stop",
        "context": [1, 2, 3],
        "total_duration": 5_043_500_667,
        "load_duration": 5_025_959,
        "prompt_eval_count": prompt_eval_count,
        "prompt_eval_duration": 325_953_000,
        "eval_count": eval_count,
        "eval_duration": 4_709_213_000,
    }


def ollama_embed_request(texts: list[str] | str = "Why is the sky blue?", model: str = "all-minilm") -> dict[str, Any]:
    return {"model": model, "input": texts}


def ollama_embed_reply(prompt_eval_count: int, model: str = "all-minilm") -> dict[str, Any]:
    return {
        "model": model,
        "embeddings": [[0.010071029, -0.0017594862, 0.05007221, 0.04692972]],
        "total_duration": 14_143_917,
        "load_duration": 1_019_500,
        "prompt_eval_count": prompt_eval_count,
    }


def ollama_embeddings_request(
    prompt: str = "Here is an article about llamas...", model: str = "all-minilm"
) -> dict[str, Any]:
    return {"model": model, "prompt": prompt}


def ollama_embeddings_reply() -> dict[str, Any]:
    """The legacy endpoint's reply: a vector and no counts at all."""
    return {"embedding": [0.5670403838157654, 0.009260174818336964, 0.23178744316101074]}


def openai_chat_request(
    content: str = "Why is the sky blue?", model: str = "Qwen/Qwen2.5-7B-Instruct"
) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}]}


def openai_usage(
    prompt_tokens: int, completion_tokens: int, cached: int | None = None, reasoning: int | None = None
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    if reasoning is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def openai_chat_reply(usage: dict[str, Any] | None, model: str = "Qwen/Qwen2.5-7B-Instruct") -> dict[str, Any]:
    reply: dict[str, Any] = {
        "id": "chatcmpl-9c3f8e2d",
        "object": "chat.completion",
        "created": 1764842400,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "The sky is blue because of Rayleigh scattering."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
    }
    if usage is not None:
        reply["usage"] = usage
    return reply


def openai_completion_request(
    prompt: str = "Why is the sky blue?", model: str = "Qwen/Qwen2.5-7B-Instruct"
) -> dict[str, Any]:
    return {"model": model, "prompt": prompt, "max_tokens": 64}


def openai_completion_reply(usage: dict[str, Any] | None, model: str = "Qwen/Qwen2.5-7B-Instruct") -> dict[str, Any]:
    reply: dict[str, Any] = {
        "id": "cmpl-4a1b2c3d",
        "object": "text_completion",
        "created": 1764842400,
        "model": model,
        "choices": [
            {"index": 0, "text": " Because of Rayleigh scattering.", "logprobs": None, "finish_reason": "stop"}
        ],
    }
    if usage is not None:
        reply["usage"] = usage
    return reply


def openai_embeddings_request(
    texts: list[str] | str = "Why is the sky blue?", model: str = "BAAI/bge-m3"
) -> dict[str, Any]:
    return {"model": model, "input": texts, "encoding_format": "float"}


def openai_embeddings_reply(prompt_tokens: int, model: str = "BAAI/bge-m3") -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.0023064255, -0.009327292, 0.015797347]}],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def ollama_error(message: str = "model 'llama9' not found") -> dict[str, Any]:
    return {"error": message}


def openai_error(message: str = "The model `gpt-9` does not exist.", code: int = 404) -> dict[str, Any]:
    return {"error": {"message": message, "type": "NotFoundError", "param": "model", "code": code}}


# Streams.

WORDS = ["The", " sky", " is", " blue", " because", " of", " Rayleigh", " scattering", "."]


def ollama_stream(
    kind: str = "chat",
    words: list[str] = WORDS,
    prompt_eval_count: int | None = 26,
    eval_count: int | None = 9,
    model: str = "llama3.2",
) -> list[bytes]:
    """An Ollama NDJSON stream, one line a chunk; the last line has ``done`` and the counts."""

    def piece(text: str) -> dict[str, Any]:
        return {"message": {"role": "assistant", "content": text}} if kind == "chat" else {"response": text}

    lines = [{"model": model, "created_at": CREATED_AT, **piece(word), "done": False} for word in words]
    final: dict[str, Any] = {
        "model": model,
        "created_at": CREATED_AT,
        **piece(""),
        "done": True,
        "done_reason": "stop",
        "total_duration": 2_283_116_167,
        "load_duration": 12_345_000,
        "prompt_eval_duration": 61_000_000,
        "eval_duration": 2_201_000_000,
    }
    if prompt_eval_count:
        final["prompt_eval_count"] = prompt_eval_count
    if eval_count:
        final["eval_count"] = eval_count
    return [json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in [*lines, final]]


def openai_stream(
    kind: str = "chat",
    words: list[str] = WORDS,
    usage: dict[str, Any] | None = None,
    *,
    newline: str = "\n",
    compact: bool = True,
    model: str = "Qwen/Qwen2.5-7B-Instruct",
) -> list[bytes]:
    """An OpenAI-compatible SSE stream, one event a chunk, as vLLM sends it (compact JSON;
    ``compact=False`` spaces it as Python's json module does, like llama-cpp-python's server).

    With ``usage``, every chunk has ``"usage": null`` and one more chunk before ``[DONE]``
    carries it, as ``stream_options.include_usage`` asks."""
    chat = kind == "chat"
    separators = (",", ":") if compact else (", ", ": ")
    extra = {"usage": None} if usage is not None else {}

    def event(choices: list[dict[str, Any]], **more: Any) -> bytes:
        data = {
            "id": "chatcmpl-5d1e" if chat else "cmpl-5d1e",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": 1764842400,
            "model": model,
            "choices": choices,
            **extra,
            **more,
        }
        return f"data: {json.dumps(data, separators=separators)}{newline}{newline}".encode()

    def choice(text: str, finish: str | None = None, role: bool = False) -> dict[str, Any]:
        if chat:
            delta = {"role": "assistant", "content": text} if role else {"content": text}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    events = [event([choice("", role=True)])] if chat else []
    events += [event([choice(word)]) for word in words]
    events.append(event([choice("", finish="stop")]))
    if usage is not None:
        events.append(event([], usage=usage))
    events.append(f"data: [DONE]{newline}{newline}".encode())
    return events
