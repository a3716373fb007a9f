"""Rate versions: every table that was ever in effect, as immutable rows; the current one cached.

A task is priced with the version in effect when it started, and stores its number. Each
process keeps the current version in memory, so the request path reads an attribute; its
background thread asks the database for a newer one every ``EARNINGS_RATES_REFRESH_INTERVAL``
seconds (one small query, not one per request), so an edit made through any process is
used by all of them within that time, through the database alone.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from .rates import RateTable, load_rate_table
from .schemas import RESERVED_NAMES
from .storage import Store

logger = logging.getLogger("flask_earnings")


@dataclass(frozen=True, slots=True)
class RateChange:
    """One field of the table that a version changed; ``None`` where it was absent."""

    path: str
    old: Any
    new: Any

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "from": self.old, "to": self.new}


@dataclass(frozen=True, slots=True)
class RateVersion:
    """A rate table as it was in effect, with who made it and what it changed."""

    #: ``None`` for the configured table while no stored version could be read.
    number: int | None
    table: RateTable
    created_at: datetime | None = None
    actor: str | None = None
    request_id: str | None = None
    #: ``config`` (the first version), ``admin``, ``rollback``, ``cli``.
    source: str = "config"
    based_on: int | None = None
    rolled_back_from: int | None = None
    changes: tuple[RateChange, ...] = field(default=())
    #: Framework × task type pairs priced by ``default`` so far (each is warned about once).
    defaulted: set[tuple[str, str]] = field(default_factory=set, compare=False, repr=False)

    def to_dict(self, *, with_table: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "version": self.number,
            "created_at": None if self.created_at is None else self.created_at.isoformat(),
            "actor": self.actor,
            "request_id": self.request_id,
            "source": self.source,
            "based_on": self.based_on,
            "rolled_back_from": self.rolled_back_from,
            "changes": [change.to_dict() for change in self.changes],
        }
        if with_table:
            data["table"] = self.table.to_dict()
        return data


class StaleVersionError(Exception):
    """The edit was based on a version that is no longer the current one."""

    def __init__(self, current: int | None) -> None:
        self.current = current
        super().__init__(f"the rate table is at version {current}")


class UnknownVersionError(LookupError):
    pass


def table_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[RateChange, ...]:
    """What differs between two tables in their JSON shape, field by field."""
    before, after = dict(_leaves(old)), dict(_leaves(new))
    return tuple(
        RateChange(path, before.get(path), after.get(path))
        for path in sorted(before.keys() | after.keys())
        if before.get(path) != after.get(path)
    )


def _leaves(data: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            yield from _leaves(value, path)
        else:
            yield path, value


def with_entry(table: Mapping[str, Any], entry: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    """The table (as a dict) with one entry's fields replaced by ``changes``.

    ``entry`` is ``<framework>/<task_type>``, ``default`` or ``duration_bonus``; a new entry
    (or a new nested object) needs all its fields. The admin API's ``PATCH`` and ``flask
    earnings rates set`` share it; :meth:`RateBook.commit` validates the result like any table.
    """
    data = dict(table)
    if entry in RESERVED_NAMES:
        data[entry] = _merged(data.get(entry, {}), changes)
    else:
        framework, _, task_type = entry.partition("/")
        entries = dict(data.get(framework, {}))  # an unknown framework is the schema's to reject
        entries[task_type] = _merged(entries.get(task_type, {}), changes)
        data[framework] = entries
    return data


def _merged(old: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``old`` with ``changes``; a nested object (an entry's ``duration_bonus``, a model's
    prices) is merged too, as in a JSON merge patch, so one of its fields can change alone."""
    merged = dict(old)
    for name, value in changes.items():
        inner = merged.get(name)
        merged[name] = _merged(inner, value) if isinstance(value, Mapping) and isinstance(inner, Mapping) else value
    return merged


