"""The request path: a tracked call becomes a task when it starts, and ends when its reply is sent.

The tracker is WSGI middleware around the app (``app.wsgi_app``): it sees each call's
environ, the status and headers its app starts the response with, and the body it returns,
for the cost of a dict lookup on calls it does not track. For a tracked call it stamps a
task, keeps a copy of the request body as the view reads it, adds the task id header,
passes the body through a tap, and hands the task to the recorder. Reading counts, pricing,
storing and signalling all happen in the background writer.

A task ends where its reply's body ends, not in ``teardown_request``: Flask tears a request
down before the server has sent a streamed body, and the duration of a call runs to its
last byte.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from flask import Flask, request

from .endpoints import Route
from .options import Options
from .replies import ReplyReader
from .streams import BATCH_BYTES, STREAM_TYPES, reader_for

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .recorder import Recorder
    from .versions import RateVersion

logger = logging.getLogger("flask_earnings")

#: Where a tracked call's task lives in its WSGI environ.
RUN_KEY = "flask_earnings.run"


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
    created_at: datetime
    started_ns: int
    rates: RateVersion
    device_id: str | None = None
    client: str | None = None
    #: The request body, as the view read it.
    request_input: RequestInput | None = None
    # Known once the view has returned:
    http_status: int | None = None
    content_type: str = ""
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
    #: Handed to the recorder as started (once it knows who the caller is).
    begun: bool = False
    # Kept by the recorder, so that a task's signals go out in lifecycle order:
    start_announced: bool = False
    deferred: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def request_body(self) -> bytes:
        return b"" if self.request_input is None else self.request_input.data()

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
        return feeding(self._body, self._run, self._reader, partial(self._on_close, self._run))

    def close(self) -> None:
        """Close the view's body; a body never iterated ended here (unless it had none to send)."""
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            nothing_to_send = self._run.http_status in (204, 304)
            self._on_close(self._run, Ending.DELIVERED if nothing_to_send else Ending.CANCELLED)


def feeding(
    chunks: Iterable[bytes] | Iterable[str],
    run: TaskRun,
    reader: ReplyReader | None,
    ended: Callable[[Ending], None] | None = None,
) -> Iterator[bytes]:
    """The chunks, unchanged, shown to ``reader`` in batches; ``ended`` is told how they ended.

    Per chunk only a list append: the reader sees them once ``BATCH_BYTES`` have passed (and
    at the end). A reader that fails is dropped, never the reply.
    """
    ending = Ending.CANCELLED  # unless the chunks run to their end or raise
    pending: list[bytes] = []
    size = 0
    try:
        for item in chunks:
            # Werkzeug sends text as UTF-8 all the same; the reader sees the bytes that are sent.
            chunk = item if type(item) is bytes else item.encode() if isinstance(item, str) else bytes(item)
            if reader is not None:
                pending.append(chunk)
                size += len(chunk)
                if size >= BATCH_BYTES:
                    reader = _feed(run, reader, pending)
                    pending, size = [], 0
            yield chunk
        ending = Ending.DELIVERED
    except GeneratorExit:
        raise
    except BaseException as error:
        ending = Ending.BROKEN
        run.error = describe(error)
        raise
    finally:
        if reader is not None and pending:
            _feed(run, reader, pending)
        if ended is not None:
            ended(ending)


def _feed(run: TaskRun, reader: ReplyReader, chunks: list[bytes]) -> ReplyReader | None:
    try:
        reader.feed(chunks)
    except Exception:
        logger.exception("Reading the reply of task %s failed; its counts will be estimated", run.id)
        run.reader = None
        return None
    return reader


