"""Files that keep task records safe while the database cannot: the spool and the journal.

Both live in ``EARNINGS_SPOOL_DIR`` (by default ``earnings-spool`` in the instance folder),
one file per process, named after it (see :mod:`flask_earnings.owners`):

* the **spool** holds batches of rows the database refused, one JSON line a batch, written
  by the background writer and replayed in order once the database takes them again;
* the **journal** holds one line per task, written on the request path as the task
  starts, so that a task survives even a ``SIGKILL`` of its process: a task whose end the
  journal's process never stored becomes ``interrupted``.

Files of a process that is gone are claimed (renamed, so only one process takes them) and
replayed by whichever process of the same host looks first.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .owners import Owner
from .rows import Batch

logger = logging.getLogger("flask_earnings")

SPOOL = "spool"
JOURNAL = "journal"
#: A journal file is closed and a new one begun past this size.
JOURNAL_ROTATE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SpoolFile:
    path: Path
    kind: str
    owner: Owner
    claimed_by: Owner | None

    @classmethod
    def parse(cls, path: Path) -> SpoolFile | None:
        """``<kind>-<owner>-<n>.jsonl``, with ``.claimed-<owner>`` once a process took it."""
        name, _, claim = path.name.partition(".jsonl")
        kind, _, rest = name.partition("-")
        owner_text, _, number = rest.rpartition("-")
        owner = Owner.parse(owner_text)
        if kind not in (SPOOL, JOURNAL) or owner is None or not number.isdigit():
            return None
        claimed_by = Owner.parse(claim.removeprefix(".claimed-")) if claim else None
        if claim and claimed_by is None:
            return None
        return cls(path, kind, owner, claimed_by)


def orphans(directory: Path, kind: str, here: Owner) -> Iterator[Path]:
    """Files of ``kind`` whose process is gone, claimed for this process, oldest first; with
    those this process claimed before and could not finish (the database went away), to try
    again now rather than when this process is gone too."""
    if not directory.is_dir():
        return
    found = [file for path in directory.iterdir() if (file := SpoolFile.parse(path)) is not None]
    for file in sorted(found, key=lambda file: file.path.stat().st_mtime if file.path.exists() else 0):
        if file.kind != kind:
            continue
        if file.claimed_by == here:
            yield file.path
            continue
        holder = file.claimed_by or file.owner
        if holder == here or not holder.is_gone(here):
            continue
        claimed = directory / f"{file.path.name.partition('.jsonl')[0]}.jsonl.claimed-{here}"
        try:
            os.rename(file.path, claimed)
        except FileNotFoundError:  # another process claimed it first
            continue
        yield claimed


class Spool:
    """This process's spool: batches the database refused, kept in order until it takes them."""

    def __init__(self, directory: Path, owner: Owner) -> None:
        self.directory = directory
        self.owner = owner
        self._lock = threading.Lock()
        self._file: Path | None = None
        self._closed: list[Path] = []
        self._number = 0
        self._unsynced: Path | None = None

    def append(self, batch: Batch, *, sync: bool = True) -> None:
        """Add a batch: written (kept should the process die) and, with ``sync``, synced to
        disk before this returns; else by the next :meth:`sync`."""
        line = batch.to_json().encode() + b"\n"
        with self._lock:
            if self._file is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._number += 1
                self._file = self.directory / f"{SPOOL}-{self.owner}-{self._number}.jsonl"
            with open(self._file, "ab") as file:
                file.write(line)
                file.flush()
                if sync:
                    os.fsync(file.fileno())
                else:
                    self._unsynced = self._file

    def sync(self) -> None:
        """Sync what was appended without it."""
        with self._lock:
            path, self._unsynced = self._unsynced, None
        if path is not None and path.exists():
            with open(path, "ab") as file:
                os.fsync(file.fileno())

    def waiting(self) -> bool:
        """Whether any of this process's batches still wait for the database."""
        with self._lock:
            return self._file is not None or bool(self._closed)

    def take(self) -> list[Path]:
        """This process's spool files, closed (new batches start a new file), oldest first."""
        with self._lock:
            if self._file is not None:
                self._closed.append(self._file)
                self._file = None
            taken, self._closed = self._closed, []
            return taken

    def give_back(self, paths: list[Path]) -> None:
        """Files not (fully) replayed: they go first next time."""
        with self._lock:
            self._closed = [*paths, *self._closed]


def read_batches(path: Path) -> Iterator[Batch]:
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.endswith("\n"):
                logger.warning(
                    "Spool file %s ends in a partial line %d (a crash while writing it); skipped", path, number
                )
                return
            yield Batch.from_json(line)


@dataclass(frozen=True, slots=True)
class Started:
    """What the journal keeps of a task: enough to record it as interrupted."""

    id: str
    framework: str
    protocol: str
    task_type: str
    endpoint: str
    created_at: datetime
    request_id: str | None
    device_id: str | None
    client: str | None
    rate_version: int | None


class Journal:
    """This process's journal: a line per task as it starts, on the request path.

    One small ``write`` to a file opened for appending: cheap, and kept by the system even
    if the process is killed the next instant.
    """

    def __init__(self, directory: Path, owner: Owner) -> None:
        self.directory = directory
        self.owner = owner
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._bytes = 0
        self._number = 0

    def record(self, started: Started) -> Path | None:
        """Write the task's line; returns the path of a file this write closed, if it did."""
        line = journal_line(started)
        with self._lock:
            closed = None
            if self._fd is None or self._bytes > JOURNAL_ROTATE_BYTES:
                closed = self._open_next()
            assert self._fd is not None
            os.write(self._fd, line)
            self._bytes += len(line)
        return closed

    def current(self) -> Path | None:
        return self._path

    def close(self) -> Path | None:
        """Close the file (at exit, everything in it stored); returns its path."""
        with self._lock:
            if self._fd is None:
                return None
            os.close(self._fd)
            path, self._fd, self._path = self._path, None, None
            return path

    def _open_next(self) -> Path | None:
        closed = self._path
        if self._fd is not None:
            os.close(self._fd)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._number += 1
        self._path = self.directory / f"{JOURNAL}-{self.owner}-{self._number}.jsonl"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._bytes = 0
        return closed


@functools.lru_cache(maxsize=256)
def _route_json(framework: str, protocol: str, task_type: str, endpoint: str) -> str:
    return json.dumps([framework, protocol, task_type, endpoint])[1:-1]


def _json(value: str | int | None) -> str:
    return "null" if value is None else json.dumps(value)


def journal_line(started: Started) -> bytes:
    """``[id, framework, protocol, task type, endpoint, created, request id, device, client,
    rate version]`` as a JSON line; written for every task, so made without ``json.dumps``
    where the values are known to need no escaping (the hex id, the route, the time)."""
    route = _route_json(started.framework, started.protocol, started.task_type, started.endpoint)
    return (
        f'["{started.id}",{route},"{started.created_at.isoformat()}",{_json(started.request_id)},'
        f"{_json(started.device_id)},{_json(started.client)},{_json(started.rate_version)}]\n"
    ).encode()


def read_started(path: Path) -> Iterator[Started]:
    with open(path, encoding="utf-8") as file:
        for line in file:
            if not line.endswith("\n"):
                return  # the process died while writing this last line
            values = json.loads(line)
            values[5] = datetime.fromisoformat(values[5])
            yield Started(*values)
