"""The README's promises: its two commands, its configuration table, and the code quality gates."""

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


@pytest.mark.parametrize("name", OPTION_NAMES)
def test_every_option_has_a_row_in_the_configuration_table(name: str) -> None:
    row = next((line for line in README.splitlines() if line.startswith(f"| `{name}` |")), None)

    assert row is not None, f"no README row for {name}"
    assert f"`{config_key(name)}`" in row


def test_the_configuration_table_lists_no_option_that_does_not_exist() -> None:
    keys = set(re.findall(r"`(EARNINGS_[A-Z_]+)`", README.split("## Configuration")[1].split("##")[0]))

    assert keys == {config_key(name) for name in Options.__dataclass_fields__}


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
