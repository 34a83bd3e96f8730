"""`python -m ops payouts show|retry` on moto: what on-call sees of one payout, and the only way back from FAILED."""

import json
import re

from functions.executor import transfer
from functions.ledger import journal
from functions.shared import clock
from functions.shared.money import Money
from functions.shared.status import PayoutStatus
from functions.shared.tables import PayoutsTable, SellersTable
from functions.wallet import movements
from tests.ops.support import cli
from tests.support.aws import drain

SELLER = "seller_a"


def row(output, key, value):
    return re.search(rf"│ {re.escape(key)}\s+{re.escape(value)}", output) is not None


def released_payout(order_id="po_1", gross_minor=1234, commission_bps=1000) -> dict:
    """A payout released with its pay-in and release in wallet and ledger (as the worker applies them)."""
    payouts = PayoutsTable.from_settings()
    payouts.create_held([{"payment_order_id": order_id, "seller_account": SELLER, "checkout_id": "chk_1",
                          "currency": "USD", "gross_minor": gross_minor, "psp": "stripe", "charge_id": "ch_1",
                          "settled_at": clock.iso()}])
    commission = gross_minor * commission_bps // 10000
    payout = payouts.release(order_id, commission_bps, commission, gross_minor - commission, clock.iso(), clock.iso())
    gross = Money(gross_minor, "USD")
    movements.credit_pending(SELLER, order_id, gross, clock.iso())
    journal.record(journal.payin(order_id, SELLER, gross, "stripe"))
    transfer.apply_release(payout, clock.iso())
    payouts.mark_release_applied(order_id, clock.iso())
    return payout


def failed_payout(order_id="po_1") -> None:
    released_payout(order_id)
    payouts = PayoutsTable.from_settings()
    payouts.begin_transfer(order_id, clock.iso(), clock.iso())
    payouts.fail_transfer(order_id, "insufficient_capabilities_for_transfer", "account restricted", clock.iso())


def test_payouts_show_prints_the_payout_its_seller_and_its_books(system):
    SellersTable.from_settings().put(SELLER, commission_bps=1000, now=clock.iso(), psp_account_id="acct_1Seller")
    payout = released_payout()
    payouts = PayoutsTable.from_settings()
    begun = payouts.begin_transfer("po_1", clock.iso(), clock.iso())
    payouts.record_transfer_id("po_1", "tr_1", clock.iso())
    transfer.apply_transfer({**begun, "transfer_id": "tr_1"}, clock.iso())
    payouts.finish_transfer("po_1", "tr_1", clock.iso())
    assert payout["net_minor"] == 1111

    result = cli("payouts", "show", "po_1")

    assert result.exit_code == 0, result.output
    output = result.output
    assert row(output, "status", "TRANSFERRED") and row(output, "gross", "12.34 USD")
    assert row(output, "commission", "1.23 USD") and row(output, "seller net", "11.11 USD")
    assert row(output, "transfer_id", "tr_1") and row(output, "seller's account", "acct_1Seller")
    assert row(output, "sweeper", "not watching") and "dead-lettered" not in output
    assert re.search(r"release\s+│ pending -12.34 USD, available 11.11 USD", output)
    assert re.search(r"transfer\s+│ available -11.11 USD, transferred 11.11 USD\s+│ seller_available:seller_a 11.11"
                     r" USD; psp_receivable:stripe -11.11 USD", output)
    assert "final: nothing to do" in output


def test_payouts_show_of_a_failed_payout_says_what_to_do(system):
    failed_payout()
    output = cli("payouts", "show", "po_1").output
    assert row(output, "status", "FAILED") and row(output, "payout_failure_reason", "account restricted")
    assert row(output, "seller's account", "none registered")
    assert re.search(r"transfer\s+│ none applied\s+│ none written", output)
    assert "python -m ops payouts retry po_1" in output


def test_payouts_show_of_an_unknown_order_fails_clearly(system):
    result = cli("payouts", "show", "po_missing")
    assert result.exit_code == 1 and "error: no payout po_missing in table ops-Payouts" in result.output


def test_payouts_retry_moves_failed_back_to_released_once_and_sends_it(system):
    failed_payout()

    dry = cli("payouts", "retry", "po_1", "--dry-run")
    assert dry.exit_code == 0 and "would move FAILED" in dry.output
    assert PayoutsTable.from_settings().get("po_1")["payout_status"] == PayoutStatus.FAILED
    assert drain(system["PAYOUTS_QUEUE_URL"]) == []

    result = cli("payouts", "retry", "po_1")
    again = cli("payouts", "retry", "po_1")

    assert result.exit_code == 0, result.output
    assert "moved: FAILED (insufficient_capabilities_for_transfer) -> RELEASED; sent to PayoutsQueue" in result.output
    payout = PayoutsTable.from_settings().get("po_1")
    assert payout["payout_status"] == PayoutStatus.RELEASED and "payout_failure_code" not in payout
    assert payout["due_at"] <= clock.iso()  # the sweeper sends it if the message is lost
    assert [json.loads(body) for body in drain(system["PAYOUTS_QUEUE_URL"])] == [{"payment_order_id": "po_1"}]
    assert again.exit_code == 0 and "not dead-lettered: RELEASED, not failed nor dead-lettered" in again.output


def test_payouts_retry_puts_a_dead_lettered_payout_back_under_watch_with_fresh_attempts(system):
    released_payout()
    payouts = PayoutsTable.from_settings()
    begun = payouts.begin_transfer("po_1", clock.iso(), clock.iso())
    assert payouts.mark_dead_lettered("po_1", begun["due_at"], "TRANSFERRING after 30 transfer attempts",
                                      clock.iso())

    result = cli("payouts", "retry", "po_1")

    assert result.exit_code == 0, result.output
    assert "requeued: dead-lettered TRANSFERRING payout back under watch" in result.output
    payout = payouts.get("po_1")
    assert payout["transfer_attempts"] == 0 and "dead_letter_reason" not in payout and "due_at" in payout
    assert payout["first_transfer_at"] == begun["first_transfer_at"]  # the key's age is kept
    assert len(drain(system["PAYOUTS_QUEUE_URL"])) == 1


def test_payouts_retry_leaves_final_and_unknown_payouts_alone(system):
    released_payout()
    payouts = PayoutsTable.from_settings()
    payouts.begin_transfer("po_1", clock.iso(), clock.iso())
    payouts.finish_transfer("po_1", "tr_1", clock.iso())

    final = cli("payouts", "retry", "po_1")
    missing = cli("payouts", "retry", "po_missing")

    assert final.exit_code == 0 and "already final: TRANSFERRED: nothing to retry" in final.output
    assert missing.exit_code == 1 and "left in queue: no payout po_missing" in missing.output
    assert drain(system["PAYOUTS_QUEUE_URL"]) == []
