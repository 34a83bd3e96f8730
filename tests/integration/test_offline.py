"""Checks and money orders (issue 17) through the API function, the sweeper and the workflow's steps, on moto.

A checkout paid by check or money order is stored with its orders EXECUTING, waiting for the funds: no queue
message, no PSP call. The checkout shows where to send the payment and the reference to write on it. An operator
records the funds (scope offline_payments:write); the sweeper's next run starts the attempt that finalizes the
orders SUCCESS as a card's (wallet, ledger pay-in to bank_deposits, HELD pay-outs). Unpaid at the deadline, the
sweeper ends them FAILED funds_not_received. A bounced check is refunded through the refund path.
"""

import json
from datetime import timedelta

import boto3
import pytest

from functions.executor import refund as refund_worker
from functions.executor import sweeper
from functions.ledger import journal
from functions.payment import api, offline, service
from functions.payment.schemas import OfflineBounceRequest, OfflinePaymentRequest
from functions.shared import clock
from functions.shared.config import settings
from functions.shared.errors import DomainError
from functions.shared.names import offline_reference
from functions.shared.tables import LedgerTable, PaymentTables, PayoutsTable, RefundsTable, WalletTable
from tests.integration.support import work_of
from tests.integration.test_executor_checkout import run_charge
from tests.integration.test_steps import create_machine
from tests.support.aws import drain
from tests.support.events import FakeContext, http_event
from verification import invariants
from verification.invariants import Snapshot

REFERENCE = offline_reference("chk_off#USD")


@pytest.fixture
def workflow(aws_env):
    create_machine(boto3.client("stepfunctions", region_name="us-east-1"))
    return aws_env


def call(method, path, body=None, scopes=None):
    event = http_event(method, path, body)
    if scopes is not None:
        event["requestContext"]["authorizer"]["lambda"]["scopes"] = scopes
    answer = api.handler(event, FakeContext())
    return answer["statusCode"], json.loads(answer["body"]) if answer.get("body") else None, answer.get("headers", {})


def checkout_body(checkout_id="chk_off", method="check", orders=(("seller_a", "40.00"), ("seller_b", "5.00"))):
    return {"buyer_info": {"buyer_id": "b"}, "checkout_id": checkout_id, "payment_method": {"type": method},
            "payment_orders": [{"seller_account": seller, "amount": amount, "currency": "USD",
                                "payment_order_id": f"{checkout_id}_{n}"} for n, (seller, amount) in enumerate(orders)]}


def placed(checkout_id="chk_off", method="check"):
    status, body, _ = call("POST", "/v1/payments", checkout_body(checkout_id, method))
    assert status == 202, body
    return body


def record(checkout_id="chk_off", amount="45.00", currency="USD", reference=REFERENCE, scopes=None):
    return call("POST", f"/v1/checkouts/{checkout_id}/offline_payments",
                {"amount": amount, "currency": currency, "reference": reference}, scopes)


def swept_and_run(checkout_id="chk_off"):
    """The sweeper's run re-drives the due charge; the workflow runs that attempt."""
    assert sweeper.sweep()["redriven"] == 1
    charge = PaymentTables.from_settings().get_charge(f"{checkout_id}#USD")
    return run_charge(work_of(checkout_id, attempt=int(charge["attempts"])))


def orders_of(checkout_id="chk_off"):
    tables = PaymentTables.from_settings()
    return [tables.get_order(f"{checkout_id}_{n}") for n in range(2)]


def wallet_matches_ledger():
    """The chaos run's invariants, and the nightly internal reconciliation, find the books consistent."""
    from functions.recon import internal

    snap = Snapshot(orders=list(PaymentTables.from_settings().scan_orders()),
                    ledger=list(LedgerTable.from_settings().scan()), wallet=list(WalletTable.from_settings().scan()),
                    psp_charges=[])
    assert invariants._wallet_matches_ledger(snap) == []
    assert invariants._ledger_balances(snap) == []
    assert internal.reconcile(internal.Tables.from_settings(), fix=False).findings == []


