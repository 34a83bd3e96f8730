"""Internal reconciliation (issue 19): a state built by the workflow's real steps, then broken as a step that
died half-way (or a bad hand) would leave it; each break found under its category with its amount, the
re-drivable ones fixed through the steps themselves, and a second run finds nothing more."""

import json
from datetime import timedelta

import boto3
import pytest

from functions.recon import internal
from functions.recon.internal import Category
from functions.shared import clock
from functions.shared.config import settings
from functions.shared.names import MOVEMENT_SORT_KEY, movement_key
from functions.shared.tables import WalletTable, to_item
from tests.integration.support import paid


@pytest.fixture(autouse=True)
def settled_at_once(monkeypatch):
    """These states are built and broken before the run starts: nothing in them is in flight."""
    monkeypatch.setattr(internal, "SETTLE", timedelta(0))


def db():
    return boto3.client("dynamodb", region_name="us-east-1")


def found(report):
    return sorted((f.category.value, f.seller_account, f.currency, f.amount_minor, tuple(f.ids), f.fixed)
                  for f in report.findings)


def test_a_consistent_state_gives_no_findings(aws_env):
    paid("chk_ok")
    paid("chk_ok2")
    report = internal.reconcile(internal.Tables.from_settings(), fix=True)
    assert report.findings == []
    assert report.checked["orders"] == 4 and report.checked["ledger_transactions"] == 4


def test_every_break_is_found_named_and_the_redrivable_ones_fixed(aws_env):
    paid("chk_ok")
    paid("chk_w", wallet=["chk_w_0"])  # the wallet step died before seller_a's credit
    paid("chk_l", ledger=["chk_l_1"])  # the ledger step died before seller_b's pay-in
    config = settings()
    # A pay-out transferred for an order that does not exist (a record written without its order)
    db().put_item(TableName=config.payouts_table, Item=to_item({
        "payment_order_id": "ghost_0", "payout_status": "TRANSFERRED", "transfer_id": "tr_ghost",
        "seller_account": "seller_c", "currency": "USD", "net_minor": 700}))
    # Refunds committing more than the order's 5.00
    for n, minor in enumerate((300, 400)):
        db().put_item(TableName=config.refunds_table, Item=to_item({
            "refund_id": f"re_{n}", "payment_order_id": "chk_ok_1", "refund_status": "SUCCEEDED",
            "amount_minor": minor, "seller_account": "seller_b", "currency": "USD"}))
    # A ledger transaction written by hand that does not balance
    db().put_item(TableName=config.ledger_table, Item=to_item({
        "transaction_id": "manual#1", "kind": "manual", "reference": "1", "entries": [
            {"account": "seller_pending:seller_d", "amount_minor": -250, "currency": "USD"},
            {"account": "psp_receivable:stripe", "amount_minor": 200, "currency": "USD"}]}))

    report = internal.reconcile(internal.Tables.from_settings(), fix=False)

    assert found(report) == [
        ("ledger_unbalanced", "seller_d", "USD", 50, ("manual#1",), False),
        ("order_success_without_ledger_entry", "seller_b", "USD", 500, ("chk_l_1",), False),
        ("order_success_without_wallet_credit", "seller_a", "USD", 1234, ("chk_w_0",), False),
        ("refund_exceeds_charge", "seller_b", "USD", 200, ("chk_ok_1", "re_0", "re_1"), False),
        ("transfer_without_paid_order", "seller_c", "USD", 700, ("ghost_0", "tr_ghost"), False),
        # the hand-written entry moved seller_d's pending in the ledger only
        ("wallet_ledger_mismatch", "seller_d", "USD", 250, ("seller_d:pending",), False),
    ]
    assert report.summary()["unexplained"] == 6

    fixed = internal.reconcile(internal.Tables.from_settings(), fix=True)
    assert {(f.category, f.fixed) for f in fixed.findings if f.fixed} == {
        (Category.ORDER_SUCCESS_WITHOUT_WALLET_CREDIT, True), (Category.ORDER_SUCCESS_WITHOUT_LEDGER_ENTRY, True)}
    assert len(fixed.unexplained) == 4  # the rest is for a person
    wallet = WalletTable.from_settings()
    assert wallet.balances("seller_a")["USD"]["pending_minor"] == 3 * 1234
    assert wallet.get_movement("payin", "chk_w_0") is not None

    again = internal.reconcile(internal.Tables.from_settings(), fix=True)
    assert not [f for f in again.findings if f.category in (
        Category.ORDER_SUCCESS_WITHOUT_WALLET_CREDIT, Category.ORDER_SUCCESS_WITHOUT_LEDGER_ENTRY)]
    assert len(again.findings) == 4 and not again.fixed


def test_a_lost_movement_record_whose_balance_holds_the_credit_is_not_credited_twice(aws_env):
    paid("chk_m")
    db().delete_item(TableName=settings().wallet_table,
                     Key=to_item({"account_id": movement_key("payin", "chk_m_0"), "sk": MOVEMENT_SORT_KEY}))
    wallet = WalletTable.from_settings()
    before = wallet.balances("seller_a")
    report = internal.reconcile(internal.Tables.from_settings(), fix=True)
    assert found(report) == [("order_success_without_wallet_credit", "seller_a", "USD", 1234, ("chk_m_0",), False)]
    assert wallet.balances("seller_a") == before


