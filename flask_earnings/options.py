"""Every option, in one place: a constructor argument and an ``EARNINGS_*`` config key each.

The argument wins over the key. ``docs/configuration.md`` documents every option.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from flask import Flask

from .schemas import FRAMEWORK_NAME, RESERVED_NAMES

DeviceId = str | Callable[[], str | None] | None


@dataclass(frozen=True, slots=True)
class Options:
    #: Track inference calls at all.
    enabled: bool = True
    #: The engine behind the OpenAI-compatible paths; ``None`` reads the
    #: ``MODEL_INFERENCE_FRAMEWORK`` environment variable, then falls back to ``vllm``.
    framework: str | None = None
    #: This node's id, or a function returning it (called once per task).
    device_id: DeviceId = None
    #: A function naming the caller of the current request (called once per task, in it).
    client: Callable[[], str | None] | None = None
    #: The rate table: a mapping in its JSON shape, or the path of a JSON file. ``None``: the defaults.
    rates: Mapping[str, Any] | str | os.PathLike[str] | None = None
    #: Extra tracked paths, ``{path: {"protocol", "task_type", "framework"}}``; ``None`` removes a path.
    endpoints: Mapping[str, Any] | None = None
    #: Response header that carries the task id back; ``None`` sends none.
    task_id_header: str | None = "X-Earnings-Task-Id"
    #: What a task cancelled mid-stream earns: ``"partial"`` (its tokens until then) or ``"none"``.
    cancelled_policy: str = "partial"
    #: Level of the ``flask_earnings`` logger; ``None`` leaves it to the app's logging setup.
    log_level: str | int | None = None
    #: Database of the task records when no ``db`` is given; ``None``: ``earnings.sqlite3``
    #: in the app's instance folder.
    database_uri: str | None = None
    #: Seconds between two checks for a rate version made by another process.
    rates_refresh_interval: float = 1.0
    #: Where the admin blueprint (pages and JSON API) is served; ``None`` serves none.
    admin_url_prefix: str | None = "/earnings"
    #: Bearer token that opens the admin (``Authorization: Bearer ...``, or the sign-in page).
    #: With neither a token nor an ``@earnings.admin_auth`` callback the admin answers 403.
    admin_token: str | None = None
    #: Most records the background writer stores in one transaction.
    batch_size: int = 2000
    #: Most tasks waiting for the writer; past it a request stores its own task in the spool.
    queue_size: int = 10_000
    #: Folder of the spool and the journal (per process files); ``None``: ``earnings-spool`` in
    #: the instance folder. Keep it on a local disk of the host.
    spool_dir: str | os.PathLike[str] | None = None
    #: Seconds the writer waits to gather a batch before it writes.
    flush_interval: float = 0.5
    #: Export Prometheus metrics (needs the ``prometheus`` extra) at ``<admin prefix>/metrics``.
    metrics: bool = False


OPTION_NAMES = tuple(option.name for option in fields(Options))


def config_key(name: str) -> str:
    return "EARNINGS_" + name.upper()


def check_option_names(names: Mapping[str, Any]) -> None:
    unknown = sorted(set(names) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(f"Unknown Earnings option(s): {', '.join(unknown)}. Known: {', '.join(OPTION_NAMES)}.")


def resolve_options(app: Flask, arguments: Mapping[str, Any]) -> Options:
    """Read each ``EARNINGS_*`` key once (set to its default when absent); arguments win."""
    defaults = Options()
    values: dict[str, Any] = {}
    for name in OPTION_NAMES:
        key = config_key(name)
        app.config.setdefault(key, getattr(defaults, name))
        values[name] = arguments[name] if name in arguments else app.config[key]
    if values["framework"] is None:
        values["framework"] = os.environ.get("MODEL_INFERENCE_FRAMEWORK") or "vllm"
    _validate(values)
    return Options(**values)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_positive_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


#: What each option's value must be. Config comes from anywhere (files, the environment),
#: so every value is checked before the extension uses it.
_CHECKS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("enabled", lambda value: isinstance(value, bool), "True or False"),
    ("metrics", lambda value: isinstance(value, bool), "True or False"),
    (
        "framework",
        lambda value: isinstance(value, str) and re.match(FRAMEWORK_NAME, value) is not None,
        "a lower-case framework name such as 'ollama' or 'vllm'",
    ),
    ("framework", lambda value: value not in RESERVED_NAMES, "a framework name (not a reserved key of the rate table)"),
    (
        "device_id",
        lambda value: value is None or isinstance(value, str) or callable(value),
        "a string or a function returning one",
    ),
    ("client", lambda value: value is None or callable(value), "a function returning the caller's name"),
    (
        "rates",
        lambda value: value is None or isinstance(value, (Mapping, str, os.PathLike)),
        "a mapping or the path of a JSON file",
    ),
    ("endpoints", lambda value: value is None or isinstance(value, Mapping), "a mapping of paths to rules"),
    ("task_id_header", lambda value: value is None or isinstance(value, str), "a header name or None"),
    ("cancelled_policy", lambda value: value in ("partial", "none"), "'partial' or 'none'"),
    ("log_level", lambda value: value is None or isinstance(value, (str, int)), "a logging level name or number"),
    ("database_uri", lambda value: value is None or isinstance(value, str), "a database URL"),
    ("batch_size", lambda value: _is_positive_whole(value), "a positive whole number"),
    ("queue_size", lambda value: _is_positive_whole(value), "a positive whole number"),
    ("spool_dir", lambda value: value is None or isinstance(value, (str, os.PathLike)), "None or a folder"),
    ("flush_interval", lambda value: _is_number(value) and 0 < value <= 60, "a number of seconds between 0 and 60"),
    (
        "rates_refresh_interval",
        lambda value: _is_number(value) and 0 < value <= 60,
        "a number of seconds between 0 and 60",
    ),
    (
        "admin_url_prefix",
        lambda value: value is None or (isinstance(value, str) and value.startswith("/") and not value.endswith("/")),
        "None or a path such as '/earnings'",
    ),
    (
        "admin_token",
        lambda value: value is None or (isinstance(value, str) and len(value) >= 16),
        "None or a secret of at least 16 characters",
    ),
)


def _validate(values: Mapping[str, Any]) -> None:
    for name, valid, expected in _CHECKS:
        if not valid(values[name]):
            raise TypeError(f"{config_key(name)} must be {expected}, not {values[name]!r}.")
