"""Whatever an edit holds, the admin never fails with a 500, and a rejected edit changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import MakeApp

TOKEN = "s3cret-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

EDGE_CASES = [
    *("0.001", "0", "-1", "-0", "NaN", "nan", "Infinity", "-Infinity", "sNaN", "1e999999", "1e-999999"),
    *("0.000000000000000001", "0.0000000000000000001", "999999999", "1000000001", "1_000", " 0.1 ", "", "abc"),
]
valid_amounts = st.one_of(
    st.decimals(min_value=0, max_value=1000, places=6).map(str), st.integers(min_value=0, max_value=1000)
)
amounts = st.one_of(
    valid_amounts,
    st.sampled_from(EDGE_CASES),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.floats(allow_nan=True, allow_infinity=True),  # JSON floats, NaN and Infinity literals included
    st.integers(min_value=-(10**30), max_value=10**30),
    st.booleans(),
    st.none(),
    st.text(max_size=6),
    st.lists(st.integers(), max_size=2),
)
bonus = st.fixed_dictionaries(
    {"threshold_ms": st.one_of(st.integers(-5, 10**10), st.floats(allow_nan=True), st.booleans(), st.text(max_size=4))},
    optional={"per_ms": amounts, "cap": amounts, "extra": amounts},
)
entry = st.fixed_dictionaries(
    {"input": amounts, "output": amounts, "base": amounts},
    optional={
        "duration_bonus": bonus,
        "models": st.dictionaries(
            st.text(max_size=8), st.dictionaries(st.sampled_from(["input", "cap", "x"]), amounts)
        ),
        "discount": amounts,
    },
)
task_types = st.sampled_from(["chat", "generate", "embeddings", "chat/completions", "completions", "chatty", ""])
good_entry = st.fixed_dictionaries({"input": valid_amounts, "output": valid_amounts, "base": valid_amounts})
good_task_types = st.sampled_from(["chat", "generate", "embeddings", "chat/completions", "completions"])
good_tables = st.fixed_dictionaries(
    {},
    optional={
        "ollama": st.dictionaries(good_task_types, good_entry, max_size=3),
        "vllm": st.dictionaries(good_task_types, good_entry, max_size=3),
        "default": good_entry,
    },
)
tables = st.one_of(
    good_tables,  # edits that pass, so that accepting is exercised as much as refusing
    st.fixed_dictionaries(
        {},
        optional={
            "ollama": st.dictionaries(task_types, entry, max_size=3),
            "vllm": st.dictionaries(task_types, entry, max_size=3),
            "olama": st.dictionaries(task_types, entry, max_size=1),
            "default": entry,
            "duration_bonus": bonus,
        },
    ),
    st.lists(st.integers(), max_size=2),
    st.integers(),
    st.text(max_size=5),
    st.none(),
)
patch_paths = st.sampled_from(
    ["vllm/embeddings", "ollama/chat", "vllm/chat", "default", "duration_bonus", "sglang/chat", "vllm/chatty", "vllm"]
)
patch_bodies = st.one_of(
    st.dictionaries(st.sampled_from(["input", "output", "base"]), valid_amounts),
    st.dictionaries(
        st.sampled_from(["input", "output", "base", "threshold_ms", "per_ms", "cap", "models", "x"]), amounts
    ),
    st.lists(amounts, max_size=2),
    amounts,
)


def current(client: Any) -> tuple[int, dict[str, Any]]:
    response = client.get("/earnings/api/rates", headers=AUTH)
    assert response.status_code == 200
    return response.json["version"], response.json["table"]


def send(client: Any, method: str, path: str, body: Any, version: int) -> int:
    response = client.open(
        "/earnings/api" + path,
        method=method,
        data=json.dumps(body),  # NaN and Infinity go out as JSON literals, as a careless client sends them
        headers={**AUTH, "If-Match": f'"{version}"', "Content-Type": "application/json"},
    )
    status: int = response.status_code
    return status


def check(client: Any, status: int, before: tuple[int, dict[str, Any]]) -> None:
    assert status in (200, 422), status
    after = current(client)
    if status == 422:
        assert after == before  # a rejection stores nothing
    else:
        assert after[0] in (before[0], before[0] + 1)


@pytest.fixture
def admin_app(make_app: MakeApp) -> Flask:
    app, _ = make_app(admin_token=TOKEN)
    return app


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=tables)
def test_put_never_fails_and_a_rejection_changes_nothing(admin_app: Flask, table: Any) -> None:
    client = admin_app.test_client()
    before = current(client)

    check(client, send(client, "PUT", "/rates", table, before[0]), before)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=patch_paths, body=patch_bodies)
def test_patch_never_fails_and_a_rejection_changes_nothing(admin_app: Flask, path: str, body: Any) -> None:
    client = admin_app.test_client()
    before = current(client)

    check(client, send(client, "PATCH", f"/rates/{path}", body, before[0]), before)
