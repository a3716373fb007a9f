"""The admin's HTML pages for the rates: a form with their history, and the sign-in (the
dashboard is :mod:`.dashboard`).

Plain forms, no JavaScript: each post carries a CSRF token and the version it was based on,
and answers with a redirect (saved), ``422`` (the same form, each error by its field) or
``412`` (another edit came first).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response

from ..rates import RateTableError
from ..versions import RateVersion, StaleVersionError, UnknownVersionError
from .auth import actor, app_state, check_csrf, csrf_token, forget_sign_in, remember_sign_in, token_matches

pages = Blueprint("pages", __name__)

#: Separates the parts of a form field's name: ``vllm|chat/completions|input``.
SEP = "|"
AMOUNTS = ("input", "output", "base")
BONUS = ("threshold_ms", "per_ms", "cap")


@dataclass(frozen=True, slots=True)
class RateRow:
    """One line of the rates form: an entry's label and the names of its fields."""

    label: str
    key: str
    fields: tuple[str, ...]
    extras: tuple[str, ...] = ()


@pages.get("/rates")
def rates() -> str:
    version = app_state().rate_book.refresh()
    return _rates_page(version, values=_form_values(version.table.to_dict()))


@pages.post("/rates")
def save_rates() -> Response | tuple[str, int]:
    check_csrf()
    version = app_state().rate_book.refresh()
    table = version.table.to_dict()
    for name, value in request.form.items():
        if SEP in name:
            _set(table, name.split(SEP), value)
    return _commit(table, values=dict(request.form), source_text=None)


@pages.post("/rates/json")
def save_rates_json() -> Response | tuple[str, int]:
    check_csrf()
    text = request.form.get("table", "")
    try:
        table = json.loads(text, parse_float=Decimal)
    except ValueError as error:
        version = app_state().rate_book.refresh()
        page = _rates_page(
            version,
            values=_form_values(version.table.to_dict()),
            problems=[f"The table is not JSON: {error}."],
            source_text=text,
        )
        return page, 422
    return _commit(table, values=None, source_text=text)


@pages.post("/rates/rollback")
def rollback() -> Response | tuple[str, int]:
    check_csrf()
    book = app_state().rate_book
    try:
        number = int(request.form.get("rollback_to", ""))
        version = book.rollback(number, actor=actor(), request_id=request.headers.get("X-Request-ID"))
    except (ValueError, UnknownVersionError):
        current = book.refresh()
        page = _rates_page(current, values=_form_values(current.table.to_dict()), problems=["No such version."])
        return page, 422
    return redirect(url_for(".rates", saved=version.number), 303)


@pages.post("/sign-in")
def sign_in() -> Response | tuple[str, int]:
    check_csrf()
    if not token_matches(request.form.get("token", "")):
        page = render_template(
            "earnings/sign_in.html", message="That is not the admin token.", can_sign_in=True, csrf_token=csrf_token()
        )
        return page, 401
    remember_sign_in()
    return redirect(url_for("earnings.dashboard.overview"), 303)


@pages.post("/sign-out")
def sign_out() -> Response:
    check_csrf()
    forget_sign_in()
    return redirect(url_for("earnings.dashboard.overview"), 303)


def _commit(table: Any, *, values: Mapping[str, str] | None, source_text: str | None) -> Response | tuple[str, int]:
    book = app_state().rate_book
    try:
        expected = int(request.form.get("version", ""))
    except ValueError:
        raise BadRequest("The form does not say which version it was based on.") from None
    try:
        version = book.commit(
            table, expected=expected, actor=actor(), request_id=request.headers.get("X-Request-ID"), source="admin"
        )
    except RateTableError as error:
        current = book.refresh()
        fields = _field_errors(error.messages)
        elsewhere = [  # errors of fields the form does not show (or of a table sent as JSON)
            f"{name.replace(SEP, '.')}: {message}"
            for name, messages in fields.items()
            if values is None or name not in values
            for message in messages
        ]
        page = _rates_page(
            current,
            values=values if values is not None else _form_values(current.table.to_dict()),
            errors=fields,
            problems=elsewhere,
            source_text=source_text,
        )
        return page, 422
    except StaleVersionError as error:
        current = book.refresh()
        problem = f"Not saved: the rates changed meanwhile (now version {error.current}). Here they are; edit again."
        page = _rates_page(current, values=_form_values(current.table.to_dict()), problems=[problem])
        return page, 412
    return redirect(url_for(".rates", saved=version.number), 303)


def _rates_page(
    version: RateVersion,
    *,
    values: Mapping[str, str],
    errors: Mapping[str, list[str]] | None = None,
    problems: list[str] | None = None,
    source_text: str | None = None,
) -> str:
    table = version.table.to_dict()
    return render_template(
        "earnings/rates.html",
        version=version,
        rows=_rows(table),
        values=values,
        errors=errors or {},
        problems=problems or [],
        table_json=source_text if source_text is not None else json.dumps(table, indent=2),
        history=app_state().rate_book.history(limit=50),
        saved=request.args.get("saved", type=int),
        csrf_token=csrf_token(),
        actor=actor(),
        sep=SEP,
    )


def _rows(table: Mapping[str, Any]) -> list[RateRow]:
    rows = []
    for framework, entries in table.items():
        if framework in ("default", "duration_bonus"):
            continue
        for task_type, entry in entries.items():
            rows.append(
                RateRow(f"{framework} / {task_type}", SEP.join((framework, task_type)), AMOUNTS, _extras(entry))
            )
    rows.append(RateRow("default (any other)", "default", AMOUNTS, _extras(table["default"])))
    rows.append(RateRow("duration bonus", "duration_bonus", BONUS))
    return rows


def _extras(entry: Mapping[str, Any]) -> tuple[str, ...]:
    """What an entry holds beyond the form's fields, shown as it is (edit it as JSON)."""
    extras = []
    if "duration_bonus" in entry:
        extras.append("own duration bonus")
    extras += [f"model {name}" for name in entry.get("models", {})]
    return tuple(extras)


def _form_values(table: Mapping[str, Any]) -> dict[str, str]:
    values = {}
    for row in _rows(table):
        entry = _get(table, row.key.split(SEP))
        for field in row.fields:
            values[f"{row.key}{SEP}{field}"] = str(entry[field])
    return values


def _get(table: Mapping[str, Any], path: list[str]) -> Any:
    node: Any = table
    for part in path:
        node = node[part]
    return node


def _set(table: dict[str, Any], path: list[str], value: str) -> None:
    node = table
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            return  # a field this table does not have: ignored
        node = child
    # A whole number of milliseconds is sent as one; anything else goes to the schema as typed.
    node[path[-1]] = int(value) if path[-1] == "threshold_ms" and value.strip().isdigit() else value


def _field_errors(messages: Any, path: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """marshmallow's nested errors, keyed by the form field they belong to."""
    if isinstance(messages, Mapping):
        found: dict[str, list[str]] = {}
        for key, value in messages.items():
            found.update(_field_errors(value, (*path, str(key))))
        return found
    return {SEP.join(path): [str(message) for message in messages] if isinstance(messages, list) else [str(messages)]}
