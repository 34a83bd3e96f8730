"""Issue [faults]: seeded chaos runs hold every invariant, and the checker catches each protection switched off.

The full run is `make chaos` (10,000 orders); here a few hundred orders per seed keep `make test` bounded.
"""

import logging

import pytest

from verification.chaos import ChaosConfig, run

pytestmark = pytest.mark.xdist_group("e2e")  # one local stack per process at a time
logging.getLogger("werkzeug").setLevel(logging.ERROR)


def violated(report):
    return {r.number: r.violations for r in report.results if not r.ok}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_seeded_chaos_run_keeps_every_invariant(seed):
    report = run(ChaosConfig(seed=seed, orders=200, timeout_s=300))
    assert violated(report) == {}
    faulted, psp_requests = report.shares["psp requests faulted"]
    killed, invocations = report.shares["invocations killed"]
    assert faulted / psp_requests >= 0.2 and killed / invocations >= 0.05
    assert report.faults["overnight_orders"] == report.faults["redriven_by_on_call"]
    assert all(outcome.startswith(("SUCCESS", "FAILED")) for outcome in report.overnight.values())


def test_the_same_seed_draws_the_same_faults():
    first = run(ChaosConfig(seed=7, orders=60, timeout_s=300))
    second = run(ChaosConfig(seed=7, orders=60, timeout_s=300))
    psp = {k: v for k, v in first.faults.items() if k.startswith("psp_")}
    assert psp == {k: v for k, v in second.faults.items() if k.startswith("psp_")}
    assert first.overnight.keys() == second.overnight.keys()


@pytest.mark.parametrize(("protection", "invariant"), [
    ("psp_idempotency_key", 1),  # a lost answer retried without the key charges twice
    ("wallet_guard", 4),  # a wallet step killed after its write and retried credits twice
    ("ledger_guard", 4),  # a ledger step retried writes a second pay-in
    ("expired_key_lookup", 1),  # past the key's lifetime, charging again without looking first
])
def test_switching_off_a_protection_is_caught_by_the_checker(protection, invariant):
    # more kills than the default run, so the unguarded step is killed after its write more than once
    report = run(ChaosConfig(seed=11, orders=150, kill_rate=0.15, overnight_rate=0.04, disable=protection,
                             timeout_s=300))
    assert invariant in violated(report), (protection, violated(report))
