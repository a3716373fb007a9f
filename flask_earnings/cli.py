"""``flask earnings ...``: commands for the records of an app that uses the extension.

Registered for every Flask app through the ``flask.commands`` entry point.
"""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from .owners import Owner
from .recovery import recover


@click.group("earnings")
def earnings_cli() -> None:
    """flask-earnings: task records, earnings and recovery."""


def _state() -> object:
    state = current_app.extensions.get("earnings")
    if state is None:
        raise click.ClickException("This app does not use flask-earnings (no Earnings registered on it).")
    return state


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
    state = _state()
    recorder = state.recorder  # type: ignore[attr-defined]
    found = recover(state.store, recorder.spool_dir, Owner.current(), dead_host=dead_host)  # type: ignore[attr-defined]
    click.echo(
        f"{found.spooled_batches} spooled batches stored, {found.journal_tasks} journalled tasks and "
        f"{found.interrupted} running tasks marked interrupted."
    )
