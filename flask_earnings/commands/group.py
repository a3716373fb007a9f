"""The ``flask earnings`` group, and what every command of it shares."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from flask import current_app

if TYPE_CHECKING:
    from ..extension import _AppState


@click.group("earnings")
def earnings_cli() -> None:
    """flask-earnings: reports, task records, rates, recovery and the spool."""


def app_state() -> _AppState:
    """The current app's registration; a clear error for an app without the extension."""
    state: _AppState | None = current_app.extensions.get("earnings")
    if state is None:
        raise click.ClickException("This app does not use flask-earnings (no Earnings registered on it).")
    return state