def test_a_check_checkout_waits_for_funds_and_shows_the_instructions(workflow):
    answer = placed()
    due_by = clock.iso(clock.parse_iso(answer["created_at"]) + timedelta(days=14))
    instructions = {"method": "check", "pay_to": settings().offline_pay_to, "reference": REFERENCE,
                    "amount": "45.00", "currency": "USD", "due_by": due_by}
    assert answer["instructions"] == [instructions]
    assert [o["payment_order_status"] for o in answer["payment_orders"]] == ["EXECUTING", "EXECUTING"]
    assert drain(settings().orders_queue_url) == []  # no workflow: nothing to charge at a PSP
    status, view, _ = call("GET", "/v1/checkouts/chk_off")
    assert status == 200 and view["instructions"] == [instructions] and not view["is_payment_done"]
    assert {o["offline_funds"] for o in view["payment_orders"]} == {"awaiting"}
    charge = PaymentTables.from_settings().get_charge("chk_off#USD")
    assert (charge["charge_status"], charge["psp_status"], charge["due_at"]) == ("EXECUTING", "awaiting_funds", due_by)
    # the same checkout again is a replay with the same instructions; the sweeper leaves it alone for 14 days
    status, again, headers = call("POST", "/v1/payments", checkout_body())
    assert (status, again["instructions"], headers.get("Idempotent-Replayed")) == (202, [instructions], "true")
    clock.advance(13 * 86400)
    assert sweeper.sweep()["redriven"] == 0


def test_recorded_funds_finalize_success_with_wallet_ledger_and_held_payouts(workflow):
    placed()
    status, body, headers = record()
    assert status == 202 and "Idempotent-Replayed" not in headers
    assert (body["status"], body["amount"], body["reference"]) == ("recorded", "45.00", REFERENCE)
    # the same body again: the same answer, marked a replay
    assert record()[:2] == (202, body) and record()[2]["Idempotent-Replayed"] == "true"
    assert swept_and_run()["charge_status"] == "SUCCESS"
    for order, gross in zip(orders_of(), (4000, 500), strict=True):
        assert (order["payment_order_status"], order["wallet_updated"], order["ledger_updated"]) == (
            "SUCCESS", True, True)
        assert PayoutsTable.from_settings().get(order["payment_order_id"])["payout_status"] == "HELD"
        payin = LedgerTable.from_settings().get(f"payin#{order['payment_order_id']}")
        assert {(e["account"], int(e["amount_minor"])) for e in payin["entries"]} == {
            (journal.BANK_DEPOSITS, gross), (f"seller_pending:{order['seller_account']}", -gross)}
    assert WalletTable.from_settings().balances("seller_a")["USD"]["pending_minor"] == 4000
    wallet_matches_ledger()
    view = service.get_checkout("chk_off")
    assert view.is_payment_done and view.instructions is None
    assert {o.offline_funds for o in view.payment_orders} == {"received"}
    # nothing more to sweep, and a late record is still the same replay
    assert sweeper.sweep()["redriven"] == 0
    assert record()[0] == 202


def test_a_reference_typed_loosely_is_the_same_reference(workflow):
    placed()
    typed = REFERENCE.lower().replace("-", " ").replace("0", "o").replace("1", "l")
    assert record(reference=typed)[0] == 202


@pytest.mark.parametrize(("field", "value", "code"), [
    ("amount", "44.99", "offline_amount_mismatch"),
    ("amount", "45.001", "too_many_decimals"),
    ("currency", "EUR", "offline_currency_mismatch"),
    ("reference", "MP-AAAAA-AAAAA", "offline_reference_mismatch"),
    ("reference", offline_reference("chk_other#USD"), "offline_reference_mismatch"),
])
def test_what_does_not_match_the_charge_is_a_422_and_records_nothing(workflow, field, value, code):
    placed()
    status, body, _ = record(**{field: value})
    assert (status, body["error"]["code"]) == (422, code), body
    charge = PaymentTables.from_settings().get_charge("chk_off#USD")
    assert "offline_receipt" not in charge and charge["psp_status"] == "awaiting_funds"
    assert sweeper.sweep()["redriven"] == 0


