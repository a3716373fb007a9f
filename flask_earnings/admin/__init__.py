"""The admin blueprint: the earnings dashboard, live rate edits with their history, a JSON API.

Registered by ``init_app`` under ``EARNINGS_ADMIN_URL_PREFIX`` (``/earnings``), closed to
everyone until the app configures ``EARNINGS_ADMIN_TOKEN`` or an ``@earnings.admin_auth``
callback. Templates live in ``templates/earnings/`` and static files under the blueprint's
own ``/static`` path, so they cannot collide with the app's.
"""

from __future__ import annotations

from flask import Blueprint

from .api import api
from .auth import authorise
from .dashboard import dashboard
from .metrics import metrics
from .pages import pages

blueprint = Blueprint(
    "earnings",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
blueprint.before_request(authorise)
blueprint.register_blueprint(api, url_prefix="/api")
blueprint.register_blueprint(dashboard)
blueprint.register_blueprint(pages)
blueprint.register_blueprint(metrics)

__all__ = ["blueprint"]
