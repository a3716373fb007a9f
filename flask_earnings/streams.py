"""Reading streamed replies as they pass: Ollama's NDJSON and OpenAI's server-sent events.

A stream is read in batches of at least :data:`BATCH_BYTES`, not chunk by chunk: the tap
gathers the chunks in a list and hands them over together, and a batch is read at C speed
(a regular expression counts the generated text, substring tests find the few lines worth
parsing). Memory stays bounded: the batch, the unfinished line or event, and what was
learnt so far, never the body.

What is learnt: the counts (Ollama's final ``done`` chunk; the last ``usage`` of an OpenAI
stream, which covers vLLM's running totals and Ollama's zeros-then-real), an error that
ends the stream, the number of events and (when no counts are to come) the characters of
generated text, for an estimate; and whether the stream reached its proper end (Ollama's
``done``, OpenAI's ``data: [DONE]``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .endpoints import Route
from .replies import (
    BufferedReply,
    MalformedUsageError,
    Reply,
    ReplyReader,
    UnreadableReplyError,
    Usage,
    openai_error,
    openai_usage,
    read_ollama_object,
)

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
#: Content types of streamed replies.
STREAM_TYPES = frozenset({NDJSON, SSE})

#: A batch is read once this much has arrived (and at the end).
BATCH_BYTES = 32 * 1024
#: How many of a stream's last units (lines, events) are kept, to be read at its end.
TAIL_UNITS = 4
#: An unfinished line or event longer than this is not a stream this reader can follow.
MAX_EVENT_BYTES = 4 * 1024 * 1024

#: The fields that carry generated text, per protocol and task type.
_TEXT_FIELDS = {
    ("ollama", "chat"): rb"content|thinking",
    ("ollama", "generate"): rb"response|thinking",
    ("openai", "chat/completions"): rb"content|reasoning_content|reasoning",
    ("openai", "completions"): rb"text",
}


_ASKS_FOR_USAGE = re.compile(rb'(?<!\\)"include_usage"\s*:\s*true')


def reader_for(route: Route, mimetype: str, request_body: bytes | None = None) -> ReplyReader:
    """The reader for a reply of this content type: what it is, not how the view made it.

    A stream that will carry its counts (Ollama's always do; an OpenAI stream does when the
    request says ``stream_options.include_usage``) needs no text counted for an estimate,
    which is most of a reader's work: should it stop short, each event counts as a token.
    ``request_body`` ``None``: the request is not known, so the text is counted.
    """
    if mimetype == NDJSON:
        return NdjsonReader(route, count_text=False)
    if mimetype == SSE:
        asks = request_body is not None and _ASKS_FOR_USAGE.search(request_body) is not None
        return SseReader(route, count_text=not asks)
    return BufferedReply(route)


def _text_pattern(route: Route) -> re.Pattern[bytes] | None:
    fields = _TEXT_FIELDS.get((route.protocol, route.task_type))
    if fields is None:
        return None
    # Up to the first quote or escape: exact for plain text, a slight undercount otherwise.
    return re.compile(rb'"(?:' + fields + rb')"\s*:\s*"([^"\\]*)')


class _StreamReader:
    """What NDJSON and SSE share: batches, the unfinished unit, the running tallies, the tail.

    Per batch only C-speed work: find the last unit boundary, count the units (and the text,
    when an estimate may be needed). The last few units are kept: a stream's counts, its
    ``[DONE]`` and an error that stops it all come at its end, and are read there, once.
    """

    #: What ends one unit (a line, an event) of this format.
    separator = b"\n"

    def __init__(self, route: Route, *, count_text: bool) -> None:
        self.route = route
        self._text = _text_pattern(route) if count_text else None
        self._unfinished = b""
        self._tail: list[bytes] = []
        self.output_chars = 0
        self.events = 0
        self.usage: Usage | None = None
        self.usage_problem: str | None = None
        self.model: str | None = None
        self.error: str | None = None
        self.finished = False
        self.malformed: str | None = None

    def feed(self, chunks: list[bytes]) -> None:
        self._read_batch(chunks)

    def result(self) -> Reply:
        self._read_batch([], final=True)
        for unit in self._tail:
            self._read_end(unit)
        if self.malformed is not None and self.error is None:
            raise UnreadableReplyError(self.malformed)
        return Reply(
            usage=self.usage,
            model=self.model,
            error=self.error,
            output_chars=self.output_chars,
            output_events=self.events,
            usage_problem=self.usage_problem,
            truncated=not self.finished,
        )

    def _read_batch(self, chunks: list[bytes], *, final: bool = False) -> None:
        data = self._unfinished + b"".join(chunks)
        held = b""
        if not final and data.endswith(b"\r"):  # maybe the first half of a \r\n
            data, held = data[:-1], b"\r"
        data = self._normalise(data)
        if final:
            end = len(data)
        else:
            found = data.rfind(self.separator)
            end = 0 if found == -1 else found + len(self.separator)
        complete, self._unfinished = data[:end], data[end:] + held
        if len(self._unfinished) > MAX_EVENT_BYTES:
            self.malformed = f"a stream unit runs past {MAX_EVENT_BYTES} bytes without ending"
            self._unfinished = b""
        if complete:
            self.events += complete.count(self.separator)
            if self._text is not None:
                self.output_chars += sum(map(len, self._text.findall(complete)))
            self._keep_tail(complete)

    def _keep_tail(self, complete: bytes) -> None:
        parts = complete.strip(b"\n").rsplit(self.separator, TAIL_UNITS)
        if len(parts) > TAIL_UNITS:
            parts = parts[1:]  # the first part is what comes before the last units
        self._tail = [*self._tail, *(part for part in parts if part.strip())][-TAIL_UNITS:]

    def _normalise(self, data: bytes) -> bytes:
        return data

    def _read_end(self, unit: bytes) -> None:
        raise NotImplementedError

    def _count_usage(self, usage: Any) -> None:
        try:
            counted = openai_usage(usage)
        except MalformedUsageError as problem:
            self.usage_problem = str(problem)
            return
        if counted is not None:
            self.usage = counted


class NdjsonReader(_StreamReader):
    """Ollama's stream: one JSON object a line; the last has ``done: true`` and the counts,
    unless an ``{"error": ...}`` line ends it."""

    def _read_end(self, line: bytes) -> None:
        try:
            item = json.loads(line)
        except ValueError:
            self.malformed = f"a stream line is not JSON: {line[:120]!r}"
            return
        if not isinstance(item, Mapping):
            return
        reply = read_ollama_object(self.route, item)
        self.model = reply.model or self.model
        if reply.error is not None:
            self.error = reply.error
            self.finished = True
        elif item.get("done") is True:
            self.finished = True
            self.usage = reply.usage
            self.usage_problem = reply.usage_problem


class SseReader(_StreamReader):
    """An OpenAI-compatible stream of server-sent events, read by the rules of SSE:
    ``\\r\\n``, ``\\n`` or ``\\r`` line ends, ``:`` comment lines, an event's ``data:``
    lines joined, events ended by a blank line, the stream by ``data: [DONE]``. Its counts
    are in the last event with a ``usage`` object (vLLM's running totals included)."""

    separator = b"\n\n"

    def _normalise(self, data: bytes) -> bytes:
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return data

    def _read_end(self, event: bytes) -> None:
        payload = _event_data(event)
        if payload is None:
            return
        if payload.strip() == b"[DONE]":
            self.finished = True
            return
        try:
            item = json.loads(payload)
        except ValueError:
            self.malformed = f"an event's data is not JSON: {payload[:120]!r}"
            return
        if not isinstance(item, Mapping):
            return
        model = item.get("model")
        if isinstance(model, str) and model:
            self.model = model
        error = openai_error(item)
        if error is not None:
            self.error = error
            self.finished = True
        elif item.get("usage") is not None:
            self._count_usage(item["usage"])


def _event_data(event: bytes) -> bytes | None:
    """The ``data`` of one event: its ``data:`` lines joined by newlines; ``None`` if none."""
    lines = []
    for line in event.split(b"\n"):
        if line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        if name == b"data":
            lines.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(lines) if lines else None
