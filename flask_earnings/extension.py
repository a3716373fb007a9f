"""The ``Earnings`` extension: wiring the request hooks, the rate table and the recorder into an app."""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app, got_request_exception
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.engine import Engine

from .endpoints import Route, build_routes, known_task_types, path_of
from .options import Options, check_option_names, resolve_options
from .pricing import price
from .rates import DEFAULT_RATES, RateTable, load_rate_table, read_rate_source
from .recorder import Recorder
from .signals import rates_changed, send
from .storage import Store, Tables, define_tables, standalone_engine
from .tasks import EarningsBreakdown, Task
from .tracking import Tracker, tap_upstream
from .versions import RateBook, RateVersion

logger = logging.getLogger("flask_earnings")

EXTENSION_KEY = "earnings"


@dataclass(slots=True)
class _AppState:
    """What one app's registration holds; found again through ``current_app.extensions``."""

    extension: Earnings
    options: Options
    routes: dict[str, Route]
    rate_book: RateBook
    store: Store
    recorder: Recorder


class Earnings:
    """Turns every inference call of a Flask app into a task record with exact earnings.

    Every option is also an ``EARNINGS_*`` config key; an argument given here wins over the
    key. See :class:`flask_earnings.options.Options` (and ``docs/configuration.md``) for the list.

    :param app: the app to register with now; or call :meth:`init_app` later.
    :param db: the app's Flask-SQLAlchemy instance: the tables join its metadata (and so its
        migrations) and the records go to its database. Without it, the records go to
        ``EARNINGS_DATABASE_URI``, by default an SQLite file in the app's instance folder.
    """

    def __init__(self, app: Flask | None = None, *, db: SQLAlchemy | None = None, **options: Any) -> None:
        check_option_names(options)
        self._db = db
        self._options = options
        self._tables: Tables = define_tables(db.metadata if db is not None else sa.MetaData())
        self._admin_auth: Callable[[], str | None] | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register with ``app``: read its ``EARNINGS_*`` config, validate the rate table and
        the endpoint rules (an invalid one raises, naming the field), and install the hooks.

        Nothing touches the database here; the tables are created (when the extension owns
        them) on first use.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "An 'Earnings' instance has already been registered on this Flask app."
                " Import and use that instance instead."
            )
        if self._db is not None and "sqlalchemy" not in app.extensions:
            raise RuntimeError("Call 'db.init_app(app)' before registering 'Earnings(db=db)' on the app.")
        options = resolve_options(app, self._options)
        install_metrics = _metrics_installer() if options.metrics else None
        if options.log_level is not None:
            logger.setLevel(options.log_level)
        framework = options.framework or "vllm"
        routes = build_routes(framework, options.endpoints)
        frameworks = {"ollama", "vllm", framework} | {route.framework for route in routes.values()}
        table = load_rate_table(
            DEFAULT_RATES if options.rates is None else read_rate_source(options.rates),
            frameworks=frameworks,
            task_types=known_task_types(),
            source="rate table (EARNINGS_RATES)",
        )
        store = Store(self._tables, self._engine_factory(app, options), owned=self._db is None)
        rate_book = RateBook(
            store,
            table,
            frameworks=frameworks,
            task_types=known_task_types(),
            refresh_interval=options.rates_refresh_interval,
        )
        rate_book.on_change = partial(_announce_rates, weakref.ref(app))
        recorder = Recorder(
            app,
            store,
            rate_book,
            spool_dir=Path(options.spool_dir or os.path.join(app.instance_path, "earnings-spool")),
            batch_size=options.batch_size,
            flush_interval=options.flush_interval,
            queue_size=options.queue_size,
            pay_cancelled=options.cancelled_policy == "partial",
        )
        app.extensions[EXTENSION_KEY] = _AppState(self, options, routes, rate_book, store, recorder)
        if install_metrics is not None:
            install_metrics(app, recorder)
        if options.enabled:
            tracker = Tracker(app, routes=routes, options=options, rates=rate_book.current, recorder=recorder)
            app.wsgi_app = tracker  # type: ignore[method-assign]
            if tracker.attributes:
                app.before_request(tracker.attribute)
            got_request_exception.connect(tracker.remember_exception, app)
            recorder.start()
        if options.admin_url_prefix is not None:
            from .admin import blueprint

            app.register_blueprint(blueprint, url_prefix=options.admin_url_prefix)

    def admin_auth(self, callback: Callable[[], str | None]) -> Callable[[], str | None]:
        """Register the function that lets someone into the admin, as a decorator.

        It is called inside each admin request, with no arguments, and returns the name of
        the person or system acting (kept in the rate history), or ``None`` to refuse. Use
        it to reuse the app's own sign-in, Flask-Login's ``current_user`` say.
        """
        self._admin_auth = callback
        return callback

    def _engine_factory(self, app: Flask, options: Options) -> Callable[[], Engine]:
        app_ref = weakref.ref(app)
        db = self._db
        if db is not None:

            def app_engine() -> Engine:
                app = app_ref()
                if app is None:
                    raise RuntimeError("the app is gone")
                with app.app_context():
                    return db.engine

            return app_engine
        uri = options.database_uri
        instance_path = app.instance_path

        def own_engine() -> Engine:
            if uri is not None:
                return standalone_engine(uri)
            os.makedirs(instance_path, exist_ok=True)
            return standalone_engine(f"sqlite:///{os.path.join(instance_path, 'earnings.sqlite3')}")

        return own_engine

    def _state(self) -> _AppState:
        state: _AppState | None = current_app.extensions.get(EXTENSION_KEY)
        if state is None or state.extension is not self:
            raise RuntimeError(
                "The current Flask app is not registered with this 'Earnings' instance."
                " Did you forget to call 'init_app'?"
            )
        return state

    # Helpers named after the original module's, for the current app.

    def is_trackable_endpoint(self, path: str) -> bool:
        """Whether a POST to ``path`` (a path or URL; the query string is ignored) is tracked."""
        return path_of(path) in self._state().routes

    def get_framework(self, path: str) -> str | None:
        """``ollama``, ``vllm``, ... for a tracked path; ``None`` for any other."""
        route = self._state().routes.get(path_of(path))
        return None if route is None else route.framework

    def get_task_type(self, path: str) -> str | None:
        """``chat``, ``generate``, ``embeddings``, ``chat/completions``, ``completions``; or ``None``."""
        route = self._state().routes.get(path_of(path))
        return None if route is None else route.task_type

    def calculate_earnings(
        self,
        framework: str,
        task_type: str,
        *,
        input_tokens: int,
        output_tokens: int,
        duration_ms: int,
        model: str | None = None,
    ) -> EarningsBreakdown:
        """What a task would earn at the rates in effect now."""
        rate, _ = self.rate_table.lookup(framework, task_type, model)
        return price(rate, input_tokens=input_tokens, output_tokens=output_tokens, duration_ms=duration_ms)

    @property
    def rate_table(self) -> RateTable:
        """The rate table in effect for the current app."""
        return self.rate_version.table

    @property
    def rate_version(self) -> RateVersion:
        """The rate version in effect for the current app: its number, table and history entry."""
        return self._state().rate_book.current()

    def tap_upstream(self, chunks: Iterable[bytes], content_type: str) -> Iterator[bytes]:
        """Count the current task from the upstream's own reply instead of the response.

        A view that changes a reply on its way to the client (say, it asked the upstream for
        ``stream_options.include_usage`` and removes the usage chunk the client did not ask
        for) passes the upstream's chunks through this; the tracker reads them as they pass
        and the response still decides how the call ended. Call it inside the request.
        """
        self._state()
        return tap_upstream(chunks, content_type)

    # Records.

    def get_task(self, task_id: str) -> Task | None:
        """The stored task, or ``None``. Work still queued is not seen: :meth:`flush` first."""
        return self._state().store.load_task(task_id)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every task queued so far is stored and signalled; false on timeout."""
        return self._state().recorder.flush(timeout)


def _metrics_installer() -> Callable[[Flask, Recorder], None]:
    """The metrics' installer; a missing prometheus_client stops the app at start-up, not later."""
    try:
        from .metrics import install
    except ImportError as error:
        if (error.name or "").partition(".")[0] != "prometheus_client":
            raise
        message = "EARNINGS_METRICS needs prometheus_client: pip install 'flask-earnings[prometheus]'"
        raise RuntimeError(message) from error
    return install


def _announce_rates(app_ref: weakref.ref[Flask], version: RateVersion) -> None:
    app = app_ref()
    if app is not None:
        with app.app_context():
            logger.info("Rates now at version %s (%s)", version.number, version.source)
            send(rates_changed, app, version=version)
