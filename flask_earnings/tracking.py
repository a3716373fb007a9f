"""The request path: a tracked call becomes a task when it starts, and ends when its reply is sent.

Only cheap work happens here: match the path, stamp the task, pass the reply's body through
a tap, hand the task to the recorder. Reading counts, pricing, storing and signalling all
happen in the background writer.

A task finishes when the response is *closed*, not in ``teardown_request``: Flask tears a
request down before the server has sent a streamed body, and the duration of a call runs
to its last byte.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from flask import Response, g, request

from .endpoints import Route
from .options import Options
from .rates import RateVersion
from .replies import BufferedReply, ReplyReader

if TYPE_CHECKING:
    from .recorder import Recorder

logger = logging.getLogger("flask_earnings")

_RUN = "_flask_earnings_run"

#: Content types of streamed replies: Ollama's NDJSON, OpenAI's server-sent events.
STREAM_TYPES = frozenset({"application/x-ndjson", "text/event-stream"})


class Ending(enum.Enum):
    #: The whole body was handed to the server.
    DELIVERED = "delivered"
    #: The body was closed before its end: the client went away.
    CANCELLED = "cancelled"
    #: Producing the body raised: the upstream broke off, or the view's generator failed.
    BROKEN = "broken"
    #: The view raised and no response was made.
    RAISED = "raised"


@dataclass(slots=True, eq=False)
class TaskRun:
    """One tracked call while it runs; handed to the writer when it starts and when it ends."""

    id: str
    route: Route
    request_id: str | None
    device_id: str | None
    client: str | None
    created_at: datetime
    started_ns: int
    rates: RateVersion
    # Known once the view has returned:
    request_body: bytes = b""
    http_status: int | None = None
    streamed: bool = False
    reader: ReplyReader | None = None
    # Known once the reply has been sent:
    error: str | None = None
    ending: Ending | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    attached: bool = False
    _finish_lock: threading.Lock = field(default_factory=threading.Lock)

    def end(self, ending: Ending) -> bool:
        """Stamp the end; true only the first time, so that a task finishes exactly once."""
        with self._finish_lock:
            if self.ending is not None:
                return False
            self.ending = ending
        self.duration_ms = (time.perf_counter_ns() - self.started_ns) // 1_000_000
        self.finished_at = datetime.now(UTC)
        return True


class BodyTap:
    """A response body passed through untouched, each chunk shown to the task's reader.

    It knows how the body ended: run to its end, closed early, or broken by an exception.
    """

    __slots__ = ("_body", "_ending", "_iterator", "_on_close", "_run")

    def __init__(
        self, body: Iterable[bytes] | Iterable[str], run: TaskRun, on_close: Callable[[TaskRun, Ending], None]
    ) -> None:
        self._body = body
        self._iterator: Iterator[bytes | str] = iter(body)
        self._run = run
        self._on_close = on_close
        self._ending: Ending | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            item = next(self._iterator)
        except StopIteration:
            self._ending = Ending.DELIVERED
            raise
        except BaseException as error:
            self._ending = Ending.BROKEN
            self._run.error = describe(error)
            raise
        # Werkzeug sends text as UTF-8 all the same; the reader sees the bytes that are sent.
        chunk = item.encode() if isinstance(item, str) else item
        reader = self._run.reader
        if reader is not None:
            try:
                reader.feed(chunk)
            except Exception:
                logger.exception("Reading the reply of task %s failed; its counts will be estimated", self._run.id)
                self._run.reader = None
        return chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close(self._run, self._ending or Ending.CANCELLED)


class Tracker:
    """The three request hooks of one app."""

    def __init__(
        self,
        *,
        routes: Mapping[str, Route],
        options: Options,
        rates: Callable[[], RateVersion],
        recorder: Recorder,
    ) -> None:
        self.routes = routes
        self.options = options
        self.rates = rates
        self.recorder = recorder

    def before_request(self) -> None:
        if request.method != "POST":
            return
        route = self.routes.get(request.path)
        if route is None:
            return
        try:
            run = self._new_run(route)
        except Exception:
            logger.exception("Could not start tracking %s", request.path)
            return
        setattr(g, _RUN, run)
        self.recorder.started(run)

    def after_request(self, response: Response) -> Response:
        run: TaskRun | None = getattr(g, _RUN, None)
        if run is not None:
            try:
                self._attach(run, response)
            except Exception:
                logger.exception("Could not follow the reply of task %s", run.id)
        return response

    def teardown_request(self, exc: BaseException | None) -> None:
        run: TaskRun | None = g.pop(_RUN, None)
        if run is None:
            return
        if exc is not None:
            run.error = describe(exc)
        if not run.attached:  # the view raised past after_request: there is no reply to wait for
            run.request_body = _request_body()
            self._finish(run, Ending.RAISED)

    def _new_run(self, route: Route) -> TaskRun:
        now = datetime.now(UTC)
        return TaskRun(
            id=str(uuid.uuid4()),
            route=route,
            request_id=request.headers.get("X-Request-ID"),
            device_id=self._device_id(),
            client=self._client(),
            created_at=now,
            started_ns=time.perf_counter_ns(),
            rates=self.rates(),
        )

    def _attach(self, run: TaskRun, response: Response) -> None:
        """Follow the reply to its end without holding back a byte of it."""
        run.http_status = response.status_code
        run.request_body = _request_body()
        mimetype = response.mimetype or ""
        run.streamed = mimetype in STREAM_TYPES
        run.reader = BufferedReply(run.route)
        header = self.options.task_id_header
        if header:
            response.headers[header] = run.id
        if response.is_sequence and not response.direct_passthrough:
            response.call_on_close(lambda: self._finish_sequence(run, response))
        else:
            response.response = BodyTap(response.response, run, self._finish)
        run.attached = True

    def _finish_sequence(self, run: TaskRun, response: Response) -> None:
        if run.reader is not None:
            try:
                run.reader.feed(response.get_data())
            except Exception:
                logger.exception("Reading the reply of task %s failed; its counts will be estimated", run.id)
                run.reader = None
        self._finish(run, Ending.DELIVERED)

    def _finish(self, run: TaskRun, ending: Ending) -> None:
        if run.end(ending):
            self.recorder.finished(run)

    def _device_id(self) -> str | None:
        device_id = self.options.device_id
        if device_id is None or isinstance(device_id, str):
            return device_id
        return _call_guarded(device_id, "EARNINGS_DEVICE_ID")

    def _client(self) -> str | None:
        client = self.options.client
        return None if client is None else _call_guarded(client, "EARNINGS_CLIENT")


def describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _request_body() -> bytes:
    try:
        return request.get_data(cache=True)
    except Exception:  # a body too large or already consumed: counts come from the reply
        return b""


def _call_guarded(function: Callable[[], str | None], key: str) -> str | None:
    try:
        value = function()
    except Exception:
        logger.exception("%s raised; the task is recorded without it", key)
        return None
    return None if value is None else str(value)
