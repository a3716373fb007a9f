"""Earnings over time as bars, laid out here and drawn by the template as inline SVG.

Server-side, so the dashboard needs no JavaScript and nothing from a CDN. The amounts stay
Decimal; only the pixel geometry is float.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from ..money import ZERO, format_money

WIDTH, HEIGHT = 800, 240
#: Room for the axis labels: left, bottom.
LEFT, BOTTOM, TOP = 90, 28, 10
#: Ticks on the earnings axis, besides zero.
TICKS = 4
#: More buckets than this and an hourly chart falls back to days.
MAX_BARS = 400

_STEPS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
_FORMATS = {"hour": "%Y-%m-%dT%H:00Z", "day": "%Y-%m-%d"}


@dataclass(frozen=True, slots=True)
class Bar:
    bucket: str
    #: The bucket as the axis shows it (``12-04 10:00`` for an hour).
    label: str
    earnings: Decimal
    tasks: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class Tick:
    label: str
    y: float


@dataclass(frozen=True, slots=True)
class Chart:
    unit: str
    bars: list[Bar]
    ticks: list[Tick]
    #: Buckets labelled under the axis (a few, evenly spaced).
    labels: list[Bar]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom: float = HEIGHT - BOTTOM


def buckets_between(first: str, last: str, unit: str) -> list[str]:
    """Every bucket from ``first`` to ``last``, so that a quiet hour shows as an empty bar."""
    start, end = _parse(first, unit), _parse(last, unit)
    found: list[str] = []
    while start <= end and len(found) <= MAX_BARS:
        found.append(start.strftime(_FORMATS[unit]))
        start += _STEPS[unit]
    return found


def earnings_chart(unit: str, by_bucket: Mapping[str, tuple[Decimal, int]]) -> Chart:
    """Bars of earnings for each bucket from the first to the last that has tasks."""
    keys = sorted(by_bucket)
    buckets = buckets_between(keys[0], keys[-1], unit) if keys else []
    top = _nice_ceiling(max((by_bucket[key][0] for key in keys), default=ZERO))
    plot_width, plot_height = WIDTH - LEFT, HEIGHT - BOTTOM - TOP
    slot = plot_width / max(len(buckets), 1)
    bars = []
    for index, bucket in enumerate(buckets):
        earned, tasks = by_bucket.get(bucket, (ZERO, 0))
        height = float(earned / top) * plot_height if top else 0.0
        bars.append(
            Bar(
                bucket=bucket,
                label=bucket if unit == "day" else f"{bucket[5:10]} {bucket[11:16]}",
                earnings=earned,
                tasks=tasks,
                x=LEFT + index * slot + slot * 0.1,
                y=TOP + plot_height - height,
                width=slot * 0.8,
                height=height,
            )
        )
    ticks = [
        Tick(format_money(top * step / TICKS), TOP + plot_height * (1 - step / TICKS)) for step in range(TICKS + 1)
    ]
    every = max(1, len(bars) // 6)
    return Chart(unit=unit, bars=bars, ticks=ticks, labels=bars[::every])


def _parse(bucket: str, unit: str) -> datetime:
    return datetime.strptime(bucket, _FORMATS[unit])


def _nice_ceiling(amount: Decimal) -> Decimal:
    """A round top for the axis (1, 2 or 5 times a power of ten) at or above ``amount``."""
    if amount <= 0:
        return Decimal(1)
    power = Decimal(10) ** (amount.adjusted())
    for step in (1, 2, 5, 10):
        if amount <= power * step:
            return power * step
    return power * 10
