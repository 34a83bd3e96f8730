"""Connect through the official SDK: connected accounts, transfers and their refusals, reversals, the platform's
balance, idempotent transfers and faults on them."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import stripe

from psp_sandbox.models import AVAILABLE_AFTER_SECONDS, stripe_fee

from .conftest import pay


def _admin(sandbox, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"{sandbox.url}{path}",
        data=json.dumps(payload).encode() if payload is not None else None,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)


def seller(client: stripe.StripeClient, country: str = "US") -> stripe.Account:
    return client.v1.accounts.create(
        params={"type": "express", "country": country, "capabilities": {"transfers": {"requested": True}}}
    )


def transfer(client: stripe.StripeClient, amount: int, destination: str, *, key: str | None = None, **extra: Any):
    params = {"amount": amount, "currency": "usd", "destination": destination, **extra}
    options = {"idempotency_key": key} if key else {}
    return client.v1.transfers.create(params=params, options=options)  # type: ignore[arg-type]


def refusal(call) -> stripe.InvalidRequestError:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        call()
    return caught.value


# ---- connected accounts ---------------------------------------------------------------------------------------


def test_an_express_account_can_receive_transfers_at_once(client):
    account = client.v1.accounts.create(
        params={
            "type": "express",
            "country": "FR",
            "email": "seller@example.com",
            "capabilities": {"transfers": {"requested": True}},
            "metadata": {"seller_account": "s1"},
        }
    )

    assert isinstance(account, stripe.Account)
    assert account.id.startswith("acct_")
    assert (account.type, account.country, account.default_currency) == ("express", "FR", "eur")
    assert account.capabilities.to_dict() == {"transfers": "active"}
    assert account.requirements.disabled_reason is None
    assert account.payouts_enabled is True
    again = client.v1.accounts.retrieve(account.id)
    assert (again.email, again.metadata["seller_account"]) == ("seller@example.com", "s1")
    assert [a.id for a in client.v1.accounts.list().data] == [account.id]


def test_an_account_without_capabilities_or_of_unknown_type_is_refused(client):
    missing = refusal(lambda: client.v1.accounts.create(params={"type": "custom", "country": "US"}))
    assert (missing.http_status, missing.param) == (400, "capabilities")
    wrong = refusal(lambda: client.v1.accounts.create(params={"type": "platform"}))
    assert wrong.param == "type"
    unknown = refusal(lambda: client.v1.accounts.retrieve("acct_nobody"))
    assert (unknown.http_status, unknown.code) == (404, "resource_missing")


def test_a_restricted_account_refuses_transfers_until_unrestricted(client, sandbox):
    # Given a seller whose requirements went past due
    pi = pay(client, amount=5000)
    account = seller(client)
    restricted = _admin(sandbox, "POST", f"/_sandbox/accounts/{account.id}/restrict", {"reason": "rejected.fraud"})
    assert restricted["capabilities"] == {"transfers": "inactive"}
    shown = client.v1.accounts.retrieve(account.id)
    assert (shown.capabilities.transfers, shown.requirements.disabled_reason) == ("inactive", "rejected.fraud")
    assert shown.payouts_enabled is False

    # When the platform transfers to it, Stripe refuses: no active transfers capability
    refused = refusal(lambda: transfer(client, 1000, account.id, source_transaction=pi.latest_charge))
    assert (refused.http_status, refused.error.type) == (400, "invalid_request_error")
    assert (refused.code, refused.param) == ("insufficient_capabilities_for_transfer", "destination")
    assert "at least one of the following capabilities enabled: transfers" in refused.user_message
    assert sandbox.transfers() == []

    # Then, unrestricted, the same transfer goes through
    _admin(sandbox, "POST", f"/_sandbox/accounts/{account.id}/unrestrict", {})
    assert transfer(client, 1000, account.id, source_transaction=pi.latest_charge).amount == 1000


def test_an_unknown_restriction_reason_is_refused(client, sandbox):
    account = seller(client)
    with pytest.raises(urllib.error.HTTPError) as caught:
        _admin(sandbox, "POST", f"/_sandbox/accounts/{account.id}/restrict", {"reason": "tired"})
    assert caught.value.code == 400


# ---- transfers and their refusals -----------------------------------------------------------------------------


def test_transfer_from_a_charge_to_a_connected_account(client, sandbox):
    pi = pay(client, amount=10000)
    account = seller(client)

    made = transfer(
        client,
        8500,
        account.id,
        source_transaction=pi.latest_charge,
        transfer_group="co_1",
        metadata={"payment_order_id": "po_1", "checkout_id": "co_1"},
        key="transfer:po_1",
    )

    assert isinstance(made, stripe.Transfer)
    assert made.id.startswith("tr_") and made.destination_payment.startswith("py_")
    assert (made.amount, made.currency, made.destination) == (8500, "usd", account.id)
    assert (made.source_transaction, made.transfer_group) == (pi.latest_charge, "co_1")
    assert (made.amount_reversed, made.reversed) == (0, False)
    assert client.v1.transfers.retrieve(made.id).metadata.to_dict() == {
        "payment_order_id": "po_1",
        "checkout_id": "co_1",
    }
    # the transfer's funds follow the charge's: available when the charge's are
    txn = client.v1.balance_transactions.retrieve(made.balance_transaction)
    charge_txn = client.v1.balance_transactions.retrieve(
        client.v1.charges.retrieve(pi.latest_charge).balance_transaction
    )
    assert (txn.amount, txn.fee, txn.type, txn.reporting_category) == (-8500, 0, "transfer", "transfer")
    assert txn.available_on == charge_txn.available_on
    assert sandbox.state.account(account.id).balance == {"usd": 8500}
    assert [(r["transfer_id"], r["idempotency_key"]) for r in sandbox.transfers()] == [(made.id, "transfer:po_1")]


def test_transfer_to_an_account_never_created_is_refused(client):
    pi = pay(client)
    refused = refusal(lambda: transfer(client, 100, "acct_1NotThere", source_transaction=pi.latest_charge))
    assert (refused.http_status, refused.code, refused.param) == (400, "resource_missing", "destination")
    assert refused.user_message == "No such destination: 'acct_1NotThere'"


@pytest.mark.parametrize("amount", [0, -100])
def test_transfer_of_no_money_is_refused(client, amount):
    account = seller(client)
    refused = refusal(lambda: transfer(client, amount, account.id))
    assert (refused.http_status, refused.code, refused.param) == (400, "parameter_invalid_integer", "amount")


def test_transfer_in_another_currency_than_its_source_is_refused(client):
    pi = pay(client, amount=2500, currency="usd")
    account = seller(client)
    refused = refusal(
        lambda: client.v1.transfers.create(
            params={
                "amount": 1000,
                "currency": "eur",
                "destination": account.id,
                "source_transaction": pi.latest_charge,
            }
        )
    )
    assert (refused.http_status, refused.param) == (400, "currency")
    assert refused.user_message == (
        "The currency of source_transaction's balance transaction (usd) must be the same as the transfer currency (eur)"
    )


def test_transfer_from_an_unknown_or_unsucceeded_charge_is_refused(client, sandbox):
    account = seller(client)
    unknown = refusal(lambda: transfer(client, 100, account.id, source_transaction="ch_nothing"))
    assert (unknown.code, unknown.param) == ("resource_missing", "source_transaction")

    with pytest.raises(stripe.CardError) as declined:
        pay(client, "pm_card_chargeDeclined")
    failed = refusal(lambda: transfer(client, 100, account.id, source_transaction=declined.value.error.charge))
    assert (failed.http_status, failed.param) == (400, "source_transaction")
    assert "failed" in failed.user_message

    processing = pay(client, "pm_card_processing")
    pending = refusal(lambda: transfer(client, 100, account.id, source_transaction=processing.latest_charge))
    assert "pending" in pending.user_message
    assert sandbox.transfers() == []


def test_a_source_funds_transfers_up_to_its_amount_less_refunds_and_earlier_transfers(client):
    # Given a charge of 25.00 of which 10.00 were refunded
    pi = pay(client, amount=2500)
    client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 1000})
    account = seller(client)

    # Then 15.01 is too much, 15.00 goes
    over = refusal(lambda: transfer(client, 1501, account.id, source_transaction=pi.latest_charge))
    assert (over.http_status, over.code) == (400, None)
    assert (
        over.user_message == "Transfers using this transaction as a source must not exceed the source amount of $15.00."
    )
    first = transfer(client, 1400, account.id, source_transaction=pi.latest_charge)

    # And a second transfer from the same source is told what the first took (how Stripe answers a duplicate)
    again = refusal(lambda: transfer(client, 101, account.id, source_transaction=pi.latest_charge))
    assert again.user_message == (
        "Transfers using this transaction as a source must not exceed the source amount of $15.00. "
        "(There is already a transfer using this source, amounting to $14.00.)"
    )
    assert transfer(client, 100, account.id, source_transaction=pi.latest_charge).amount == 100

    # And a reversal gives the source back what it took
    client.v1.transfers.reversals.create(first.id, params={"amount": 400})
    assert transfer(client, 400, account.id, source_transaction=pi.latest_charge).amount == 400


def test_without_a_source_the_available_balance_must_cover_the_transfer(client, sandbox):
    # Given a charge whose funds are still pending
    pay(client, amount=1000)  # net 1000 - 59 = 941
    account = seller(client)

    # Then a transfer without source_transaction is refused: nothing is available yet
    refused = refusal(lambda: transfer(client, 100, account.id))
    assert (refused.http_status, refused.error.type, refused.code) == (
        400,
        "invalid_request_error",
        "balance_insufficient",
    )
    assert refused.user_message.startswith("Insufficient funds in your Stripe account.")

    # When the funds become available, transfers go up to the available balance
    sandbox.advance_clock(AVAILABLE_AFTER_SECONDS)
    assert refusal(lambda: transfer(client, 942, account.id)).code == "balance_insufficient"
    assert transfer(client, 941, account.id).amount == 941
    assert refusal(lambda: transfer(client, 1, account.id)).code == "balance_insufficient"


def test_the_balance_switch_refuses_every_transfer_until_reset(client, sandbox):
    pi = pay(client, amount=5000)
    account = seller(client)

    shown = _admin(sandbox, "POST", "/_sandbox/balance", {"short": True})
    assert shown["short"] is True
    refused = refusal(lambda: transfer(client, 1000, account.id, source_transaction=pi.latest_charge, key="t1"))
    assert refused.code == "balance_insufficient"
    assert sandbox.transfers() == []

    # A refusal is not stored for its key: the retry after the balance is back runs
    _admin(sandbox, "POST", "/_sandbox/balance", {"short": False})
    made = transfer(client, 1000, account.id, source_transaction=pi.latest_charge, key="t1")
    assert "Idempotent-Replayed" not in made.last_response.headers
    assert _admin(sandbox, "GET", "/_sandbox/balance")["short"] is False


def test_the_restriction_wins_over_a_short_balance(client, sandbox):
    pi = pay(client, amount=5000)
    account = seller(client)
    sandbox.state.set_balance_short(True)
    sandbox.state.restrict_account(account.id)
    refused = refusal(lambda: transfer(client, 1000, account.id, source_transaction=pi.latest_charge))
    assert refused.code == "insufficient_capabilities_for_transfer"


# ---- lists ----------------------------------------------------------------------------------------------------


def test_list_transfers_by_group_and_destination_page_by_page(client):
    pi = pay(client, amount=10000)
    a, b = seller(client), seller(client)
    made = [
        transfer(client, 100 + i, dest, source_transaction=pi.latest_charge, transfer_group=group)
        for i, (dest, group) in enumerate([(a.id, "co_1"), (b.id, "co_1"), (a.id, "co_2"), (a.id, "co_1")])
    ]

    by_group = client.v1.transfers.list(params={"transfer_group": "co_1"})
    assert [t.id for t in by_group.data] == [made[3].id, made[1].id, made[0].id]  # newest first
    both = client.v1.transfers.list(params={"transfer_group": "co_1", "destination": a.id})
    assert [t.id for t in both.data] == [made[3].id, made[0].id]

    page = client.v1.transfers.list(params={"destination": a.id, "limit": 2})
    assert ([t.id for t in page.data], page.has_more) == ([made[3].id, made[2].id], True)
    rest = client.v1.transfers.list(params={"destination": a.id, "limit": 2, "starting_after": made[2].id})
    assert ([t.id for t in rest.data], rest.has_more) == ([made[0].id], False)
    assert client.v1.transfers.list(params={"transfer_group": "co_none"}).data == []


# ---- reversals ------------------------------------------------------------------------------------------------


def test_partial_then_full_reversal(client, sandbox):
    pi = pay(client, amount=5000)
    account = seller(client)
    made = transfer(
        client, 3000, account.id, source_transaction=pi.latest_charge, metadata={"payment_order_id": "po_1"}
    )

    first = client.v1.transfers.reversals.create(made.id, params={"amount": 1000, "metadata": {"refund_id": "r1"}})
    assert isinstance(first, stripe.TransferReversal)
    assert first.id.startswith("trr_") and first.destination_payment_refund.startswith("pyr_")
    assert (first.amount, first.transfer, first.currency) == (1000, made.id, "usd")
    txn = client.v1.balance_transactions.retrieve(first.balance_transaction)
    assert (txn.amount, txn.fee, txn.type, txn.reporting_category) == (1000, 0, "transfer_refund", "transfer_reversal")
    partly = client.v1.transfers.retrieve(made.id)
    assert (partly.amount_reversed, partly.reversed) == (1000, False)

    rest = client.v1.transfers.reversals.create(made.id)  # no amount: all that is left
    assert rest.amount == 2000
    whole = client.v1.transfers.retrieve(made.id)
    assert (whole.amount_reversed, whole.reversed) == (3000, True)
    assert [r.id for r in whole.reversals.data] == [rest.id, first.id]
    assert [r.id for r in client.v1.transfers.reversals.list(made.id).data] == [rest.id, first.id]
    assert client.v1.transfers.reversals.retrieve(made.id, first.id).metadata["refund_id"] == "r1"
    assert sandbox.state.account(account.id).balance == {"usd": 0}

    done = refusal(lambda: client.v1.transfers.reversals.create(made.id, params={"amount": 1}))
    assert done.code == "transfer_already_reversed"


def test_a_reversal_beyond_the_transfer_is_refused(client):
    pi = pay(client, amount=5000)
    made = transfer(client, 3000, seller(client).id, source_transaction=pi.latest_charge)
    refused = refusal(lambda: client.v1.transfers.reversals.create(made.id, params={"amount": 3001}))
    assert (refused.code, refused.param) == ("amount_too_large", "amount")
    unknown = refusal(lambda: client.v1.transfers.reversals.create("tr_nothing", params={"amount": 1}))
    assert (unknown.http_status, unknown.code) == (404, "resource_missing")


def test_a_reversal_is_refused_when_the_connected_account_paid_the_money_out(client, sandbox):
    # Given a seller who paid 25.00 of a 30.00 transfer out to their bank
    pi = pay(client, amount=5000)
    account = seller(client)
    made = transfer(client, 3000, account.id, source_transaction=pi.latest_charge)
    _admin(sandbox, "POST", f"/_sandbox/accounts/{account.id}/payout", {"amount": 2500, "currency": "usd"})

    # Then the platform can take back 5.00, not more
    refused = refusal(lambda: client.v1.transfers.reversals.create(made.id, params={"amount": 501}))
    assert (refused.http_status, refused.code) == (400, "balance_insufficient")
    assert client.v1.transfers.reversals.create(made.id, params={"amount": 500}).amount == 500
    assert client.v1.transfers.retrieve(made.id).amount_reversed == 500


def test_a_reversal_with_a_key_is_made_once(client, sandbox):
    pi = pay(client, amount=5000)
    made = transfer(client, 3000, seller(client).id, source_transaction=pi.latest_charge)
    options = {"idempotency_key": "reverse:po_1"}
    first = client.v1.transfers.reversals.create(made.id, params={"amount": 700}, options=options)
    again = client.v1.transfers.reversals.create(made.id, params={"amount": 700}, options=options)
    assert again.id == first.id
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert client.v1.transfers.retrieve(made.id).amount_reversed == 700


# ---- the platform's balance -----------------------------------------------------------------------------------


def test_balance_charges_add_transfers_take(client, sandbox):
    pi = pay(client, amount=10000)
    account = seller(client)
    net = 10000 - stripe_fee(10000)
    balance = client.v1.balance.retrieve()
    assert isinstance(balance, stripe.Balance)
    assert ([b.to_dict() for b in balance.pending], balance.available) == ([{"amount": net, "currency": "usd"}], [])

    transfer(client, 6000, account.id, source_transaction=pi.latest_charge)  # taken from the pending funds
    assert [b.amount for b in client.v1.balance.retrieve().pending] == [net - 6000]

    sandbox.advance_clock(AVAILABLE_AFTER_SECONDS)
    after = client.v1.balance.retrieve()
    assert ([b.amount for b in after.available], after.pending) == ([net - 6000], [])
    transfer(client, 1000, account.id)
    assert [b.amount for b in client.v1.balance.retrieve().available] == [net - 7000]


# ---- idempotent transfers and faults ----------------------------------------------------------------------------


def test_a_transfer_key_replays_the_transfer_and_refuses_other_parameters(client, sandbox):
    pi = pay(client, amount=5000)
    account = seller(client)
    first = transfer(client, 3000, account.id, source_transaction=pi.latest_charge, key="transfer:po_1")
    again = transfer(client, 3000, account.id, source_transaction=pi.latest_charge, key="transfer:po_1")
    assert again.id == first.id
    assert again.last_response.headers["Idempotent-Replayed"] == "true"

    with pytest.raises(stripe.IdempotencyError) as caught:
        transfer(client, 3001, account.id, source_transaction=pi.latest_charge, key="transfer:po_1")
    assert caught.value.http_status == 400
    assert len(sandbox.transfers()) == 1


def test_a_transfer_key_in_flight_gets_409(client, sandbox):
    pi = pay(client, amount=5000)
    account = seller(client)
    sandbox.faults.push("latency", match={"path": "/v1/transfers"}, delay_ms=600)
    results: dict[str, Any] = {}
    args = (client, 3000, account.id)
    first = threading.Thread(
        target=lambda: results.setdefault(
            "first", transfer(*args, source_transaction=pi.latest_charge, key="transfer:po_1")
        )
    )
    first.start()
    time.sleep(0.2)
    with pytest.raises(stripe.APIError) as caught:
        transfer(*args, source_transaction=pi.latest_charge, key="transfer:po_1")
    first.join()
    assert (caught.value.http_status, caught.value.error.code) == (409, "idempotency_key_in_use")
    assert [r["transfer_id"] for r in sandbox.transfers()] == [results["first"].id]


def test_lost_answer_of_a_transfer_then_the_retry_gets_it(client, sandbox):
    pi = pay(client, amount=5000)
    account = seller(client)
    sandbox.faults.push("lost_response", match={"path": "/v1/transfers", "metadata": {"payment_order_id": "po_1"}})
    params = {"source_transaction": pi.latest_charge, "metadata": {"payment_order_id": "po_1"}}

    with pytest.raises(stripe.APIConnectionError):
        transfer(client, 3000, account.id, key="transfer:po_1", **params)
    records = sandbox.transfers()
    assert len(records) == 1  # made, answer lost

    replay = transfer(client, 3000, account.id, key="transfer:po_1", **params)
    assert replay.id == records[0]["transfer_id"]
    assert replay.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(sandbox.transfers()) == 1


def test_a_stored_500_of_a_transfer_is_replayed_for_its_key(client, sandbox):
    pi = pay(client, amount=5000)
    account = seller(client)
    sandbox.faults.push("http_500", match={"path": "/v1/transfers"}, stored=True)
    with pytest.raises(stripe.APIError) as first:
        transfer(client, 3000, account.id, source_transaction=pi.latest_charge, key="transfer:po_1")
    with pytest.raises(stripe.APIError) as again:
        transfer(client, 3000, account.id, source_transaction=pi.latest_charge, key="transfer:po_1")
    assert (first.value.http_status, again.value.http_status) == (500, 500)
    assert again.value.headers["Idempotent-Replayed"] == "true"
    assert sandbox.transfers() == []


def test_seeded_faults_on_the_transfers_path_only(client, sandbox):
    pi = pay(client, amount=5000)
    account = seller(client)
    sandbox.faults.configure(seed=7, rates={"http_503": 1.0}, paths=["/v1/transfers"])

    with pytest.raises(stripe.APIError) as caught:
        transfer(client, 1000, account.id, source_transaction=pi.latest_charge, key="transfer:po_1")
    assert caught.value.http_status == 503
    assert pay(client, amount=1000).status == "succeeded"  # other paths untouched
    assert client.v1.accounts.retrieve(account.id).id == account.id
    assert sandbox.transfers() == []
    assert sandbox.faults.stats()["injected"] == {"http_503": 1}


def test_a_bypass_pending_charge_is_available_at_once(client, make_client):
    account = seller(client)
    pay(client, "pm_card_bypassPending", amount=1000)
    assert [b.amount for b in client.v1.balance.retrieve().available] == [1000 - stripe_fee(1000)]
    assert transfer(client, 941, account.id).amount == 941

    # its number, as Stripe.js sends it, does the same
    pm = client.v1.payment_methods.create(
        params={"type": "card", "card": {"number": "4000000000000077", "exp_month": 12, "exp_year": 2040, "cvc": "123"}}
    )
    pay(client, pm.id, amount=2000)
    assert transfer(client, 2000 - stripe_fee(2000), account.id).amount == 1912
    assert refusal(lambda: transfer(client, 1, account.id)).code == "balance_insufficient"


def test_admin_ground_truth_and_reset(client, sandbox):
    pi = pay(client, amount=5000)
    account = seller(client)
    made = transfer(client, 3000, account.id, source_transaction=pi.latest_charge, key="transfer:po_1")
    client.v1.transfers.reversals.create(made.id, params={"amount": 1000})

    [record] = _admin(sandbox, "GET", "/_sandbox/transfers")["data"]
    assert (record["transfer_id"], record["amount"], record["amount_reversed"]) == (made.id, 3000, 1000)
    assert (record["source_transaction"], record["idempotency_key"]) == (pi.latest_charge, "transfer:po_1")
    [held] = _admin(sandbox, "GET", "/_sandbox/accounts")["data"]
    assert (held["account_id"], held["balance"], held["disabled_reason"]) == (account.id, {"usd": 2000}, None)
    with pytest.raises(urllib.error.HTTPError) as caught:  # a bank payout beyond the account's balance
        _admin(sandbox, "POST", f"/_sandbox/accounts/{account.id}/payout", {"amount": 2001, "currency": "usd"})
    assert caught.value.code == 400

    _admin(sandbox, "POST", "/_sandbox/balance", {"short": True})
    _admin(sandbox, "POST", "/_sandbox/reset", {})
    assert _admin(sandbox, "GET", "/_sandbox/accounts") == {"data": []}
    assert _admin(sandbox, "GET", "/_sandbox/transfers") == {"data": []}
    assert _admin(sandbox, "GET", "/_sandbox/balance") == {"short": False, "available": {}, "pending": {}}
