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
from typing import TYPE_CHECKING, Any

from flask import Response, g, request

from .endpoints import Route
from .options import Options
from .replies import ReplyReader
from .streams import STREAM_TYPES, reader_for

if TYPE_CHECKING:
    from .recorder import Recorder
    from .versions import RateVersion

logger = logging.getLogger("flask_earnings")

_RUN = "_flask_earnings_run"


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
    #: The reader follows the upstream's reply (see :func:`tap_upstream`), not the response.
    reads_upstream: bool = False
    # Known once the reply has been sent:
    error: str | None = None
    ending: Ending | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    attached: bool = False
    # Kept by the recorder, so that a task's signals go out in lifecycle order:
    start_announced: bool = False
    deferred: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def end(self, ending: Ending) -> bool:
        """Stamp the end; true only the first time, so that a task finishes exactly once."""
        with self.lock:
            if self.ending is not None:
                return False
            self.ending = ending
        self.duration_ms = (time.perf_counter_ns() - self.started_ns) // 1_000_000
        self.finished_at = datetime.now(UTC)
        return True


class BodyTap:
    """A response body passed through untouched, each chunk shown to the task's reader.

    Iterating it is iterating a plain generator (no Python-level ``__next__`` per chunk).
    The task ends the moment the body does: run to its end (the last chunk has been handed
    to the server), broken by an exception, or dropped before its end (the server closed
    it, or let it go, because the client went away). Ending there, and not only in
    ``close()``, keeps a task from staying ``running`` under a server that skips
    ``close()`` when the client resets the connection (Werkzeug's development server can).
    """

    __slots__ = ("_body", "_on_close", "_reader", "_run")

    def __init__(
        self,
        body: Iterable[bytes] | Iterable[str],
        run: TaskRun,
        reader: ReplyReader | None,
        on_close: Callable[[TaskRun, Ending], None],
    ) -> None:
        self._body = body
        self._run = run
        self._reader = reader
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        return self._pass_through()

    def _pass_through(self) -> Iterator[bytes]:
        ending = Ending.CANCELLED  # unless the body runs to its end or raises
        try:
            yield from fed(self._body, self._run, self._reader)
            ending = Ending.DELIVERED
        except GeneratorExit:
            raise
        except BaseException as error:
            ending = Ending.BROKEN
            self._run.error = describe(error)
            raise
        finally:
            self._on_close(self._run, ending)

    def close(self) -> None:
        """Close the view's body; a body never iterated ended here (unless it had none to send)."""
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            nothing_to_send = self._run.http_status in (204, 304)
            self._on_close(self._run, Ending.DELIVERED if nothing_to_send else Ending.CANCELLED)


def fed(chunks: Iterable[bytes] | Iterable[str], run: TaskRun, reader: ReplyReader | None) -> Iterator[bytes]:
    """The chunks, each shown to ``reader`` first; a reader that fails is dropped, not the reply."""
    for item in chunks:
        # Werkzeug sends text as UTF-8 all the same; the reader sees the bytes that are sent.
        chunk = item if isinstance(item, bytes) else item.encode()
        if reader is not None:
            try:
                reader.feed(chunk)
            except Exception:
                logger.exception("Reading the reply of task %s failed; its counts will be estimated", run.id)
                reader = run.reader = None
        yield chunk


def tap_upstream(chunks: Iterable[bytes], content_type: str) -> Iterator[bytes]:
    """Read the current task's counts from the upstream's own reply rather than the response.

    For views that change the reply on its way to the client (removing a usage chunk the
    client did not ask for, say). Outside a tracked request the chunks pass as they are.
    """
    run: TaskRun | None = getattr(g, _RUN, None)
    if run is None:
        return iter(chunks)
    run.reader = reader_for(run.route, content_type.partition(";")[0].strip().lower())
    run.reads_upstream = True
    return fed(chunks, run, run.reader)


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
        if not run.reads_upstream:
            run.reader = reader_for(run.route, mimetype)
        header = self.options.task_id_header
        if header:
            response.headers[header] = run.id
        reader = None if run.reads_upstream else run.reader
        response.response = BodyTap(response.response, run, reader, self._finish)
        run.attached = True

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
