"""``flask earnings recover | init-db | spool status | spool replay``: the tables, and what waits in the spool."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
import sqlalchemy as sa
from flask.cli import with_appcontext

from ..owners import Owner
from ..recovery import recover, store_merged
from ..rows import Batch
from ..spool import JOURNAL, SPOOL, SpoolFile, orphans, read_batches
from ..storage import Store
from .group import app_state, earnings_cli

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar


@earnings_cli.command("recover")
@click.option(
    "--dead-host",
    metavar="HOST",
    help="Also mark every running task of HOST interrupted. Only for a host that is gone for good.",
)
@with_appcontext
def recover_command(dead_host: str | None) -> None:
    """Store what stopped processes of this host left, and mark their unfinished tasks interrupted.

    Spool files are replayed, journalled tasks that never ended and tasks still running in
    the database become interrupted. Tasks of live processes are left alone; running it
    again is harmless. A new process of the app does the same on its own at start-up.
    """
    state = app_state()
    found = recover(state.store, state.recorder.spool_dir, Owner.current(), dead_host=dead_host)
    click.echo(
        f"{found.spooled_batches} spooled batches stored, {found.journal_tasks} journalled tasks and "
        f"{found.interrupted} running tasks marked interrupted."
    )


# The tables.


@earnings_cli.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Create the extension's tables that are missing in the app's database.

    For an app that keeps them in its own database (``Earnings(db=db)``) without migrations,
    or to make them before the first call rather than on it. With Flask-Migrate, let a
    migration create them instead. Existing tables are left as they are; running it again
    is harmless.
    """
    store = app_state().store
    try:
        created = store.create_tables()
        incomplete = _missing_columns(store)
    except (sa.exc.SQLAlchemyError, ImportError) as error:  # ImportError: the URL's driver is not installed
        raise click.ClickException(f"Could not create the tables in {_where(store)}: {_reason(error)}") from error
    found = [table.name for table in _tables(store) if table.name not in created]
    click.echo(f"Database: {_where(store)}")
    if created:
        click.echo(f"Created: {', '.join(created)}")
    if found:
        click.echo(f"Already there: {', '.join(found)}")
    if incomplete:
        lacking = "; ".join(f"{table} lacks {', '.join(columns)}" for table, columns in incomplete.items())
        raise click.ClickException(
            f"{lacking}. init-db creates missing tables but does not change existing ones: "
            "add the columns with a migration (see docs/deployment.md)."
        )


def _tables(store: Store) -> list[sa.Table]:
    return [store.tables.tasks, store.tables.records, store.tables.versions]


def _missing_columns(store: Store) -> dict[str, list[str]]:
    """The columns the model has and the database's tables do not (an older schema)."""
    with store.engine.connect() as connection:
        inspector = sa.inspect(connection)
        missing = {}
        for table in _tables(store):
            present = {column["name"] for column in inspector.get_columns(table.name, schema=table.schema)}
            if lacking := [column.name for column in table.columns if column.name not in present]:
                missing[table.name] = lacking
    return missing


def _where(store: Store) -> str:
    try:
        return store.engine.url.render_as_string(hide_password=True)
    except (sa.exc.SQLAlchemyError, ImportError):  # an engine that cannot even be made: no URL to show
        return "the database"


def _reason(error: BaseException) -> str:
    """The driver's own words (``connection refused``, ``no such table``), without the SQL."""
    cause = error.orig if isinstance(error, sa.exc.DBAPIError) else error
    return str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__


# The spool.


@earnings_cli.group("spool")
def spool_cli() -> None:
    """Task records waiting for the database: what is there, and storing it."""


class Holder(enum.Enum):
    """Who a spool or journal file belongs to, as this process can judge it."""

    THIS = "this process"
    STOPPED = "stopped process"
    LIVE = "live process"
    OTHER_HOST = "another host"


@dataclass(frozen=True, slots=True)
class Waiting:
    """One file of the spool directory, and what is in it."""

    file: SpoolFile
    holder: Holder
    owner: Owner  # the process that holds it: its writer, or the one that claimed it
    lines: int  # batches of a spool file, tasks of a journal
    tasks: int
    records: int
    size: int
    problem: str | None = None


def waiting_files(directory: Path, here: Owner) -> list[Waiting]:
    """The spool and journal files, oldest first (the order of a replay); nothing is claimed."""
    if not directory.is_dir():
        return []
    found: list[Waiting] = []
    for path in sorted(directory.iterdir(), key=_age):
        file = SpoolFile.parse(path)
        if file is None:
            continue
        holder = file.claimed_by or file.owner
        judged = (
            Holder.THIS
            if holder == here
            else Holder.STOPPED
            if holder.is_gone(here)
            else Holder.LIVE
            if holder.host == here.host
            else Holder.OTHER_HOST
        )
        try:
            found.append(_read(file, judged, holder))
        except FileNotFoundError:  # replayed (or deleted by its process) meanwhile
            continue
    return found


