"""Code style is part of the build: ruff format and ruff check must be clean."""

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("command", [["format", "--check", "."], ["check", "."]], ids=["format", "lint"])
def test_ruff_is_clean(command):
    # through the interpreter running the tests, so the venv's ruff is used without activating the venv
    result = subprocess.run([sys.executable, "-m", "ruff", *command], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
