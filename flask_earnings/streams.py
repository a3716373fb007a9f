"""Reading streamed replies as they pass: Ollama's NDJSON and OpenAI's server-sent events.

A stream is read in batches of at least :data:`BATCH_BYTES`, not chunk by chunk: each chunk
only joins a list, and a batch is read at C speed (a regular expression counts the generated
text, substring tests find the few lines worth parsing). Memory stays bounded: the batch,
the unfinished line or event, and what was learnt so far, never the body.

What is learnt: the counts (Ollama's final ``done`` chunk; the last ``usage`` of an OpenAI
stream, which covers vLLM's running totals and Ollama's zeros-then-real), an error sent
inside the stream, the characters of generated text (for an estimate), and whether the
stream reached its proper end (Ollama's ``done``, OpenAI's ``data: [DONE]``).
"""

from __future__ import annotations

import json
import re
from collections import deque
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
#: An unfinished line or event longer than this is not a stream this reader can follow.
MAX_EVENT_BYTES = 4 * 1024 * 1024

#: The fields that carry generated text, per protocol and task type.
_TEXT_FIELDS = {
    ("ollama", "chat"): rb"content|thinking",
    ("ollama", "generate"): rb"response|thinking",
    ("openai", "chat/completions"): rb"content|reasoning_content|reasoning",
    ("openai", "completions"): rb"text",
}
_DONE_EVENT = re.compile(rb"^data: ?\[DONE\][ \t]*$", re.MULTILINE)
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')


def reader_for(route: Route, mimetype: str) -> ReplyReader:
    """The reader for a reply of this content type: what it is, not how the view made it."""
    if mimetype == NDJSON:
        return NdjsonReader(route)
    if mimetype == SSE:
        return SseReader(route)
    return BufferedReply(route)


def _text_pattern(route: Route) -> re.Pattern[bytes] | None:
    fields = _TEXT_FIELDS.get((route.protocol, route.task_type))
    if fields is None:
        return None
    # Up to the first quote or escape: exact for plain text, a slight undercount otherwise.
    return re.compile(rb'"(?:' + fields + rb')"\s*:\s*"([^"\\]*)')


class _StreamReader:
    """What NDJSON and SSE share: batching, the unfinished tail, the running tallies."""

    #: What ends one unit (a line, an event) of this format.
    separator = b"\n"

    def __init__(self, route: Route) -> None:
        self.route = route
        self._text = _text_pattern(route)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._unfinished = b""
        self.output_chars = 0
        self.usage: Usage | None = None
        self.usage_problem: str | None = None
        self.model: str | None = None
        self.error: str | None = None
        self.finished = False
        self.malformed: str | None = None

    def feed(self, chunk: bytes) -> None:
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._pending_bytes >= BATCH_BYTES:
            self._read_batch()

    def result(self) -> Reply:
        self._read_batch(final=True)
        if self.malformed is not None and self.error is None:
            raise UnreadableReplyError(self.malformed)
        return Reply(
            usage=self.usage,
            model=self.model,
            error=self.error,
            output_chars=self.output_chars,
            usage_problem=self.usage_problem,
            truncated=not self.finished,
        )

    def _read_batch(self, *, final: bool = False) -> None:
        data = self._unfinished + b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
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
            self._read_units(complete)

    def _normalise(self, data: bytes) -> bytes:
        return data

    def _read_units(self, data: bytes) -> None:
        if self._text is not None:
            self.output_chars += sum(map(len, self._text.findall(data)))
        self._read_special_units(data)

    def _read_special_units(self, data: bytes) -> None:
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
    """Ollama's stream: one JSON object a line; the last has ``done: true`` and the counts."""

    def _read_special_units(self, data: bytes) -> None:
        if b'"error"' in data:
            for line in data.splitlines():
                if b'"error"' in line:
                    self._read_line(line)
        last = data.rstrip().rpartition(b"\n")[2]
        if last:
            self._read_line(last)

    def _read_line(self, line: bytes) -> None:
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
    lines joined, events ended by a blank line, the stream by ``data: [DONE]``."""

    separator = b"\n\n"

    def _normalise(self, data: bytes) -> bytes:
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return data

    def _read_special_units(self, data: bytes) -> None:
        if b"[DONE]" in data and _DONE_EVENT.search(data):
            self.finished = True
        if b'"error"' in data:
            for event in data.split(b"\n\n"):
                if b'"error"' in event:
                    self._read_event(event)
        last_usage = deque(_USAGE_OBJECT.finditer(data), maxlen=1)  # only the last one counts
        if last_usage:
            start = data.rfind(b"\n\n", 0, last_usage[0].start()) + 2
            end = data.find(b"\n\n", last_usage[0].end())
            self._read_event(data[start : end if end != -1 else len(data)])

    def _read_event(self, event: bytes) -> None:
        payload = _event_data(event)
        if payload is None or payload == b"[DONE]":
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