def test_refusals_by_state_and_scope(workflow):
    status, body, _ = record("chk_none")
    assert (status, body["error"]["code"]) == (404, "checkout_not_found")
    call("POST", "/v1/payments", {**checkout_body("chk_card"), "payment_method": {"type": "card",
                                                                                "token": "pm_card_visa"}})
    status, body, _ = record("chk_card", reference=offline_reference("chk_card#USD"))
    assert (status, body["error"]["code"]) == (409, "checkout_not_offline")
    placed()
    # a storefront key (every default scope) may not record funds
    status, body, _ = record(scopes="payments:write payments:read refunds releases sellers webhooks")
    assert (status, body["error"]["code"]) == (403, "insufficient_scope")
    assert "offline_payments:write" in body["error"]["details"][0]["message"]


def test_unpaid_after_the_configured_days_ends_failed_funds_not_received(workflow):
    placed()
    clock.advance(14 * 86400 + 1)
    status, body, _ = record()  # past the deadline, before the sweeper ran: refused, never recorded
    assert (status, body["error"]["code"]) == (409, "offline_funds_overdue")
    assert swept_and_run()["charge_status"] == "FAILED"
    assert {(o["payment_order_status"], o["failure_code"]) for o in orders_of()} == {("FAILED", "funds_not_received")}
    assert not any(o.get("wallet_updated") for o in orders_of())
    view = service.get_checkout("chk_off")
    assert view.is_payment_done and view.instructions is None
    assert {o.offline_funds for o in view.payment_orders} == {"not_received"}
    status, body, _ = record()
    assert (status, body["error"]["code"]) == (409, "offline_payment_closed")


def test_a_redrive_before_the_deadline_parks_the_charge_at_its_deadline_again(workflow):
    placed()
    charge = PaymentTables.from_settings().get_charge("chk_off#USD")
    due_by = charge["funds_due_by"]
    # on-call re-drives it early (or a crash did): nothing is decided and the sweep waits for the deadline again
    PaymentTables.from_settings().postpone_charge("chk_off#USD", due_by, clock.iso(), clock.iso())
    assert swept_and_run() == {"charge_status": "EXECUTING", "psp_status": "awaiting_funds"}
    assert PaymentTables.from_settings().get_charge("chk_off#USD")["due_at"] == due_by
    assert {o["payment_order_status"] for o in orders_of()} == {"EXECUTING"}


def bounce(checkout_id="chk_off", reference=REFERENCE):
    return call("POST", f"/v1/checkouts/{checkout_id}/offline_payments/bounce",
                {"currency": "USD", "reference": reference})


def test_a_bounced_check_is_refused_before_success_and_refunds_every_order_after(workflow):
    placed()
    status, body, _ = bounce()
    assert (status, body["error"]["code"]) == (409, "offline_payment_not_recorded")
    record()
    status, body, _ = bounce()  # recorded, not finalized yet
    assert (status, body["error"]["code"]) == (409, "offline_payment_not_settled")
    assert swept_and_run()["charge_status"] == "SUCCESS"

    status, body, headers = bounce()
    assert (status, body["status"]) == (202, "bounced") and "Idempotent-Replayed" not in headers
    refund_ids = [f"chk_off_{n}-bounce" for n in range(2)]
    drain(settings().refunds_queue_url)
    assert [refund_worker.drive(refund_id) for refund_id in refund_ids] == ["succeeded", "succeeded"]
    stored = RefundsTable.from_settings().get_many(refund_ids)
    assert {(r["refund_status"], r["timing"], r["psp_refund_id"]) for r in stored.values()} == {
        ("SUCCEEDED", "held", "bank:chk_off_0-bounce"), ("SUCCEEDED", "held", "bank:chk_off_1-bounce")}
    assert WalletTable.from_settings().balances("seller_a")["USD"]["pending_minor"] == 0
    refund_entries = LedgerTable.from_settings().get("refund#chk_off_0-bounce")["entries"]
    assert {(e["account"], int(e["amount_minor"])) for e in refund_entries} == {
        ("seller_pending:seller_a", 4000), (journal.BANK_DEPOSITS, -4000)}
    wallet_matches_ledger()
    view = service.get_checkout("chk_off")
    assert [(o.payment_order_status, o.offline_funds, o.refunded) for o in view.payment_orders] == [
        ("SUCCESS", "bounced", "40.00"), ("SUCCESS", "bounced", "5.00")]
    # sent again: the same answer, no second refund
    status, again, headers = bounce()
    assert (status, again, headers.get("Idempotent-Replayed")) == (202, body, "true")
    assert len(list(RefundsTable.from_settings().scan())) == 2


