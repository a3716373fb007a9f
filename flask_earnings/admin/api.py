"""The admin's JSON API: rates with versions and history, and the task records.

Rate edits are optimistic: ``PUT`` and ``PATCH`` need ``If-Match`` with the version they
were based on (``428`` without it, ``412`` when another edit came first). A rejected edit
answers ``422`` with the errors by field and stores nothing. Money travels as strings.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from ..queries import TASK_FILTERS, TaskQuery, list_tasks
from ..rates import RateTableError
from ..reports import FILTERS, ReportError, ReportQuery, summary
from ..versions import RateVersion, StaleVersionError, UnknownVersionError, with_entry
from .auth import actor, app_state

api = Blueprint("api", __name__)

MAX_PAGE = 500


class ApiError(HTTPException):
    """An error answered as ``{"message": ..., "errors": ...}``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = status
        self.extra = extra

    def get_response(self, environ: Any = None, scope: Any = None) -> Response:
        response = jsonify({"message": self.description, **self.extra})
        response.status_code = self.code or 500
        return response


# Rates.


@api.get("/rates")
def get_rates() -> Response:
    return _version_response(app_state().rate_book.refresh())


@api.put("/rates")
def put_rates() -> Response:
    expected = _if_match()
    return _commit(_json_body(), expected)


@api.patch("/rates/<path:entry>")
def patch_rate(entry: str) -> Response:
    """Change one entry: ``<framework>/<task_type>``, ``default`` or ``duration_bonus``.

    The body's fields replace the entry's (a new entry needs them all).
    """
    expected = _if_match()
    changes = _json_body()
    if not isinstance(changes, dict):
        raise ApiError(422, "Invalid rate table", errors={entry: ["Must be an object."]})
    return _commit(with_entry(app_state().rate_book.refresh().table.to_dict(), entry, changes), expected)


@api.get("/rates/versions")
def rate_versions() -> Response:
    limit, offset = _page()
    history = app_state().rate_book.history(limit=limit, offset=offset)
    return jsonify({"versions": [version.to_dict(with_table=False) for version in history]})


@api.get("/rates/versions/<int:number>")
def rate_version(number: int) -> Response:
    try:
        return jsonify(app_state().rate_book.version(number).to_dict())
    except UnknownVersionError as error:
        raise ApiError(404, str(error)) from None


@api.post("/rates/rollback")
def rollback() -> Response:
    body = _json_body()
    number = body.get("version") if isinstance(body, dict) else None
    if not isinstance(number, int) or isinstance(number, bool):
        raise ApiError(422, "Say which version to go back to", errors={"version": ["Must be a version number."]})
    expected = _if_match(required=False)
    try:
        version = app_state().rate_book.rollback(
            number, actor=actor(), request_id=request.headers.get("X-Request-ID"), expected=expected
        )
    except UnknownVersionError as error:
        raise ApiError(422, str(error), errors={"version": [str(error)]}) from None
    except StaleVersionError as error:
        raise ApiError(412, str(error), current_version=error.current) from None
    return _version_response(version)


def _commit(data: Any, expected: int | None) -> Response:
    try:
        version = app_state().rate_book.commit(
            data, expected=expected, actor=actor(), request_id=request.headers.get("X-Request-ID"), source="admin"
        )
    except RateTableError as error:
        raise ApiError(422, "Invalid rate table", errors=error.messages) from None
    except StaleVersionError as error:
        raise ApiError(
            412, f"The rates changed meanwhile: they are at version {error.current}.", current_version=error.current
        ) from None
    return _version_response(version)


def _version_response(version: RateVersion) -> Response:
    response = jsonify(version.to_dict())
    response.set_etag(str(version.number))
    return response


def _if_match(*, required: bool = True) -> int | None:
    """The version an edit was based on, from ``If-Match: "<version>"``."""
    tags = request.if_match
    if not tags and not tags.star_tag:
        if required:
            raise ApiError(
                428, 'Send If-Match with the version the edit is based on (the ETag of GET rates, e.g. "3").'
            )
        return None
    values = tags.as_set()
    if tags.star_tag or len(values) != 1 or not next(iter(values)).isdigit():
        raise ApiError(412, 'If-Match must name one version, e.g. "3".')
    return int(next(iter(values)))


def _json_body() -> Any:
    if request.mimetype != "application/json":
        raise ApiError(415, "Send the body as application/json.")
    try:
        # Numbers become exact decimals; NaN and Infinity are left for the schema to name.
        return json.loads(request.get_data(), parse_float=Decimal)
    except ValueError as error:
        raise ApiError(400, f"The body is not JSON: {error}.") from None


# Reports.


@api.get("/report")
def report() -> Response:
    """``?group_by=day&group_by=framework&since=...&until=...&client=alice``: the summary."""
    try:
        query = ReportQuery(
            group_by=tuple(request.args.getlist("group_by")),
            since=_moment("since"),
            until=_moment("until"),
            filters={name: request.args[name] for name in FILTERS if name in request.args},
        )
    except ReportError as error:
        raise ApiError(400, str(error)) from None
    return jsonify(summary(app_state().store, query).to_dict())


# Tasks.


@api.get("/tasks")
def tasks() -> Response:
    limit, offset = _page()
    query = TaskQuery(
        filters={name: request.args[name] for name in TASK_FILTERS if name in request.args},
        since=_moment("since"),
        until=_moment("until"),
        limit=limit,
        offset=offset,
    )
    found = list_tasks(app_state().store, query)
    return jsonify(
        {
            "tasks": [task.to_dict() for task in found],
            "limit": limit,
            "offset": offset,
            "next_offset": offset + limit if len(found) == limit else None,
        }
    )


@api.get("/tasks/<task_id>")
def task(task_id: str) -> Response:
    found = app_state().store.load_task(task_id)
    if found is None:
        raise ApiError(404, f"There is no task {task_id!r}.")
    return jsonify(found.to_dict())


def _page() -> tuple[int, int]:
    try:
        limit = int(request.args.get("limit", 50))
        offset = int(request.args.get("offset", 0))
    except ValueError:
        raise ApiError(400, "limit and offset must be whole numbers.") from None
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise ApiError(400, f"limit must be between 1 and {MAX_PAGE}, offset 0 or more.")
    return limit, offset


def _moment(name: str) -> datetime | None:
    value = request.args.get(name)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"{name} must be an ISO 8601 time, e.g. 2026-12-04T10:00:00Z.") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
