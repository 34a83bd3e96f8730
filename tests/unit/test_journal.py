import pytest

from functions.ledger.journal import Entry, Transaction, payin, psp_fee
from functions.shared.errors import UnbalancedTransaction
from functions.shared.money import Money


def test_payin_balances_and_credits_the_seller():
    tx = payin("po_1", "seller_a", Money(1234, "USD"), "stripe")
    assert tx.transaction_id == "payin#po_1"
    assert {e.account: e.amount.minor for e in tx.entries} == {
        "psp_receivable:stripe": 1234, "seller_payable:seller_a": -1234}


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
    entries = (Entry("psp_receivable:stripe", Money(-300, "USD")), Entry("seller_payable:s", Money(300, "USD")))
    refund = Transaction("refund", "re_1", entries, payment_order_id="po_1")
    assert refund.to_item()["payment_order_id"] == "po_1"
    assert Transaction.from_item(refund.to_item()) == refund
    # the key of a sparse index must be absent (an empty or null value would be refused or indexed)
    assert "payment_order_id" not in payin("po_1", "s", Money(300, "USD"), "stripe").to_item()
