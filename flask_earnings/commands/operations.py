"""``flask earnings recover``: what stopped processes left behind."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from ..owners import Owner
from ..recovery import recover
from .group import app_state, earnings_cli


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