def _age(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _read(file: SpoolFile, holder: Holder, owner: Owner) -> Waiting:
    size = file.path.stat().st_size
    lines = _count_lines(file.path)
    if file.kind == JOURNAL:
        return Waiting(file, holder, owner, lines, lines, 0, size)
    tasks = records = 0
    try:
        for batch in read_batches(file.path):
            tasks += len(batch.tasks)
            records += len(batch.records)
    except (ValueError, KeyError, TypeError) as error:
        return Waiting(file, holder, owner, lines, tasks, records, size, problem=f"unreadable: {error}")
    return Waiting(file, holder, owner, lines, tasks, records, size)


def _count_lines(path: Path) -> int:
    """Whole lines: a last line cut short by a crash is neither read nor counted."""
    count = 0
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    return f"{size / 1024:.1f} KiB" if size < 1024 * 1024 else f"{size / (1024 * 1024):.1f} MiB"


_FATE = {
    (SPOOL, Holder.THIS): "its writer replays it",
    (SPOOL, Holder.STOPPED): "replayable (flask earnings spool replay)",
    (SPOOL, Holder.LIVE): "its writer replays it",
    (SPOOL, Holder.OTHER_HOST): "that host's processes replay it",
    (JOURNAL, Holder.THIS): "deleted once its tasks are stored",
    (JOURNAL, Holder.STOPPED): "flask earnings recover marks its unfinished tasks interrupted",
    (JOURNAL, Holder.LIVE): "deleted once its tasks are stored",
    (JOURNAL, Holder.OTHER_HOST): "that host's processes recover it",
}


@spool_cli.command("status")
@with_appcontext
def spool_status_command() -> None:
    """List the spool's files: batches the database refused, and the journals of running tasks.

    Reads the files only: it needs no database and claims nothing.
    """
    state = app_state()
    directory = state.recorder.spool_dir
    files = waiting_files(directory, Owner.current())
    click.echo(f"Spool directory: {directory}")
    if not files:
        click.echo("Empty: no batches wait for the database, no journal is open.")
        return
    for item in files:
        if item.file.kind == SPOOL:
            content = f"{_n(item.lines, 'batch')} ({_n(item.tasks, 'task row')}, {_n(item.records, 'earnings record')})"
        else:
            content = _n(item.lines, "journalled task")
        who = item.owner.host if item.holder is Holder.OTHER_HOST else f"pid {item.owner.pid}"
        fate = item.problem or _FATE[item.file.kind, item.holder]
        click.echo(f"  {item.file.path.name}: {content}, {_size(item.size)}; {item.holder.value} ({who}): {fate}")
    spooled = [item for item in files if item.file.kind == SPOOL]
    replayable = sum(item.lines for item in spooled if item.holder is Holder.STOPPED)
    click.echo(
        f"Waiting: {_n(sum(item.lines for item in spooled), 'batch')} in {_n(len(spooled), 'spool file')} "
        f"({_size(sum(item.size for item in spooled))}), {replayable} replayable now; "
        f"{_n(len(files) - len(spooled), 'journal')}."
    )


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}es" if noun.endswith("ch") else f"{count} {noun}s"


@spool_cli.command("replay")
@with_appcontext
def spool_replay_command() -> None:
    """Store the batches stopped processes of this host left in the spool, oldest first.

    Files of live processes are theirs to replay, this one's included. The database is
    checked first: when it cannot be reached, nothing is claimed or changed. Replaying
    twice never doubles a task or its earnings.
    """
    state = app_state()
    store, directory, here = state.store, state.recorder.spool_dir, Owner.current()
    spooled = [item for item in waiting_files(directory, here) if item.file.kind == SPOOL]
    if not any(item.holder is Holder.STOPPED for item in spooled):
        others = f" ({_n(len(spooled), 'spool file')} of running processes or other hosts, theirs)" if spooled else ""
        click.echo(f"Nothing to replay in {directory}: no spool files of stopped processes{others}.")
        return
    _check_database(store)
    paths = list(orphans(directory, SPOOL, here))  # claimed (renamed) for this process, all at once
    batches = 0
    with click.progressbar(
        length=sum(map(_count_lines, paths)), label=f"Replaying {_n(len(paths), 'spool file')}"
    ) as bar:
        for done, path in enumerate(paths):
            try:
                batches += store_merged(store, _counted(read_batches(path), bar))
            except (sa.exc.SQLAlchemyError, OSError, ValueError, KeyError, TypeError) as error:
                rest = f", with the {len(paths) - done - 1} after it" if done < len(paths) - 1 else ""
                raise click.ClickException(
                    f"Could not replay {path.name} ({_reason(error)}), after {_n(batches, 'batch')} from "
                    f"{_n(done, 'file')} before it. It stays in the spool{rest}, for the next process of this "
                    "host (or this command, run again)."
                ) from error
            path.unlink()
    click.echo(f"Replayed {_n(batches, 'batch')} from {_n(len(paths), 'spool file')} into {_where(store)}.")


def _check_database(store: Store) -> None:
    """Refuse before claiming a file: the database must be reachable and have the tables."""
    try:
        with store.connect() as connection:
            connection.execute(sa.select(store.tables.tasks.c.id).limit(1)).all()
            connection.execute(sa.select(store.tables.records.c.task_id).limit(1)).all()
    except (sa.exc.SQLAlchemyError, ImportError) as error:
        raise click.ClickException(
            f"The database ({_where(store)}) cannot take the batches: {_reason(error)}. Nothing was replayed; "
            "the spool is as it was. (Tables missing? flask db upgrade, or flask earnings init-db.)"
        ) from error


def _counted(batches: Iterator[Batch], bar: ProgressBar[int]) -> Iterator[Batch]:
    for batch in batches:
        yield batch
        bar.update(1)