@pytest.mark.parametrize("fix", [True, False])
def test_the_run_writes_json_csv_and_html_to_the_settlement_bucket(aws_env, fix):
    paid("chk_w", wallet=["chk_w_1"])
    report, keys = internal.run(fix=fix)
    s3 = boto3.client("s3", region_name="us-east-1")
    body = json.loads(s3.get_object(Bucket=settings().settlement_bucket, Key=keys["json"])["Body"].read())
    assert body["categories"]["order_success_without_wallet_credit"] == {"count": 1, "fixed": int(fix),
                                                                         "amounts": {"USD": 500}}
    assert body["unexplained"] == (0 if fix else 1) and body["findings"][0]["ids"] == ["chk_w_1"]
    csv_text = s3.get_object(Bucket=settings().settlement_bucket, Key=keys["csv"])["Body"].read().decode()
    assert "finding,order_success_without_wallet_credit,seller_b,USD,5.00" in csv_text
    page = s3.get_object(Bucket=settings().settlement_bucket, Key=keys["html"])
    assert page["ContentType"].startswith("text/html") and b"<svg" in page["Body"].read()


def emf_metrics(output: str) -> dict[str, float]:
    """The metric values of the EMF lines (Powertools' CloudWatch embedded metric format) a handler printed."""
    values = {}
    for line in output.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            document = json.loads(line)
            for directive in document["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    values[metric["Name"]] = document[metric["Name"]][0] if isinstance(
                        document[metric["Name"]], list) else document[metric["Name"]]
    return values


def test_the_nightly_handler_publishes_what_it_could_not_fix(aws_env, capsys):
    from functions.recon import internal_handler
    from tests.support.events import FakeContext

    paid("chk_w", wallet=["chk_w_0"])
    db().put_item(TableName=settings().payouts_table, Item=to_item({
        "payment_order_id": "ghost_0", "payout_status": "TRANSFERRED", "transfer_id": "tr_ghost",
        "seller_account": "seller_c", "currency": "USD", "net_minor": 700}))
    capsys.readouterr()

    result = internal_handler.handler({}, FakeContext())  # the schedule's event: fixes what is safe

    assert (result["total"], result["fixed"], result["unexplained"]) == (2, 1, 1)
    assert result["reports"]["html"].startswith("reports/internal/")
    metrics = emf_metrics(capsys.readouterr().out)
    assert metrics["UnexplainedFindings"] == 1 and metrics["FixedFindings"] == 1


def test_what_changed_after_the_cutoff_is_in_flight_and_judged_by_the_next_run(aws_env, monkeypatch):
    monkeypatch.setattr(internal, "SETTLE", timedelta(minutes=5))
    paid("chk_busy", wallet=["chk_busy_0"])  # as the scans see a charge whose wallet step is still running
    # a hand-written ledger entry a second later: seller_a's pending disagrees, but the pair is busy
    db().put_item(TableName=settings().ledger_table, Item=to_item({
        "transaction_id": "manual#2", "kind": "manual", "reference": "2", "created_at": clock.iso(), "entries": [
            {"account": "seller_pending:seller_a", "amount_minor": -100, "currency": "USD"},
            {"account": "psp_receivable:stripe", "amount_minor": 100, "currency": "USD"}]}))
    report = internal.reconcile(internal.Tables.from_settings(), fix=True)
    assert report.findings == []  # neither a false alarm nor a "fix" of work in progress
    assert report.checked["orders_in_flight"] == 2 and report.checked["balances_in_flight"] >= 1
    assert WalletTable.from_settings().get_movement("payin", "chk_busy_0") is None

    clock.advance(5 * 60 + 1)  # the next run: settled, so judged
    report = internal.reconcile(internal.Tables.from_settings(), fix=False)
    assert found(report) == [
        ("order_success_without_wallet_credit", "seller_a", "USD", 1234, ("chk_busy_0",), False),
        ("wallet_ledger_mismatch", "seller_a", "USD", 100, ("seller_a:pending",), False)]


def test_a_redo_that_finds_its_work_done_is_not_counted_as_a_fix(aws_env):
    paid("chk_race")
    tables = internal.Tables.from_settings()
    fixer = internal._Fixer(tables)
    order = tables.payments.get_order("chk_race_0")
    # the wallet step completed between the scans and the fix: the redo applies nothing
    assert fixer.redo(order, fixer.wallet_step) is False and fixer.redo(order, fixer.ledger_step) is False


def test_a_fix_does_not_hide_another_mismatch_of_the_same_seller(aws_env):
    paid("chk_w", wallet=["chk_w_0"])  # seller_a's wallet credit is missing: fixed by the run
    db().put_item(TableName=settings().ledger_table, Item=to_item({  # and, unrelated, a hand-written entry
        "transaction_id": "manual#3", "kind": "manual", "reference": "3", "entries": [
            {"account": "seller_pending:seller_a", "amount_minor": -100, "currency": "USD"},
            {"account": "psp_receivable:stripe", "amount_minor": 100, "currency": "USD"}]}))
    report = internal.reconcile(internal.Tables.from_settings(), fix=True)
    assert found(report) == [
        ("order_success_without_wallet_credit", "seller_a", "USD", 1234, ("chk_w_0",), True),
        ("wallet_ledger_mismatch", "seller_a", "USD", 100, ("seller_a:pending",), False)]
