"""The admin is never open by default, and nothing in it answers 2xx without valid credentials."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from .conftest import MakeApp

TOKEN = "s3cret-admin-token-0123456789"
SAMPLE_VALUES = {"entry": "vllm/chat/completions", "number": "1", "task_id": "no-such-task"}


def admin_requests(app: Flask) -> list[tuple[str, str]]:
    """Every (method, URL) of the admin blueprint but its static files."""
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("earnings.") or rule.endpoint == "earnings.static":
            continue
        url = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda match: SAMPLE_VALUES[match.group(1)], rule.rule)
        found += [(method, url) for method in sorted(rule.methods or ()) if method not in ("HEAD", "OPTIONS")]
    return found


def send(app: Flask, method: str, url: str, headers: dict[str, str] | None = None) -> TestResponse:
    body: dict[str, Any] = {"version": 1} if method != "GET" else {}
    return app.test_client().open(
        url, method=method, json=body if method != "GET" else None, headers={"If-Match": '"1"', **(headers or {})}
    )


def closed_app(make_app: MakeApp) -> Flask:
    app, _ = make_app(config={"SECRET_KEY": "k"})
    return app


def token_app(make_app: MakeApp) -> Flask:
    app, _ = make_app(admin_token=TOKEN, config={"SECRET_KEY": "k"})
    return app


def callback_app(answer: str | None) -> Callable[[MakeApp], Flask]:
    def make(make_app: MakeApp) -> Flask:
        app, earnings = make_app(config={"SECRET_KEY": "k"})
        earnings.admin_auth(lambda: answer)
        return app

    return make


SCENARIOS: dict[str, tuple[Callable[[MakeApp], Flask], dict[str, str], bool]] = {
    # name: (app, request headers, let in?)
    "nothing configured": (closed_app, {}, False),
    "nothing configured, a token sent": (closed_app, {"Authorization": f"Bearer {TOKEN}"}, False),
    "no credentials": (token_app, {}, False),
    "wrong token": (token_app, {"Authorization": "Bearer not-the-admin-token-at-all"}, False),
    "right token": (token_app, {"Authorization": f"Bearer {TOKEN}"}, True),
    "callback refusing": (callback_app(None), {"Authorization": f"Bearer {TOKEN}"}, False),
    "callback accepting": (callback_app("alice"), {}, True),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_admin_route_and_method_needs_valid_credentials(make_app: MakeApp, scenario: str) -> None:
    build, headers, let_in = SCENARIOS[scenario]
    app = build(make_app)
    routes = admin_requests(app)
    assert len(routes) >= 14  # the pages, the sign-in and the whole JSON API

    for method, url in routes:
        status = send(app, method, url, headers).status_code
        if let_in:
            assert status not in (401, 403), (method, url, status)
        else:
            assert not 200 <= status < 300, (method, url, status)
            assert status in (400, 401, 403), (method, url, status)


def test_with_nothing_configured_the_admin_answers_403_and_says_why(make_app: MakeApp) -> None:
    app = closed_app(make_app)

    api = app.test_client().get("/earnings/api/rates")
    page = app.test_client().get("/earnings/")

    assert api.status_code == page.status_code == 403
    assert "EARNINGS_ADMIN_TOKEN" in api.json["message"]
    assert b"EARNINGS_ADMIN_TOKEN" in page.data


def test_a_missing_token_asks_for_bearer_credentials(make_app: MakeApp) -> None:
    response = token_app(make_app).test_client().get("/earnings/api/rates")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="earnings"'


def test_the_callback_names_the_actor(make_app: MakeApp) -> None:
    app = callback_app("alice@example.org")(make_app)
    client = app.test_client()
    current = client.get("/earnings/api/rates").json

    table = current["table"]
    table["vllm"]["embeddings"]["base"] = "0.009"
    changed = client.put("/earnings/api/rates", json=table, headers={"If-Match": '"1"', "X-Request-ID": "req-7"})

    assert changed.status_code == 200
    assert (changed.json["actor"], changed.json["request_id"]) == ("alice@example.org", "req-7")


def test_a_raising_callback_refuses(make_app: MakeApp, caplog: pytest.LogCaptureFixture) -> None:
    app, earnings = make_app()

    @earnings.admin_auth
    def broken() -> str:
        raise LookupError("no user store")

    assert app.test_client().get("/earnings/api/rates").status_code == 401
    assert "admin_auth callback raised" in caplog.text


def csrf_of(page: bytes) -> str:
    match = re.search(rb'name="csrf_token" value="([^"]+)"', page)
    assert match is not None
    return match.group(1).decode()


def test_the_pages_sign_in_with_the_token_and_out_again(make_app: MakeApp) -> None:
    client = token_app(make_app).test_client()

    prompt = client.get("/earnings/rates")
    csrf = csrf_of(prompt.data)
    wrong = client.post("/earnings/sign-in", data={"token": "guess-guess-guess-guess", "csrf_token": csrf})
    forged = client.post("/earnings/sign-in", data={"token": TOKEN, "csrf_token": "forged"})
    signed_in = client.post("/earnings/sign-in", data={"token": TOKEN, "csrf_token": csrf_of(prompt.data)})
    cookie = client.get_cookie("session")
    rates = client.get("/earnings/rates")
    signed_out = client.post("/earnings/sign-out", data={"csrf_token": csrf_of(rates.data)})
    after = client.get("/earnings/rates")

    assert prompt.status_code == 401 and b'name="token"' in prompt.data
    assert wrong.status_code == 401
    assert forged.status_code == 400
    assert signed_in.status_code == 303
    assert rates.status_code == 200 and b"version 1" in rates.data
    assert signed_out.status_code == 303
    assert after.status_code == 401
    assert cookie is not None and TOKEN not in cookie.decoded_value  # the session keeps a fingerprint only


def test_form_posts_need_their_csrf_token(make_app: MakeApp) -> None:
    client = token_app(make_app).test_client()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    page = client.get("/earnings/rates", headers=headers)

    without = client.post("/earnings/rates/rollback", data={"rollback_to": "1"}, headers=headers)
    with_token = client.post(
        "/earnings/rates/rollback", data={"rollback_to": "1", "csrf_token": csrf_of(page.data)}, headers=headers
    )

    assert without.status_code == 400
    assert with_token.status_code == 303


def test_api_writes_must_be_json(make_app: MakeApp) -> None:
    client = token_app(make_app).test_client()
    headers = {"Authorization": f"Bearer {TOKEN}", "If-Match": '"1"'}

    response = client.post("/earnings/api/rates/rollback", data="version=1", headers=headers)

    assert response.status_code == 415


def test_the_admin_can_be_switched_off(make_app: MakeApp) -> None:
    app, _ = make_app(admin_url_prefix=None, admin_token=TOKEN)

    assert app.test_client().get("/earnings/api/rates").status_code == 404
    assert not any(rule.endpoint.startswith("earnings.") for rule in app.url_map.iter_rules())


def test_the_admin_can_live_elsewhere(make_app: MakeApp) -> None:
    app, _ = make_app(admin_url_prefix="/ops/money", admin_token=TOKEN)

    response = app.test_client().get("/ops/money/api/rates", headers={"Authorization": f"Bearer {TOKEN}"})

    assert response.status_code == 200
    with app.test_client().get("/ops/money/static/admin.css") as stylesheet:
        assert stylesheet.status_code == 200
