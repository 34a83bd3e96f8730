"""Issue [faults]: seeded chaos runs hold every invariant, and the checker catches each protection switched off.
Issue 20: the runs place multi-seller, multi-currency checkouts paid with single-use PaymentMethods, charged once
per checkout and currency.

The full runs are `make chaos` (seeds 1-3 x 2,000 orders); here one seed of 100 orders (about 5 minutes) and the
mutation tests keep `make test` bounded. Each run is its own process, as `make chaos` is: a local stack owns
moto's process-wide state.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.xdist_group("chaos"), pytest.mark.chaos]


def chaos(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "verification.chaos", "--json", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("seed", [2])  # seed 2 has found the most; seeds 1-3 at 2,000 orders: make chaos
def test_a_seeded_chaos_run_keeps_every_invariant(seed):
    # a refund worker killed after its PSP call is retried when its message's visibility (270 s) ends; killed
    # twice, that is more than 400 s: the wait must outlast two of them (it ends as soon as all are final)
    report = chaos("--seed", str(seed), "--orders", "100", "--timeout", "900")
    assert report["violations"] == {}, report["violations"]
    faulted, psp_requests = report["shares"]["psp requests faulted"]
    killed, invocations = report["shares"]["invocations killed"]
    twice, messages = report["shares"]["messages delivered twice"]
    assert faulted / psp_requests >= 0.2 and killed / invocations >= 0.05 and twice / messages >= 0.05
    assert report["faults"]["overnight_charges"] == report["faults"]["redriven_by_on_call"]
    assert all(outcome.startswith(("SUCCESS (", "FAILED (")) for outcome in report["overnight"].values())
    shape = report["workload"]
    assert shape["multi_seller"] and shape["multi_currency"] and shape["with_jpy"]
    # most buyers type a card number (or a bank account); the 3-D Secure share sends Stripe's test token
    assert shape["single_use_payment_methods"] > 0.7 * shape["checkouts"]
    assert not [status for status in report["rejected"] if status.startswith("4")], report["rejected"]
    # issue 15: releases through the API (some twice at once) and by the sweeper, transfers under the same faults
    # (the platform's balance short for a while), a restricted account retried by on-call, late registrations
    payouts = report["payouts"]
    assert payouts["released_by_storefront"] and payouts["released_twice_at_once"] and payouts["auto_released"]
    assert payouts["retried_by_on_call"] and payouts["payouts_transferred"] and payouts.get("payouts_held")
    assert report["faults"]["platform_balance_short_sweeps"] and report["faults"].get("psp_lost_response")
    # issue 16: disputes opened through the sandbox's admin call after the refunds, won and lost, while the PSP's
    # webhooks came twice and out of order (invariant 4 checks each is in our books as the PSP decided)
    disputes, webhooks = report["disputes"], report["webhooks"]
    assert disputes["opened"] and disputes["won"] and disputes["lost"], disputes
    assert webhooks["chaos_on"] and webhooks["duplicated"] and webhooks["reordered"], webhooks


def test_the_same_seed_draws_the_same_faults():
    # the pay-in's draws repeat exactly for a seed (transfers' depend on timing and are not compared, and so do a
    # 3-D Secure or debit charge's look-ups, which follow the buyer's and the bank's timing: none here)
    first, second = (chaos("--seed", "7", "--orders", "40", "--timeout", "300", "--payin-only", "--async-rate", "0")
                     for _ in range(2))
    psp = {k: v for k, v in first["faults"].items() if k.startswith("psp_")}
    assert psp == {k: v for k, v in second["faults"].items() if k.startswith("psp_")}
    assert first["overnight"].keys() == second["overnight"].keys()


# a group of their own (xdist joins it with the module's): the other worker may take them while a seed runs
@pytest.mark.xdist_group("mutations")
@pytest.mark.parametrize(("protection", "invariant", "kill_rate", "phases"), [
    # a charge retried within the search's lag, without the key (its worker died right after the call, one in ten
    # on top of the usual kills): charged twice. A lag of hours: with Stripe's minute, an idle stack's clock jump
    # (420 s) could pass it before the retry. Reusable PaymentMethods only: Stripe itself refuses a single-use one a
    # second time. Lost answers alone caught it by chance (not in a CI run of 2026-12-06)
    ("psp_idempotency_key", "1", "0.07", ["--payin-only", "--search-lag", "14400", "--single-use-rate", "0",
                                          "--kill-after-money-rate", "0.1"]),
    ("wallet_guard", "4", "0.15", ["--payin-only"]),  # a wallet step killed after its write and retried credits twice
    ("ledger_guard", "4", "0.15", ["--payin-only"]),  # a ledger step killed after its write, retried: a second pay-in
    ("charge_lookup", "1", "0", ["--payin-only"]),  # an overnight charge redriven past the key's life, created again
    # a transfer whose worker died right after it, retried without the key: sent twice. Killed after one Transfer
    # call in ten (beside the usual kills): kills drawn only among all calls left it to chance (none, some runs)
    ("transfer_idempotency_key", "1", "0.15", ["--payouts-only", "--kill-after-money-rate", "0.1"]),
])
def test_switching_off_a_protection_is_caught_by_the_checker(protection, invariant, kill_rate, phases):
    # more kills than the default run, so an unguarded step is killed after its write more than once; the pay-in
    # protections need only the pay-in. The workload is the default one (its share of slow methods included): a
    # mutation is caught by chance, and these seeds and rates were checked to catch each one, several times
    report = chaos("--seed", "11", "--orders", "100", "--kill-rate", kill_rate, "--overnight-rate", "0.04",
                   "--disable", protection, "--timeout", "200", *phases)
    assert report["mutation_hits"].get(protection), f"{protection}: the patch never ran; re-point MUTATIONS"
    assert invariant in report["violations"], (protection, report["violations"])


# Issue 18: a Stripe outage in the middle of the pay-in. Longer than the other seeds' run (the outage's wall time,
# the parked charges' wait, Adyen's refunds finished by notification): `make chaos`'s share, not make test's.
@pytest.mark.xdist_group("failover")
@pytest.mark.skipif(not os.environ.get("MARKETPAY_CHAOS_FAILOVER"),
                    reason="several minutes: MARKETPAY_CHAOS_FAILOVER=1 pytest tests/chaos -k stripe_outage")
def test_a_stripe_outage_moves_new_card_charges_to_adyen_and_charges_nothing_twice():
    # 100 orders, not 60: the outage opens once 30% of the orders were accepted, when up to 8 more checkouts are
    # already tokenized at Stripe; at 60 orders seed 3 has one or two one-currency card checkouts left after that
    # (a run moved only a declined one), at 100 a dozen
    report = chaos("--seed", "3", "--orders", "100", "--stripe-outage", "0.3:40", "--timeout", "900")
    # invariant 8 among them: no charge paid at both PSPs, each order charged once where it records
    assert report["violations"] == {}, report["violations"]
    failover = report["failover"]
    assert failover["stripe_breaker_trips"] >= 1  # opened by the executors' own failures
    assert failover["charges_failed_over_to_adyen"] >= 1 and failover["adyen_orders_succeeded"] >= 1, failover
    assert failover["parked_then_succeeded"] >= 1, failover
    assert failover["adyen_orders_transferred"] >= 1, failover  # paid out at Stripe Connect, from the top-up
    assert report["faults"]["stripe_outage_connection_reset"] > 0
    assert not [status for status in report["rejected"] if status.startswith("4")], report["rejected"]
