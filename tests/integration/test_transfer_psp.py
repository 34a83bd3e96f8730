"""PspClient.transfer against the sandbox through the unmodified stripe SDK: the request Stripe receives, each
refusal's kind, the look-up past the key's lifetime, and the amount check."""

import pytest

from functions.shared import clock, psp
from functions.shared.errors import PspOutcomeUnknown, PspPermanentError, PspTransientError

NET = 1111


def account(restricted=False, sandbox=None):
    made = psp.client()._stripe.v1.accounts.create(params={
        "type": "express", "country": "US", "capabilities": {"transfers": {"requested": True}}}).id
    if restricted:
        sandbox.state.restrict_account(made)
    return made


def charge_id(amount=1234):
    intent = psp.client()._stripe.v1.payment_intents.create(params={
        "amount": amount, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True,
        "payment_method_types": ["card"]})
    return intent.latest_charge


def payout(order_id="po_1", net=NET, checkout_id="chk_1", charge=None):
    return {"payment_order_id": order_id, "checkout_id": checkout_id, "seller_account": "seller_a",
            "currency": "USD", "net_minor": net, "charge_id": charge or charge_id()}


def test_a_transfer_is_made_once_under_the_orders_key_with_its_metadata(sandbox):
    destination = account()
    item = payout()
    first = psp.client().transfer(item, destination, look_up_first=False)
    again = psp.client().transfer(item, destination, look_up_first=False)

    assert first == again and first.outcome == psp.TRANSFERRED and first.transfer_id.startswith("tr_")
    [made] = sandbox.state.transfers.values()
    assert (made.amount, made.currency, made.destination, made.transfer_group) == (NET, "usd", destination, "chk_1")
    assert made.source_transaction == item["charge_id"] and made.idempotency_key == "transfer:po_1"
    assert made.metadata == {"payment_order_id": "po_1", "checkout_id": "chk_1", "seller_account": "seller_a"}


def test_amounts_go_out_in_stripes_units(sandbox):
    destination = account()
    intent = psp.client()._stripe.v1.payment_intents.create(params={
        "amount": 50000, "currency": "isk", "payment_method": "pm_card_visa", "confirm": True,
        "payment_method_types": ["card"]})
    item = {**payout(charge=intent.latest_charge), "currency": "ISK", "net_minor": 450}
    result = psp.client().transfer(item, destination, look_up_first=False)
    assert result.outcome == psp.TRANSFERRED
    assert sandbox.state.transfers[result.transfer_id].amount == 45000  # 450 ISK, two decimals at Stripe


def test_the_platform_balance_short_is_its_own_kind(sandbox):
    destination = account()
    sandbox.state.set_balance_short(True)
    result = psp.client().transfer(payout(), destination, look_up_first=False)
    assert (result.outcome, result.failure_code) == (psp.BALANCE_SHORT, "balance_insufficient")
    assert result.failure_reason


@pytest.mark.parametrize("restricted", [True, False])
def test_a_restricted_or_unknown_destination_is_refused_with_its_reason(sandbox, restricted):
    destination = account(restricted=True, sandbox=sandbox) if restricted else "acct_1Nobody"
    result = psp.client().transfer(payout(), destination, look_up_first=False)
    assert result.outcome == psp.ACCOUNT_REFUSED and result.failure_reason
    assert result.failure_code == ("insufficient_capabilities_for_transfer" if restricted else "resource_missing")
    assert sandbox.state.transfers == {}


def test_another_refusal_is_permanent_never_a_failed_payout(sandbox):
    destination = account()
    with pytest.raises(PspPermanentError):  # the charge cannot fund it: a human looks
        psp.client().transfer(payout(net=5000, charge=charge_id(1234)), destination, look_up_first=False)


@pytest.mark.parametrize("kind", ["http_500", "http_503", "connection_reset", "lost_response"])
def test_unclear_answers_are_transient_and_the_retry_transfers_once(sandbox, kind):
    destination = account()
    item = payout()
    sandbox.faults.push(kind, match={"idempotency_key": "transfer:po_1"})
    with pytest.raises(PspTransientError):
        psp.client().transfer(item, destination, look_up_first=False)
    result = psp.client().transfer(item, destination, look_up_first=False)
    assert result.outcome == psp.TRANSFERRED and len(sandbox.state.transfers) == 1


def test_a_429_is_waited_out_and_the_transfer_is_made_once(sandbox):
    destination = account()
    sandbox.faults.push("rate_limit", match={"idempotency_key": "transfer:po_1"})
    result = psp.client().transfer(payout(), destination, look_up_first=False)
    assert result.outcome == psp.TRANSFERRED and len(sandbox.state.transfers) == 1
    assert sandbox.faults.stats()["injected"]["rate_limit"] == 1


def test_a_stored_500_replayed_for_the_key_is_transient(sandbox):
    destination = account()
    item = payout()
    sandbox.faults.push("http_500", match={"idempotency_key": "transfer:po_1"}, stored=True)
    for _ in range(2):
        with pytest.raises(PspTransientError):
            psp.client().transfer(item, destination, look_up_first=False)


def test_past_the_keys_lifetime_the_transfer_is_found_not_made_again(sandbox):
    destination = account()
    item = payout()
    first = psp.client().transfer(item, destination, look_up_first=False)
    sandbox.advance_clock(25 * 3600)  # the key is pruned

    again = psp.client().transfer(item, destination, look_up_first=True)

    assert again == first and len(sandbox.state.transfers) == 1


def test_the_look_up_matches_the_order_among_its_checkouts_transfers(sandbox):
    destination = account()
    charge = charge_id(10000)
    for n in range(3):
        psp.client().transfer(payout(f"po_{n}", net=100, charge=charge), destination, look_up_first=False)
    found = psp.client().find_transfer("chk_1", "po_1")
    assert found.metadata.payment_order_id == "po_1"
    assert psp.client().find_transfer("chk_1", "po_9") is None
    assert psp.client().find_transfer("chk_other", "po_1") is None


def test_a_transfer_of_the_order_for_another_amount_is_an_unknown_outcome(sandbox):
    destination = account()
    item = payout()
    psp.client()._stripe.v1.transfers.create(params={
        "amount": 999, "currency": "usd", "destination": destination, "transfer_group": "chk_1",
        "source_transaction": item["charge_id"], "metadata": {"payment_order_id": "po_1"}})
    with pytest.raises(PspOutcomeUnknown, match="9.99 USD"):
        psp.client().transfer(item, destination, look_up_first=True)


def test_the_same_key_with_another_amount_is_an_unknown_outcome_never_a_second_transfer(sandbox):
    destination = account()
    item = payout()
    psp.client().transfer(item, destination, look_up_first=False)
    with pytest.raises(PspOutcomeUnknown):
        psp.client().transfer({**item, "net_minor": 1000}, destination, look_up_first=False)
    assert len(sandbox.state.transfers) == 1


def test_the_key_ages_from_the_first_attempt(sandbox):
    first = {"first_transfer_at": clock.iso()}
    assert not psp.transfer_key_aged({}) and not psp.transfer_key_aged(first)
    clock.advance(psp.IDEMPOTENCY_KEY_SAFE_AGE.total_seconds() - 5)
    assert not psp.transfer_key_aged(first)
    clock.advance(10)
    assert psp.transfer_key_aged(first)
