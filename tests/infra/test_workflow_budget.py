"""Every path of the synthesized state machine fits Express's 300 s, with margin, at its worst.

Worst case of a task: each try runs to its timeout (the function's Timeout, or the task's TimeoutSeconds),
and it is tried 1 + the sum of its retriers' MaxAttempts times, waiting between tries the largest backoff
each retrier allows (IntervalSeconds x BackoffRate^n, capped by MaxDelaySeconds; full jitter only shortens
it). A path's worst case is the sum over its states; paths follow Next, Choice branches and Catch.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from infra import names
from tests.infra.support import render, state_machine_definition

pytestmark = pytest.mark.xdist_group("infra-synth")

EXPRESS_LIMIT_S = 300
THROTTLED = ["Lambda.TooManyRequestsException"]
BUDGET_S = 270  # 30 s of margin for Lambda's own start-up, Step Functions' transitions, clock skew


@pytest.fixture(scope="module")
def asl(synth) -> dict[str, Any]:
    (lid,) = synth.of_type("AWS::StepFunctions::StateMachine")
    return state_machine_definition(synth.props(lid))


@pytest.fixture(scope="module")
def timeouts(synth) -> dict[str, int]:
    """Function logical id -> its Timeout in seconds."""
    return {lid: int(r["Properties"]["Timeout"]) for lid, r in synth.of_type("AWS::Lambda::Function").items()}


def backoff_s(retrier: dict[str, Any]) -> float:
    interval, rate = retrier.get("IntervalSeconds", 1), retrier.get("BackoffRate", 2.0)
    cap = retrier.get("MaxDelaySeconds", float("inf"))
    return sum(min(interval * rate**n, cap) for n in range(retrier.get("MaxAttempts", 3)))


def state_worst_s(state: dict[str, Any], timeouts: dict[str, int]) -> float:
    if state["Type"] == "Wait":
        return float(state["Seconds"])
    if state["Type"] != "Task":
        return 0.0
    resource = render(state["Resource"])
    one_try = timeouts.get(resource)
    if one_try is None:
        assert "TimeoutSeconds" in state, f"{resource}: a service task needs its own TimeoutSeconds"
        one_try = state["TimeoutSeconds"]
    retriers = state.get("Retry", [])
    # A throttled invoke is refused before the function runs: its retries cost only their waits.
    tries = 1 + sum(r.get("MaxAttempts", 3) for r in retriers if r.get("ErrorEquals") != THROTTLED)
    return tries * one_try + sum(backoff_s(r) for r in retriers)


def successors(state: dict[str, Any]) -> list[str]:
    found = [state["Next"]] if "Next" in state else []
    found += [choice["Next"] for choice in state.get("Choices", [])]
    found += [state["Default"]] if "Default" in state else []
    found += [catch["Next"] for catch in state.get("Catch", [])]
    return found


def worst_paths(asl: dict[str, Any], timeouts: dict[str, int]) -> list[tuple[float, list[str]]]:
    """Every path from StartAt to an end, with its worst-case seconds, longest first."""
    states = asl["States"]
    paths: list[tuple[float, list[str]]] = []

    def walk(name: str, path: list[str], total: float) -> None:
        assert name not in path, f"loop through {name}: the budget would be unbounded"
        state = states[name]
        total += state_worst_s(state, timeouts)
        following = successors(state)
        if not following:
            paths.append((total, [*path, name]))
        for nxt in following:
            walk(nxt, [*path, name], total)

    walk(asl["StartAt"], [], 0.0)
    return sorted(paths, reverse=True)


def test_the_machine_stops_at_the_express_limit(asl):
    assert asl["TimeoutSeconds"] == EXPRESS_LIMIT_S


def test_every_path_fits_the_budget_at_its_worst(asl, timeouts):
    paths = worst_paths(asl, timeouts)
    worst, path = paths[0]
    print(f"worst case {worst:.0f} s: {' -> '.join(path)}")
    assert worst <= BUDGET_S, (worst, path)
    # the longest path is the one through every task of the success path, then the dead letter
    assert path[:4] == [names.CHARGE, names.CHARGE_OUTCOME, names.CREDIT_WALLET, names.RECORD_LEDGER]
    assert path[-2:] == [names.TO_DEAD_LETTER, names.FAILED]


def test_every_task_retries_before_anything_dead_letters(asl):
    for name, state in asl["States"].items():
        if state["Type"] == "Task":
            assert state.get("Retry"), f"{name} has no Retry: a transient error would dead-letter at once"


def test_the_budget_check_catches_the_old_retry_policy(asl, timeouts):
    """Six retries of two seconds doubling, as before this budget existed: the check must fail."""
    old = copy.deepcopy(asl)
    for state in old["States"].values():
        for retrier in state.get("Retry", []):
            retrier.update(MaxAttempts=6, IntervalSeconds=2)
            retrier.pop("MaxDelaySeconds", None)
    assert worst_paths(old, timeouts)[0][0] > EXPRESS_LIMIT_S


def test_a_throttle_retrier_counts_its_waits_not_the_function_timeout():
    throttled = {"ErrorEquals": THROTTLED, "IntervalSeconds": 1, "BackoffRate": 2, "MaxAttempts": 8,
                 "MaxDelaySeconds": 5}
    task = {"Type": "Task", "Resource": "Fn", "Retry": [throttled]}
    assert state_worst_s(task, {"Fn": 20}) == 20 + 1 + 2 + 4 + 5 * 5


def test_the_worst_case_arithmetic():
    retrier = {"IntervalSeconds": 2, "BackoffRate": 2, "MaxAttempts": 3, "MaxDelaySeconds": 5}
    assert backoff_s(retrier) == 2 + 4 + 5
    task = {"Type": "Task", "Resource": "Fn", "Retry": [retrier]}
    assert state_worst_s(task, {"Fn": 10}) == 4 * 10 + 11
