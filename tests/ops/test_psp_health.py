"""`ops psp health / open / close`: each PSP's circuit breaker, as every function sees it."""

import json

from functions.shared import clock
from functions.shared.breaker import Breaker
from functions.shared.tables import PspHealthTable
from tests.ops.support import cli as ops


def executor_breaker():
    """A breaker as an Executor instance has it (its own cache)."""
    return Breaker(PspHealthTable.from_settings(), failures=5, window_s=30, cooldown_s=30)


def health(as_json=True):
    shown = ops("psp", "health", "--json")
    assert shown.exit_code == 0, shown.output
    return {row["psp"]: row for row in json.loads(shown.stdout)}


def test_health_shows_a_closed_breaker_for_each_psp_before_anything_failed(system):
    assert health()["stripe"]["state"] == "closed"
    table = ops("psp", "health")
    assert table.exit_code == 0 and "stripe" in table.output and "closed" in table.output


def test_health_shows_what_the_executor_saw(system):
    seen = executor_breaker()
    for _ in range(5):
        seen.failed("stripe", "APIConnectionError: connection refused")
    row = health()["stripe"]
    assert (row["state"], row["trips"]) == ("open", 1)
    assert "connection refused" in row["last_failure"] and row["open_until"] > clock.iso()
    clock.advance(31)
    assert health()["stripe"]["state"] == "half_open"


def test_open_for_a_maintenance_then_close(system):
    opened = ops("psp", "open", "stripe", "--minutes", "45")
    assert opened.exit_code == 0, opened.output
    assert not executor_breaker().allows("stripe")
    assert health()["stripe"]["open_until"] > clock.iso()
    closed = ops("psp", "close", "stripe")
    assert closed.exit_code == 0, closed.output
    assert executor_breaker().allows("stripe") and health()["stripe"]["state"] == "closed"
    assert ops("psp", "open", "stripe", "--minutes", "0").exit_code != 0  # at least a minute
