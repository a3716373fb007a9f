"""``flask earnings rates ...``: the live rate table from a shell.

The same validation, versions and history as the admin: every change is a new version, kept
with who made it (the local user) and what it changed; a bad table is refused with each
error by field, and nothing is stored.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import click
from flask.cli import with_appcontext

from ..rates import RateTableError, read_rate_source
from ..versions import RateVersion, StaleVersionError, UnknownVersionError, with_entry
from .group import app_state, earnings_cli

SOURCE = "cli"


@earnings_cli.group("rates")
def rates_cli() -> None:
    """The live rate table: show, change, import, export, history, rollback."""


@rates_cli.command("show")
@click.option("--format", "form", type=click.Choice(["table", "json"]), default="table", show_default=True)
@with_appcontext
def show_command(form: str) -> None:
    """The rates in effect now, and their version."""
    version = app_state().rate_book.refresh()
    if form == "json":
        click.echo(json.dumps(version.to_dict(), indent=2))
        return
    click.echo(f"Version {version.number} ({_made(version)})")
    for line in _entries(version.table.to_dict()):
        click.echo(line)


@rates_cli.command("set")
@click.argument("entry")
@click.argument("fields", nargs=-1, required=True)
@click.option("--expect-version", type=int, help="Refuse unless the rates are still at this version.")
@with_appcontext
def set_command(entry: str, fields: Sequence[str], expect_version: int | None) -> None:
    """Change one ENTRY's FIELDS, as NAME=VALUE.

    ENTRY is FRAMEWORK/TASK_TYPE (a new one needs every field), ``default`` or
    ``duration_bonus``. Amounts are exact decimals.

    \b
    flask earnings rates set vllm/chat/completions input=0.0015 output=0.003
    flask earnings rates set duration_bonus per_ms=0.00002 cap=0.5
    flask earnings rates set ollama/chat duration_bonus.threshold_ms=2000 \\
        duration_bonus.per_ms=0.0001 duration_bonus.cap=0.02
    """
    book = app_state().rate_book
    table = with_entry(book.refresh().table.to_dict(), entry, _changes(fields))
    _commit(table, expect_version)


@rates_cli.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--expect-version", type=int, help="Refuse unless the rates are still at this version.")
@with_appcontext
def import_command(path: str, expect_version: int | None) -> None:
    """Replace the whole table with the JSON file at PATH (as ``rates export`` writes it)."""
    try:
        data = read_rate_source(path)
    except RateTableError as error:
        raise click.ClickException(_errors(error)) from None
    _commit(data, expect_version)


@rates_cli.command("export")
@click.argument("path", type=click.Path(dir_okay=False, writable=True), required=False)
@with_appcontext
def export_command(path: str | None) -> None:
    """The table in effect as JSON, to PATH or standard output; ``rates import`` reads it back."""
    text = json.dumps(app_state().rate_book.refresh().table.to_dict(), indent=2) + "\n"
    if path is None:
        click.echo(text, nl=False)
        return
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)
    click.echo(f"Wrote {path}.", err=True)


@rates_cli.command("history")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--format", "form", type=click.Choice(["text", "json"]), default="text", show_default=True)
@with_appcontext
def history_command(limit: int, form: str) -> None:
    """The versions, newest first, with who made each and what it changed."""
    history = app_state().rate_book.history(limit=limit)
    if form == "json":
        click.echo(json.dumps([version.to_dict(with_table=False) for version in history], indent=2))
        return
    for version in history:
        click.echo(f"Version {version.number} ({_made(version)})")
        for change in version.changes:
            click.echo(f"    {change.path}: {_shown(change.old)} -> {_shown(change.new)}")


@rates_cli.command("rollback")
@click.argument("number", type=int)
@click.option("--expect-version", type=int, help="Refuse unless the rates are still at this version.")
@with_appcontext
def rollback_command(number: int, expect_version: int | None) -> None:
    """Make the table of version NUMBER the rates again (as a new version)."""
    try:
        version = app_state().rate_book.rollback(number, actor=_actor(), expected=expect_version)
    except UnknownVersionError as error:
        raise click.ClickException(str(error)) from None
    except StaleVersionError as error:
        raise click.ClickException(f"The rates are at version {error.current}, not {expect_version}.") from None
    click.echo(f"Rates now at version {version.number}, the table of version {number}.")


def _commit(data: Any, expected: int | None) -> None:
    book = app_state().rate_book
    before = book.current().number
    try:
        version = book.commit(data, expected=expected, actor=_actor(), source=SOURCE)
    except RateTableError as error:
        raise click.ClickException(_errors(error)) from None
    except StaleVersionError as error:
        raise click.ClickException(f"The rates are at version {error.current}, not {expected}.") from None
    if version.number == before:
        click.echo(f"Nothing changed: the rates stay at version {version.number}.")
        return
    click.echo(f"Rates now at version {version.number}:")
    for change in version.changes:
        click.echo(f"    {change.path}: {_shown(change.old)} -> {_shown(change.new)}")


def _actor() -> str:
    """The local user, as the rate history's actor (``USER@HOST`` where the host is known)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    host = os.uname().nodename if hasattr(os, "uname") else ""
    return f"{user}@{host}" if host else user


def _changes(fields: Sequence[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs as the entry's fields; ``duration_bonus.cap=0.5`` for a nested one."""
    changes: dict[str, Any] = {}
    for field in fields:
        name, equals, text = field.partition("=")
        if not equals or not name:
            raise click.UsageError(f"Give each field as NAME=VALUE, not {field!r}.")
        target = changes
        *parents, last = name.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[last] = _value(text)
    return changes


def _value(text: str) -> Any:
    """A number as exact as it was typed (an int stays an int); anything else as text, for the
    rate table's own validation to name."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return Decimal(text)
    except InvalidOperation:
        return text


def _errors(error: RateTableError) -> str:
    return "\n  ".join(["The rate table was refused; nothing changed:", *error.lines])


def _made(version: RateVersion) -> str:
    when = "" if version.created_at is None else version.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [version.source, f"by {version.actor}" if version.actor else "", when]
    if version.rolled_back_from is not None:
        parts.append(f"back to version {version.rolled_back_from}")
    return ", ".join(part for part in parts if part)


def _entries(table: Mapping[str, Any], prefix: str = "") -> list[str]:
    lines = []
    for name, value in table.items():
        if isinstance(value, Mapping) and not {"input", "output", "base"} <= set(value):
            lines += _entries(value, f"{prefix}{name}/")
        else:
            lines.append(f"  {prefix}{name}: {_shown(value)}")
    return lines


def _shown(value: Any, *, nested: bool = True) -> str:
    if isinstance(value, Mapping):
        inner = ", ".join(f"{name}={_shown(inner, nested=False)}" for name, inner in value.items())
        return inner if nested else f"({inner})"
    return "-" if value is None else str(value)
