"""Schemathesis (issue 21, point 5) against the local stack as deployed: the OpenAPI document the API serves,
every check (schemathesis.toml says why 422 is an expected answer to schema-valid data), a fixed seed."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group("e2e")


def test_schemathesis_with_every_check_finds_no_failure(stack):
    done = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", f"{stack.api_url}/v1/openapi.json",
         "-H", f"Authorization: Bearer {stack.api_key}", "--checks", "all", "--max-examples", "20",
         "--seed", "1", "--no-color"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    summary = done.stdout[-4000:]
    assert done.returncode == 0, summary
    assert " passed" in summary and "failures" not in summary.split("SUMMARY")[-1], summary