class RequestInput:
    """``wsgi.input``, keeping a copy of what the app reads of it (for the model and an estimate)."""

    __slots__ = ("_chunks", "_stream")

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._chunks: list[bytes] = []

    def read(self, size: int | None = -1) -> bytes:
        data: bytes = self._stream.read(size)
        self._chunks.append(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data: bytes = self._stream.readline(size)
        self._chunks.append(data)
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = self._stream.readlines(hint)
        self._chunks += lines
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def read_rest(self, content_length: str | None) -> None:
        """Read what the app left unread of a body of known length (never past it)."""
        if not content_length or not content_length.isdigit():
            return
        remaining = int(content_length) - sum(map(len, self._chunks))
        while remaining > 0:
            data = self._stream.read(remaining)
            if not data:
                return
            self._chunks.append(data)
            remaining -= len(data)

    def data(self) -> bytes:
        return b"".join(self._chunks)


def tap_upstream(chunks: Iterable[bytes], content_type: str) -> Iterator[bytes]:
    """Read the current task's counts from the upstream's own reply rather than the response.

    For views that change the reply on its way to the client (removing a usage chunk the
    client did not ask for, say). Outside a tracked request the chunks pass as they are.
    """
    run: TaskRun | None = request.environ.get(RUN_KEY)
    if run is None:
        return iter(chunks)
    run.reader = reader_for(run.route, content_type.partition(";")[0].strip().lower())
    run.reads_upstream = True
    return feeding(chunks, run, run.reader)


class Tracker:
    """WSGI middleware that turns each tracked call of one app into a task."""

    def __init__(
        self,
        app: Flask,
        *,
        routes: Mapping[str, Route],
        options: Options,
        rates: Callable[[], RateVersion],
        recorder: Recorder,
    ) -> None:
        self.wsgi_app: WSGIApplication = app.wsgi_app
        self.routes = routes
        self.options = options
        self.rates = rates
        self.recorder = recorder
        self.header = options.task_id_header
        #: Who the caller is can only be asked inside the app's request (see ``attribute``).
        self.attributes = callable(options.device_id) or options.client is not None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        route = self.routes.get(environ.get("PATH_INFO", "")) if environ.get("REQUEST_METHOD") == "POST" else None
        if route is None:
            return self.wsgi_app(environ, start_response)
        try:
            run = self._new_run(route, environ)
        except Exception:
            logger.exception("Could not start tracking %s", route.path)
            return self.wsgi_app(environ, start_response)
        try:
            body = self.wsgi_app(environ, self._starting(run, start_response))
        except BaseException as error:  # it propagates (PROPAGATE_EXCEPTIONS): there is no reply
            run.error = run.error or describe(error)
            self._finish(run, Ending.RAISED)
            raise
        return self._follow(run, body, environ)

    def _new_run(self, route: Route, environ: WSGIEnvironment) -> TaskRun:
        run = TaskRun(
            id=os.urandom(16).hex(),
            route=route,
            request_id=environ.get("HTTP_X_REQUEST_ID"),
            created_at=datetime.now(UTC),
            started_ns=time.perf_counter_ns(),
            rates=self.rates(),
            device_id=self.options.device_id if isinstance(self.options.device_id, str) else None,
            request_input=RequestInput(environ["wsgi.input"]),
        )
        environ["wsgi.input"] = run.request_input
        environ[RUN_KEY] = run
        if not self.attributes:
            self._begin(run)
        return run

    def attribute(self) -> None:
        """``before_request``: ask the app's functions who is calling, then begin the task."""
        run: TaskRun | None = request.environ.get(RUN_KEY)
        if run is None or run.begun:
            return
        device_id = self.options.device_id
        if callable(device_id):
            run.device_id = _call_guarded(device_id, "EARNINGS_DEVICE_ID")
        if self.options.client is not None:
            run.client = _call_guarded(self.options.client, "EARNINGS_CLIENT")
        self._begin(run)

    def remember_exception(self, sender: Flask, exception: BaseException, **extra: Any) -> None:
        """``got_request_exception``: the error a 500 reply stands for."""
        run: TaskRun | None = request.environ.get(RUN_KEY)
        if run is not None:
            run.error = describe(exception)

    def _starting(self, run: TaskRun, start_response: StartResponse) -> StartResponse:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            try:
                run.http_status = int(status[:3])
                for name, value in headers:
                    if name.lower() == "content-type":
                        run.content_type = value
                        break
                if self.header:
                    headers.append((self.header, run.id))
            except Exception:
                logger.exception("Could not follow the reply of task %s", run.id)
            return start_response(status, headers, exc_info)

        return start

    def _follow(self, run: TaskRun, body: Iterable[bytes], environ: WSGIEnvironment) -> Iterable[bytes]:
        """The body, passed through a tap that shows it to the task's reader."""
        try:
            if run.request_input is not None:
                run.request_input.read_rest(environ.get("CONTENT_LENGTH"))
            mimetype = run.content_type.partition(";")[0].strip().lower()
            run.streamed = mimetype in STREAM_TYPES
            if not run.reads_upstream:
                run.reader = reader_for(run.route, mimetype, run.request_body)
            return BodyTap(body, run, None if run.reads_upstream else run.reader, self._finish)
        except Exception:
            logger.exception("Could not follow the reply of task %s", run.id)
            return body

    def _begin(self, run: TaskRun) -> None:
        run.begun = True
        self.recorder.started(run)

    def _finish(self, run: TaskRun, ending: Ending) -> None:
        if run.end(ending):
            if not run.begun:  # the app answered before asking who was calling
                self._begin(run)
            self.recorder.finished(run)


def describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _call_guarded(function: Callable[[], str | None], key: str) -> str | None:
    try:
        value = function()
    except Exception:
        logger.exception("%s raised; the task is recorded without it", key)
        return None
    return None if value is None else str(value)
