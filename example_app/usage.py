"""Exact counts for streams whose client did not ask for them.

An OpenAI-compatible stream carries usage only when the request says
``"stream_options": {"include_usage": true}``. The gateway asks the upstream for it on the
client's behalf, lets the tracker read the upstream's stream, and gives the client the
stream it asked for: without the extra usage chunk and the ``"usage": null`` members.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator

#: Two line ends in a row; a \r\n is one line end, never a \r and then a \n.
_BLANK_LINE = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
_NULL_USAGE = re.compile(rb',\s*"usage"\s*:\s*null')
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')


def with_usage_requested(body: bytes) -> tuple[bytes, bool]:
    """The request body asking for usage in its stream, and whether that had to be added."""
    try:
        data = json.loads(body)
    except ValueError:
        return body, False
    if not isinstance(data, dict) or data.get("stream") is not True:
        return body, False
    options = data.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        return body, False
    data["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return json.dumps(data).encode(), True


def without_usage(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The stream minus what ``include_usage`` added; each event leaves as soon as it is whole."""
    unfinished = b""
    for chunk in chunks:
        data = unfinished + chunk
        # A trailing \r may be the first half of a \r\n: wait for the next chunk to tell.
        cut = _last_boundary(data[:-1] if data.endswith(b"\r") else data)
        if cut == 0:
            unfinished = data
            continue
        whole, unfinished = data[:cut], data[cut:]
        kept = _strip(whole)
        if kept:
            yield kept
    if unfinished:
        yield _strip(unfinished)


def _last_boundary(data: bytes) -> int:
    end = 0
    for match in _BLANK_LINE.finditer(data):
        end = match.end()
    return end


def _strip(events: bytes) -> bytes:
    if _USAGE_OBJECT.search(events):
        events = b"".join(event for event in _events(events) if not _is_usage_chunk(event))
    return _NULL_USAGE.sub(b"", events)


def _events(data: bytes) -> Iterator[bytes]:
    start = 0
    for match in _BLANK_LINE.finditer(data):
        yield data[start : match.end()]
        start = match.end()
    if start < len(data):
        yield data[start:]


def _is_usage_chunk(event: bytes) -> bool:
    """The chunk ``include_usage`` adds before ``[DONE]``: no choices, only the usage."""
    text = event.strip()
    if not text.startswith(b"data:"):
        return False
    try:
        data = json.loads(text[5:])
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("choices") == [] and data.get("usage") is not None
