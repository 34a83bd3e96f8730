import pytest

from functions.ledger.journal import Entry, Transaction, payin, psp_fee, release, transfer
from functions.shared.errors import UnbalancedTransaction
from functions.shared.money import Money


def test_payin_balances_and_credits_the_seller():
    tx = payin("po_1", "seller_a", Money(1234, "USD"), "stripe")
    assert tx.transaction_id == "payin#po_1"
    assert {e.account: e.amount.minor for e in tx.entries} == {
        "psp_receivable:stripe": 1234, "seller_pending:seller_a": -1234}
    assert tx.payment_order_id == "po_1"


def test_unbalanced_transactions_cannot_be_built():
    with pytest.raises(UnbalancedTransaction):
        Transaction("payin", "po_1", (Entry("a", Money(100, "USD")), Entry("b", Money(-99, "USD"))))


def test_balance_is_per_currency():
    entries = (Entry("a", Money(100, "USD")), Entry("b", Money(-100, "EUR")))
    with pytest.raises(UnbalancedTransaction):
        Transaction("fx", "x", entries)


def test_single_or_zero_entries_are_refused():
    with pytest.raises(UnbalancedTransaction):
        Transaction("x", "1", (Entry("a", Money(0, "USD")), Entry("b", Money(0, "USD"))))
    with pytest.raises(UnbalancedTransaction):
        Transaction("x", "1", (Entry("a", Money(1, "USD")),))


def test_item_round_trip():
    tx = psp_fee("txn_1", Money(59, "USD"), "stripe")
    assert Transaction.from_item(tx.to_item()) == tx


def test_only_a_transaction_that_names_its_order_carries_the_order_index_key():
    entries = (Entry("psp_receivable:stripe", Money(-300, "USD")), Entry("seller_pending:s", Money(300, "USD")))
    refund = Transaction("refund", "re_1", entries, payment_order_id="po_1")
    assert refund.to_item()["payment_order_id"] == "po_1"
    assert Transaction.from_item(refund.to_item()) == refund
    # the key of a sparse index must be absent (an empty or null value would be refused or indexed)
    assert "payment_order_id" not in psp_fee("txn_1", Money(59, "USD"), "stripe").to_item()
    assert payin("po_1", "s", Money(300, "USD"), "stripe").to_item()["payment_order_id"] == "po_1"


def _amounts(tx: Transaction) -> dict[str, int]:
    return {e.account: e.amount.minor for e in tx.entries}


def test_release_moves_the_net_to_available_and_the_commission_to_revenue():
    tx = release("po_1", "s", Money(1001, "USD"), Money(100, "USD"))
    assert (tx.transaction_id, tx.payment_order_id) == ("release#po_1", "po_1")
    assert _amounts(tx) == {"seller_pending:s": 1001, "seller_available:s": -901, "platform_revenue": -100}
    assert Transaction.from_item(tx.to_item()) == tx


@pytest.mark.parametrize(("commission", "expected"), [
    (0, {"seller_pending:s": 500, "seller_available:s": -500}),
    (500, {"seller_pending:s": 500, "platform_revenue": -500}),  # 10000 bps: net 0, no available entry
])
def test_release_omits_a_zero_side_and_still_balances(commission, expected):
    assert _amounts(release("po_1", "s", Money(500, "USD"), Money(commission, "USD"))) == expected


@pytest.mark.parametrize("commission", [-1, 501])
def test_release_refuses_a_commission_outside_the_gross(commission):
    with pytest.raises(UnbalancedTransaction):
        release("po_1", "s", Money(500, "USD"), Money(commission, "USD"))


def test_transfer_pays_the_available_net_out_of_the_psp_receivable_and_names_the_transfer():
    tx = transfer("po_1", "s", Money(901, "USD"), "stripe", "tr_123")
    assert (tx.transaction_id, tx.payment_order_id) == ("transfer#po_1", "po_1")
    assert _amounts(tx) == {"seller_available:s": 901, "psp_receivable:stripe": -901}
    assert "tr_123" in tx.description
    with pytest.raises(UnbalancedTransaction):
        transfer("po_1", "s", Money(0, "USD"), "stripe", "tr_123")


def test_a_cycle_leaves_pending_and_available_empty_and_the_commission_as_revenue():
    gross, commission = Money(1999, "EUR"), Money(1999 * 1234 // 10000, "EUR")
    totals: dict[str, int] = {}
    for tx in (payin("po_1", "s", gross, "stripe"), release("po_1", "s", gross, commission),
               transfer("po_1", "s", gross - commission, "stripe", "tr_1")):
        for account, minor in _amounts(tx).items():
            totals[account] = totals.get(account, 0) + minor
    assert totals == {"psp_receivable:stripe": commission.minor, "seller_pending:s": 0, "seller_available:s": 0,
                      "platform_revenue": -commission.minor}
