"""``GET <admin prefix>/metrics``: the Prometheus exposition, behind the admin's sign-in.

The route exists only on an app with ``EARNINGS_METRICS`` on; elsewhere the path is not
found, whoever asks. A scraper signs in as any admin client does, with
``Authorization: Bearer <EARNINGS_ADMIN_TOKEN>`` (or the app's ``@earnings.admin_auth``).
"""

from __future__ import annotations

from flask import Blueprint, Response
from flask.blueprints import BlueprintSetupState

metrics = Blueprint("metrics", __name__)


@metrics.record
def _add_route(state: BlueprintSetupState) -> None:
    """Serve the route on the apps that asked for metrics (the blueprint is shared by all)."""
    if state.app.extensions["earnings"].options.metrics:
        state.add_url_rule("/metrics", "scrape", scrape, methods=["GET"])


def scrape() -> Response:
    from ..metrics import exposition  # prometheus_client: only on the apps with metrics

    body, content_type = exposition()
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})
