"""The admin pages in a real browser: Debian's Chromium, headless, driven by Playwright."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import MakeApp
from .helpers import serving

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