class RateBook:
    """One app's rate versions: the cached current one, the history, and edits."""

    def __init__(
        self,
        store: Store,
        configured: RateTable,
        *,
        frameworks: Iterable[str],
        task_types: Iterable[str],
        refresh_interval: float,
    ) -> None:
        self.store = store
        self.configured = configured
        self.frameworks = frozenset(frameworks)
        self.task_types = frozenset(task_types)
        self.refresh_interval = refresh_interval
        #: Called with each version this process starts to use after the first.
        self.on_change: Callable[[RateVersion], None] = lambda version: None
        self._current: RateVersion | None = None
        self._checked_at = 0.0
        self._lock = threading.RLock()

    # The request path.

    def current(self) -> RateVersion:
        """The version in effect: an attribute read, but for the first call of a process."""
        version = self._current
        return version if version is not None else self._first_load()

    def _first_load(self) -> RateVersion:
        with self._lock:
            if self._current is None:
                try:
                    self._current = self._latest()
                except Exception:
                    logger.exception("Could not read the rate versions; pricing with the configured table for now")
                    self._current = RateVersion(None, self.configured)
                else:
                    self._warn_if_config_changed(self._current)
                self._checked_at = time.monotonic()
            return self._current

    # The background thread.

    def seconds_until_refresh(self) -> float:
        return max(0.0, self._checked_at + self.refresh_interval - time.monotonic())

    def refresh_if_due(self) -> None:
        """Adopt a newer stored version, at most once per ``refresh_interval``."""
        if time.monotonic() - self._checked_at < self.refresh_interval:
            return
        self._checked_at = time.monotonic()
        try:
            self.refresh()
        except Exception:
            logger.exception("Could not check for a new rate version")

    def refresh(self) -> RateVersion:
        current = self._current
        versions = self.store.tables.versions
        with self.store.connect() as connection:
            newest = connection.execute(sa.select(sa.func.max(versions.c.number))).scalar()
        if current is None or current.number is None or (newest is not None and newest > current.number):
            self._adopt(self._latest())
        return self.current()

    # Reading the history.

    def history(self, *, limit: int = 50, offset: int = 0) -> list[RateVersion]:
        self.current()
        versions = self.store.tables.versions
        query = sa.select(versions).order_by(versions.c.number.desc()).limit(limit).offset(offset)
        with self.store.connect() as connection:
            return [self._from_row(row) for row in connection.execute(query).mappings()]

    def version(self, number: int) -> RateVersion:
        self.current()
        versions = self.store.tables.versions
        with self.store.connect() as connection:
            row = connection.execute(sa.select(versions).where(versions.c.number == number)).mappings().first()
        if row is None:
            raise UnknownVersionError(f"there is no rate version {number}")
        return self._from_row(row)

    # Edits.

    def validate(self, data: Any, *, source: str = "rate table") -> RateTable:
        """The table, or :class:`~flask_earnings.rates.RateTableError` naming each bad field."""
        return load_rate_table(data, frameworks=self.frameworks, task_types=self.task_types, source=source)

    def commit(
        self,
        data: Any,
        *,
        expected: int | None,
        actor: str | None,
        request_id: str | None = None,
        source: str = "admin",
        rolled_back_from: int | None = None,
    ) -> RateVersion:
        """Store ``data`` as the next version, if the current one is still ``expected``.

        An invalid table raises :class:`~flask_earnings.rates.RateTableError` and a stale
        ``expected`` :class:`StaleVersionError`; either way nothing is stored. A table equal
        to the current one stores nothing and returns the current version.
        ``expected=None`` takes whatever version is current.
        """
        table = self.validate(data)
        self.current()
        latest = self._latest()
        if expected is not None and latest.number != expected:
            raise StaleVersionError(latest.number)
        if table == latest.table:
            return latest
        number = (latest.number or 0) + 1
        version = RateVersion(
            number=number,
            table=table,
            created_at=datetime.now(UTC),
            actor=actor,
            request_id=request_id,
            source=source,
            based_on=latest.number,
            rolled_back_from=rolled_back_from,
            changes=table_changes(latest.table.to_dict(), table.to_dict()),
        )
        try:
            with self.store.connect() as connection, connection.begin():
                connection.execute(self.store.tables.versions.insert(), [self._to_row(version)])
        except sa.exc.IntegrityError:  # another writer stored this number first
            raise StaleVersionError(self._latest().number) from None
        self._adopt(version)
        return version

    def rollback(
        self, number: int, *, actor: str | None, request_id: str | None = None, expected: int | None = None
    ) -> RateVersion:
        """A new version with the content of version ``number``."""
        old = self.version(number)
        return self.commit(
            old.table.to_dict(),
            expected=expected,
            actor=actor,
            request_id=request_id,
            source="rollback",
            rolled_back_from=number,
        )

    # Internals.

    def _adopt(self, version: RateVersion) -> None:
        with self._lock:
            current = self._current
            if current is not None and current.number is not None and (version.number or 0) <= current.number:
                return
            self._current = version
        if current is not None:
            self.on_change(version)

    def _warn_if_config_changed(self, current: RateVersion) -> None:
        """Once versions are stored they rule, restarts included: a table changed in the config
        since the history began (its version 1) is not used, which should not pass in silence."""
        if current.number is None:
            return
        try:
            first = current if current.number == 1 else self.version(1)
        except Exception:  # only a warning: the version in effect stands whatever happens here
            logger.debug("Could not read rate version 1 to compare it with the configured table", exc_info=True)
            return
        if first.table != self.configured:
            logger.warning(
                "The configured rate table (EARNINGS_RATES) differs from the one the rate history began "
                "with; it is not used: the stored version %s is in effect. To use it, import it as a new "
                "version: flask earnings rates import FILE, or the admin.",
                current.number,
            )

    def _latest(self) -> RateVersion:
        """The newest stored version; the configured table becomes version 1 of an empty history."""
        versions = self.store.tables.versions
        query = sa.select(versions).order_by(versions.c.number.desc()).limit(1)
        with self.store.connect() as connection:
            row = connection.execute(query).mappings().first()
        if row is not None:
            return self._from_row(row)
        first = RateVersion(1, self.configured, created_at=datetime.now(UTC), source="config")
        try:
            with self.store.connect() as connection, connection.begin():
                connection.execute(versions.insert(), [self._to_row(first)])
        except sa.exc.IntegrityError:  # another process stored version 1 first
            return self._latest()
        return first

    def _to_row(self, version: RateVersion) -> dict[str, Any]:
        return {
            "number": version.number,
            "created_at": version.created_at,
            "actor": version.actor,
            "request_id": version.request_id,
            "source": version.source,
            "based_on": version.based_on,
            "rolled_back_from": version.rolled_back_from,
            "rate_table": json.dumps(version.table.to_dict(), sort_keys=True),
            "changes": json.dumps([change.to_dict() for change in version.changes]),
        }

    def _from_row(self, row: sa.RowMapping) -> RateVersion:
        data = json.loads(row["rate_table"])
        # A stored version keeps the frameworks it was written with, even if the config changed since.
        frameworks = self.frameworks | (set(data) - set(RESERVED_NAMES))
        return RateVersion(
            number=row["number"],
            table=load_rate_table(
                data, frameworks=frameworks, task_types=self.task_types, source=f"stored rate version {row['number']}"
            ),
            created_at=row["created_at"],
            actor=row["actor"],
            request_id=row["request_id"],
            source=row["source"],
            based_on=row["based_on"],
            rolled_back_from=row["rolled_back_from"],
            changes=tuple(RateChange(item["path"], item["from"], item["to"]) for item in json.loads(row["changes"])),
        )
