"""Who may use the admin: nobody by default; then a bearer token, or the app's own callback.

``EARNINGS_ADMIN_TOKEN`` opens it to ``Authorization: Bearer <token>`` (compared in
constant time) and to the sign-in page, which keeps a fingerprint of the token in the signed
session. ``@earnings.admin_auth`` lets the app decide (Flask-Login's ``current_user``, its
own users). Every form post carries a CSRF token kept in the session; API writes must be
JSON, which a cross-site form cannot send.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import TYPE_CHECKING

from flask import Response, current_app, g, jsonify, render_template, request, session
from werkzeug.exceptions import BadRequest

if TYPE_CHECKING:
    from ..extension import _AppState

logger = logging.getLogger("flask_earnings")

SESSION_KEY = "flask_earnings.admin"
CSRF_KEY = "flask_earnings.csrf"
TOKEN_ACTOR = "token"
SIGN_IN_ENDPOINT = "earnings.pages.sign_in"


def app_state() -> _AppState:
    state: _AppState = current_app.extensions["earnings"]
    return state


def actor() -> str:
    """Who is acting in this admin request (checked by :func:`authorise`)."""
    name: str = g.earnings_actor
    return name


def authorise() -> Response | None:
    """``before_request`` of the admin: let in the right people, answer everyone else."""
    if request.endpoint == "earnings.static":
        return None
    state = app_state()
    token, callback = state.options.admin_token, state.extension._admin_auth
    if token is None and callback is None:
        return refuse(
            403,
            "The earnings admin is closed: set EARNINGS_ADMIN_TOKEN or register an @earnings.admin_auth callback.",
        )
    name = _from_callback() or _from_token(token)
    if name is not None:
        g.earnings_actor = name
        return None
    if request.endpoint == SIGN_IN_ENDPOINT and request.method == "POST":
        return None  # the sign-in form's own post: it answers for itself, never with a 2xx
    return refuse(401, "Sign in to the earnings admin.")


def refuse(status: int, message: str) -> Response:
    if _is_api():
        response = jsonify({"message": message})
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="earnings"'
    else:
        response = Response(
            render_template(
                "earnings/sign_in.html",
                message=message,
                can_sign_in=status == 401 and app_state().options.admin_token is not None,
                csrf_token=csrf_token(),
            )
        )
    response.status_code = status
    return response


def token_matches(supplied: str) -> bool:
    token = app_state().options.admin_token
    return token is not None and hmac.compare_digest(supplied.encode(), token.encode())


def remember_sign_in() -> None:
    token = app_state().options.admin_token
    assert token is not None
    session[SESSION_KEY] = _fingerprint(token)


def forget_sign_in() -> None:
    session.pop(SESSION_KEY, None)


def csrf_token() -> str | None:
    """The session's CSRF token for forms; ``None`` without a ``SECRET_KEY`` (no forms then)."""
    if not current_app.secret_key:
        return None
    token = session.get(CSRF_KEY)
    if not isinstance(token, str):
        token = session[CSRF_KEY] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    expected = session.get(CSRF_KEY) if current_app.secret_key else None
    supplied = request.form.get("csrf_token", "")
    if not isinstance(expected, str) or not hmac.compare_digest(supplied.encode(), expected.encode()):
        raise BadRequest("The form's CSRF token is missing or out of date: reload the page and try again.")


def _is_api() -> bool:
    """A machine's request (the JSON API, a metrics scrape): refused in JSON, not with a page."""
    return "earnings.api" in request.blueprints or "earnings.metrics" in request.blueprints


def _from_callback() -> str | None:
    callback = app_state().extension._admin_auth
    if callback is None:
        return None
    try:
        name = callback()
    except Exception:
        logger.exception("The @earnings.admin_auth callback raised; access refused")
        return None
    return str(name) if name else None


def _from_token(token: str | None) -> str | None:
    if token is None:
        return None
    authorization = request.authorization
    if authorization is not None and authorization.type == "bearer" and authorization.token:
        return TOKEN_ACTOR if token_matches(authorization.token) else None
    signed = session.get(SESSION_KEY) if current_app.secret_key else None
    if isinstance(signed, str) and hmac.compare_digest(signed.encode(), _fingerprint(token).encode()):
        return TOKEN_ACTOR
    return None


def _fingerprint(token: str) -> str:
    """What the session keeps: not the token, and no longer valid once the token changes."""
    key = current_app.secret_key
    secret = key.encode() if isinstance(key, str) else bytes(key or b"")
    return hmac.new(secret, token.encode(), hashlib.sha256).hexdigest()