def test_a_bounce_that_died_after_noting_it_completes_the_refunds_when_sent_again(workflow, monkeypatch):
    placed()
    record()
    swept_and_run()
    calls = []

    def dies(order_id, request):
        calls.append(order_id)
        raise RuntimeError("killed")

    monkeypatch.setattr(offline.refunds, "create_refund", dies)
    with pytest.raises(RuntimeError):
        offline.bounce("chk_off", OfflineBounceRequest(currency="USD", reference=REFERENCE))
    monkeypatch.undo()
    view, replayed = offline.bounce("chk_off", OfflineBounceRequest(currency="USD", reference=REFERENCE))
    assert replayed and view.status == "bounced"
    assert sorted(RefundsTable.from_settings().get_many([f"chk_off_{n}-bounce" for n in range(2)])) == [
        "chk_off_0-bounce", "chk_off_1-bounce"]


def test_the_service_refuses_with_codes_the_ops_tool_prints(workflow):
    placed("chk_mo", method="money_order")
    request = OfflinePaymentRequest(amount="45.00", currency="USD", reference="MP-AAAAA-AAAAA")
    with pytest.raises(DomainError) as refused:
        offline.record_payment("chk_mo", request)
    assert refused.value.code == "offline_reference_mismatch"


# --- recon: the bank's deposit file of a day ------------------------------------------------------------------


def test_a_bank_deposit_file_is_matched_against_the_offline_charges_and_the_days_receipts(workflow):
    from functions.recon.outcomes import Category
    from functions.recon.service import RunStatus, SettlementObject, reconcile

    for checkout_id in ("chk_m", "chk_short", "chk_wait", "chk_lost"):
        placed(checkout_id)
    for checkout_id in ("chk_m", "chk_short", "chk_lost"):
        assert record(checkout_id, reference=offline_reference(f"{checkout_id}#USD"))[0] == 202
    day = clock.iso()[:10]
    deposits = "\n".join([
        "Date,Amount,Currency,Reference",
        f"{day},45.00,USD,{offline_reference('chk_m#USD').lower()}",  # matched, as typed by the bank clerk
        f"{day},40.00,USD,{offline_reference('chk_short#USD')}",  # amount mismatch
        f"{day},45.00,USD,{offline_reference('chk_wait#USD')}",  # deposited, never recorded
        f"{day},12.00,USD,MP-ZZZZZ-ZZZZZ",  # nobody's charge
        f"{day},45.00,USD,{offline_reference('chk_m#USD')}",  # the same check twice
        f"{day},4x.00,USD,MP-YYYYY-YYYYY",  # unreadable
    ]) + "\n"
    bucket = settings().settlement_bucket
    key = f"incoming/bank/{day}.csv"
    boto3.client("s3", region_name="us-east-1").put_object(Bucket=bucket, Key=key, Body=deposits.encode())
    result = reconcile(SettlementObject(bucket, key, "seq-1"))
    assert result.status is RunStatus.PROCESSED, result
    counts = {name: value["count"] for name, value in result.summary["categories"].items() if value["count"]}
    assert counts == {Category.MATCHED: 1, Category.AMOUNT_MISMATCH: 1, Category.DEPOSIT_NOT_RECORDED: 1,
                      Category.DEPOSIT_WITHOUT_CHARGE: 1, Category.DUPLICATE_SETTLEMENT: 1,
                      Category.MALFORMED_ROW: 1, Category.RECORDED_WITHOUT_DEPOSIT: 1}
    assert result.summary["deposit_day"] == day and result.summary["unexplained"] == 6
    body = boto3.client("s3", region_name="us-east-1").get_object(Bucket=bucket, Key=result.summary["report_json"])
    lost = [f for f in json.loads(body["Body"].read())["discrepancies"] if f["category"] == "recorded_without_deposit"]
    assert [(f["psp_reference"], f["our_amount"]) for f in lost] == [(offline_reference("chk_lost#USD"), "45.00")]
    # the same file again changes nothing and reports nothing new
    assert reconcile(SettlementObject(bucket, key, "seq-1")).status is RunStatus.ALREADY_DONE


