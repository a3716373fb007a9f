"""The docs' promises: the README's two commands, the configuration reference (every option, no other),
the list of docs pages, and the code quality gates."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flask_earnings.options import OPTION_NAMES, Options, config_key

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


def shell_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_command = shell_blocks(README)[1]
    ci_script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")

    assert "pytest" in test_command
    assert test_command in ci_script.splitlines()


def test_the_readme_run_command_installs_and_starts_the_example_gateway() -> None:
    run_command = shell_blocks(README)[0]

    assert run_command.startswith("python3 -m venv .venv && ")
    assert run_command.endswith("-m example_app")


def section(text: str, heading: str) -> str:
    """The lines under ``heading`` up to the next heading of its level or above."""
    level = len(heading.split(" ", 1)[0])
    lines = text.split(f"\n{heading}\n", 1)[1].splitlines()
    end = next((index for index, line in enumerate(lines) if re.match(rf"#{{1,{level}}} ", line)), len(lines))
    return "\n".join(lines[:end])


def default_literal(value: object) -> str | None:
    """How the reference writes a plain default (``True``, ``2000``, ``"partial"``); ``None`` for others."""
    if isinstance(value, str):
        return f'`"{value}"`'
    if value is None or isinstance(value, (bool, int, float)):
        return f"`{value!r}`"
    return None


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_every_option_has_a_row_in_the_configuration_reference(name: str) -> None:
    row = next((line for line in CONFIGURATION.splitlines() if line.startswith(f"| `{name}` |")), None)

    assert row is not None, f"no row for {name} in docs/configuration.md"
    assert f"`{config_key(name)}`" in row
    literal = default_literal(getattr(Options(), name))
    assert literal is None or literal in row.split("|")[4], f"the row of {name} does not say its default {literal}"


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_every_option_has_a_section_in_the_configuration_reference(name: str) -> None:
    heading = f"### `{config_key(name)}`"

    assert heading in CONFIGURATION.splitlines(), f"no {heading!r} in docs/configuration.md"
    assert section(CONFIGURATION, heading).strip().startswith(f"Argument `{name}` · ")


def test_the_configuration_reference_names_no_option_that_does_not_exist() -> None:
    keys = set(re.findall(r"EARNINGS_[A-Z_]+", CONFIGURATION))

    assert keys == {config_key(name) for name in OPTION_NAMES}


def test_the_readme_points_to_the_configuration_reference_and_names_no_unknown_key() -> None:
    keys = set(re.findall(r"EARNINGS_[A-Z_]+", README)) - {"EARNINGS_TEST_POSTGRESQL_URL"}

    assert "(docs/configuration.md)" in section(README, "## Configuration")
    assert keys <= {config_key(name) for name in OPTION_NAMES}, keys - {config_key(name) for name in OPTION_NAMES}


def test_the_readme_lists_every_page_of_the_docs() -> None:
    listed = set(re.findall(r"\(docs/([\w.-]+\.md)\)", section(README, "## Documentation")))

    assert {page.name for page in (ROOT / "docs").glob("*.md")} <= listed


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],
    ],
    ids=["ruff check", "ruff format", "mypy"],
)
def test_the_code_is_clean(command: list[str]) -> None:
    executable = shutil.which(command[0], path=str(Path(sys.executable).parent))
    assert executable is not None, f"{command[0]} is not installed next to {sys.executable}"

    result = subprocess.run([executable, *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=600)

    assert result.returncode == 0, result.stdout + result.stderr
