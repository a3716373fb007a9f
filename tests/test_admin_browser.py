"""The admin pages in a real browser: Debian's Chromium, headless, driven by Playwright."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import MakeApp
from .helpers import serving
from .records import store_tasks, varied_tasks

CHROMIUM = Path(os.environ.get("EARNINGS_TEST_CHROMIUM", "/usr/bin/chromium"))
TOKEN = "s3cret-admin-token-0123456789"
OUTPUT = "vllm|chat/completions|output"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield chromium
        chromium.close()


def api_version(base: str) -> int:
    response = httpx.get(base + "/earnings/api/rates", headers={"Authorization": f"Bearer {TOKEN}"})
    version: int = response.json()["version"]
    return version


def test_sign_in_change_a_rate_see_the_history_and_a_refused_value(browser: Any, make_app: MakeApp) -> None:
    app, _ = make_app(admin_token=TOKEN, config={"SECRET_KEY": "browser-test"})

    with serving(app) as base:
        page = browser.new_page()

        refused = page.goto(base + "/earnings/rates")
        assert refused is not None and refused.status == 401
        page.fill('input[name="token"]', TOKEN)
        page.click("button:has-text('Sign in')")
        assert page.locator("h1").inner_text() == "Overview"

        page.click("nav >> text=Rates")
        assert page.locator("#current-version").inner_text() == "version 1"
        page.fill(f'input[name="{OUTPUT}"]', "0.004")
        page.click("form.rates button[type=submit]")

        assert page.locator(".saved").inner_text() == "Saved: the rates are at version 2."
        assert page.locator("#current-version").inner_text() == "version 2"
        assert page.input_value(f'input[name="{OUTPUT}"]') == "0.004"
        change = page.locator("#version-2 .changes").inner_text()
        assert "vllm.chat/completions.output: 0.003 → 0.004" in change
        assert "token" in page.locator("#version-2").inner_text()

        page.fill(f'input[name="{OUTPUT}"]', "-1")
        page.click("form.rates button[type=submit]")

        error = page.locator(f'.field-error[data-field="{OUTPUT}"]')
        assert error.inner_text() == "Must not be negative."
        assert page.locator(f'input[name="{OUTPUT}"]').get_attribute("aria-invalid") == "true"
        assert page.input_value(f'input[name="{OUTPUT}"]') == "-1"  # what was typed stays in the form
        assert page.locator("#current-version").inner_text() == "version 2"
        assert api_version(base) == 2  # nothing was stored

        page.click("#version-1 button:has-text('Roll back to this')")
        assert page.locator("#current-version").inner_text() == "version 3"
        assert page.input_value(f'input[name="{OUTPUT}"]') == "0.003"
        page.close()


def signed_in(browser: Any, base: str, path: str) -> Any:
    page = browser.new_page(accept_downloads=True)
    page.goto(base + path)
    page.fill('input[name="token"]', TOKEN)
    page.click("button:has-text('Sign in')")
    return page


def bar_earnings(page: Any) -> dict[str, Decimal]:
    bars = page.locator("#earnings-chart rect.bar")
    return {
        bars.nth(i).get_attribute("data-bucket"): Decimal(bars.nth(i).get_attribute("data-earnings"))
        for i in range(bars.count())
    }


def test_the_dashboard_charts_the_earnings_and_downloads_a_csv_that_adds_up(
    browser: Any, make_app: MakeApp, tmp_path: Path
) -> None:
    app, _ = make_app(admin_token=TOKEN, config={"SECRET_KEY": "browser-test"})
    tasks = varied_tasks(400)
    store_tasks(app.extensions["earnings"].store, tasks)
    earned = sum((task.earnings.total for task in tasks if task.earnings), Decimal(0))

    with serving(app) as base:
        page = signed_in(browser, base, "/earnings/")

        chart = page.locator("#earnings-chart")
        assert chart.is_visible() and chart.bounding_box()["height"] > 100
        by_day = bar_earnings(page)
        assert list(by_day) == ["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]
        assert sum(by_day.values()) == earned == Decimal(page.locator("#total-earnings").inner_text())
        tallest = max(by_day, key=by_day.__getitem__)
        heights = {
            bucket: float(page.locator(f'rect.bar[data-bucket="{bucket}"]').get_attribute("height"))
            for bucket in by_day
        }
        assert max(heights, key=heights.__getitem__) == tallest
        breakdown = page.locator("#breakdown td.earned").all_inner_texts()
        assert len(breakdown) == 4 and sum(map(Decimal, breakdown)) == earned

        page.fill('input[name="since"]', "2026-12-02")
        page.fill('input[name="until"]', "2026-12-02")
        page.fill('input[name="framework"]', "ollama")
        page.select_option('select[name="unit"]', "hour")
        page.click("form.filters button[type=submit]")

        chosen = [t for t in tasks if t.framework == "ollama" and t.created_at.date().isoformat() == "2026-12-02"]
        by_hour = bar_earnings(page)
        assert all(bucket.startswith("2026-12-02T") for bucket in by_hour) and len(by_hour) > 12
        assert sum(by_hour.values()) == sum((t.earnings.total for t in chosen if t.earnings), Decimal(0))
        assert page.locator("#total-tasks").inner_text() == str(len(chosen))
        assert {row.split("\t")[1] for row in page.locator("#recent tbody tr").all_inner_texts()} <= {
            "completed",
            "failed",
            "cancelled",
            "running",
        }

        with page.expect_download() as download_info:
            page.click("#download-csv")
        download = download_info.value
        assert download.suggested_filename == "earnings-by-hour.csv"
        rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
        assert {row["framework"] for row in rows} == {"ollama"}
        assert sum(int(row["tasks"]) for row in rows) == len(chosen)
        assert sum(Decimal(row["earnings"]) for row in rows) == sum(by_hour.values())
        page.close()


def test_the_dashboard_says_what_is_wrong_with_a_filter(browser: Any, make_app: MakeApp) -> None:
    app, _ = make_app(admin_token=TOKEN, config={"SECRET_KEY": "browser-test"})

    with serving(app) as base:
        page = signed_in(browser, base, "/earnings/")
        page.fill('input[name="since"]', "2026-12-03")
        page.fill('input[name="until"]', "2026-12-01")
        page.click("form.filters button[type=submit]")

        assert page.locator(".problem").inner_text() == "since must come before until."
        assert page.locator("#earnings-chart").count() == 0
        page.close()