def test_an_offline_orders_payout_is_transferred_from_the_balance_and_a_bounce_after_reverses_it(sandbox):
    from functions.executor import transfer
    from tests.integration.support import place
    from tests.integration.test_executor_checkout import begin
    from tests.integration.test_transfer import registered, released, transfers_of
    from verification.storefront import PaymentMethods

    create_machine(boto3.client("stepfunctions", region_name="us-east-1"))
    account = registered(sandbox, seller="seller_a")
    placed()
    record()
    swept_and_run()
    released("chk_off_0")
    # the check's money is in the bank, not at Stripe: until the platform funds its Stripe balance, the transfer
    # waits as any balance_short one does
    assert transfer.drive("chk_off_0") == "balance_short"
    funding = PaymentMethods(sandbox.url).create("4000000000000077")  # available at once, as a top-up would be
    place("chk_fund", orders=(("seller_z", "100.00", "USD"),), card=funding)
    assert run_charge(begin("chk_fund", "USD"))["charge_status"] == "SUCCESS"
    assert transfer.drive("chk_off_0") == "not_due"  # a message before the wait ends spends no attempt
    due_at = clock.parse_iso(PayoutsTable.from_settings().get("chk_off_0")["due_at"])
    clock.advance((due_at - clock.now()).total_seconds() + 1)
    assert transfer.drive("chk_off_0") == "transferred"
    [sent] = transfers_of(sandbox, "chk_off_0")
    assert (sent.amount, sent.destination, sent.source_transaction) == (3600, account, None)
    assert bounce()[0] == 202
    drain(settings().refunds_queue_url)
    assert refund_worker.drive("chk_off_0-bounce") == "succeeded"
    stored = RefundsTable.from_settings().get("chk_off_0-bounce")
    assert (stored["timing"], stored["reversal_status"], stored["seller_share_minor"]) == (
        "transferred", "SUCCEEDED", 3600)
    assert transfers_of(sandbox, "chk_off_0")[0].amount_reversed == 3600
    wallet_matches_ledger()


def test_concurrent_records_of_one_check_record_it_once(workflow):
    from concurrent.futures import ThreadPoolExecutor

    placed()
    request = OfflinePaymentRequest(amount="45.00", currency="USD", reference=REFERENCE)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: offline.record_payment("chk_off", request), range(4)))
    assert sorted(replayed for _, replayed in answers) == [False, True, True, True]
    assert len({view.recorded_at for view, _ in answers}) == 1
    assert swept_and_run()["charge_status"] == "SUCCESS"


def test_a_bounce_after_a_refund_in_full_of_one_order_refunds_the_rest(workflow):
    from functions.payment import refunds as refunds_api
    from functions.payment.schemas import RefundRequest

    placed()
    record()
    swept_and_run()
    refunds_api.create_refund("chk_off_1", RefundRequest(refund_id="rf_first", reason="returned"))
    status, body, _ = bounce()
    assert (status, body["status"]) == (202, "bounced")
    made = RefundsTable.from_settings().get_many(["chk_off_0-bounce", "chk_off_1-bounce"])
    assert sorted(made) == ["chk_off_0-bounce"] and int(made["chk_off_0-bounce"]["amount_minor"]) == 4000
