"""The gateway's extensions, created once and registered by ``create_app``."""

from __future__ import annotations

from flask_earnings import Earnings

earnings = Earnings()
