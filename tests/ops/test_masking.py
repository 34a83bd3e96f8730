"""Payment-method tokens never appear in full in anything the tool prints."""

import json

from ops.masking import mask, mask_text, mask_token
from ops.messages import Summary


def test_tokens_keep_their_kind_and_last_four_only():
    assert mask_token("pm_1QxYzSecretToken9876") == "pm_…9876"
    assert mask_token("pm_card_visa") == "pm_…visa"
    assert mask_token("tok_ab") == "tok_…"
    assert mask_token("opaque-value-1234") == "…1234"


def test_mask_finds_tokens_under_any_key_and_inside_text():
    body = {
        "payment_method": "opaque-value-1234",
        "input": {"payment_method": "pm_1QxYzSecretToken9876", "seller_account": "acct_1"},
        "error": {"Cause": json.dumps({"errorMessage": "No such PaymentMethod: 'pm_1QxYzSecretToken9876'"})},
        "list": ["tok_visa_4242_secret", 7],
    }
    shown = json.dumps(mask(body), ensure_ascii=False)
    assert "SecretToken" not in shown and "opaque-value" not in shown and "4242_secret" not in shown
    assert "acct_1" in shown and "pm_…9876" in shown
    assert mask_text("card card_1AbCdEfGhIj and src_9") == "card card_…GhIj and src_…"


def test_summary_reads_both_dead_letter_shapes_and_order_messages():
    sweeper = Summary.of({"payment_order_id": "po_1", "step": "sweeper", "error": "EXECUTING after 5 attempts",
                          "attempts": 5, "checkout_id": "c"})
    assert (sweeper.payment_order_id, sweeper.step, sweeper.error, sweeper.attempts) == (
        "po_1", "sweeper", "EXECUTING after 5 attempts", 5)
    workflow = Summary.of({"step": "workflow", "attempts": 2, "execution": "po_2-2",
                           "error": {"Error": "States.Timeout", "Cause": "task timed out"},
                           "input": {"payment_order_id": "po_2"}})
    assert (workflow.payment_order_id, workflow.error, workflow.extra) == (
        "po_2", "States.Timeout: task timed out", {"execution": "po_2-2"})
    charge = Summary.of({"charge_key": "chk_3#USD", "step": "sweeper", "attempts": 5,
                         "payment_order_ids": ["po_3", "po_4"]})
    assert (charge.charge_key, charge.payment_order_id, charge.step) == ("chk_3#USD", "po_3, po_4", "sweeper")
    from_machine = Summary.of({"charge_key": "chk_3#USD", "step": "CreditWallet", "attempts": 1,
                               "input": {"charge_key": "chk_3#USD", "orders": [{"payment_order_id": "po_3"}]}})
    assert (from_machine.charge_key, from_machine.payment_order_id) == ("chk_3#USD", "po_3")
    message = Summary.of({"charge_key": "chk_3#USD", "checkout_id": "chk_3"})
    assert (message.step, message.charge_key) == ("start (charge message)", "chk_3#USD")
    recon = Summary.of({"Records": [{"s3": {"bucket": {"name": "b"}, "object": {"key": "incoming/f.csv"}}}]})
    assert recon.step == "recon" and recon.extra == {"file": "s3://b/incoming/f.csv"}
    review = Summary.of({"discrepancy_id": "d1", "category": "amount_mismatch", "explanation": "fee differs",
                         "payment_order_id": "po_4", "source_key": "incoming/s.csv", "line": 7,
                         "our_amount": "12.34", "our_currency": "USD", "their_amount": "12.00",
                         "their_currency": "USD"})
    assert (review.payment_order_id, review.step, review.error) == ("po_4", "review", "amount_mismatch: fee differs")
    assert review.extra == {"file": "incoming/s.csv line 7", "amounts": "ours 12.34 USD, theirs 12.00 USD"}
    assert Summary.of(None).error == "(body is not JSON)"


def test_a_webhook_dead_letter_shows_no_buyer_name_email_or_phone():
    charge = {"id": "ch_1", "object": "charge", "receipt_email": "ada@example.com",
              "billing_details": {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+44 20 7946 0000",
                                  "address": {"line1": "12 St James's Square", "postal_code": "SW1Y 4JH"}},
              "payment_method_details": {"card": {"brand": "visa", "last4": "4242"}},
              "metadata": {"charge_key": "chk_1#USD"}, "outcome": {"seller_message": "Payment complete."}}
    body = {"id": "evt_1", "type": "charge.succeeded", "data": {"object": charge},
            "error": "KeyError: no order for ada@example.com"}

    shown = json.dumps(mask(body), ensure_ascii=False)

    for personal in ("Ada", "ada@", "7946", "James", "SW1Y"):
        assert personal not in shown
    assert "…@example.com" in shown  # which domain: enough to tell a test buyer from a real one
    assert "chk_1#USD" in shown and "4242" in shown and "Payment complete." in shown
    assert mask({"queue": {"name": "OrdersDlq"}})["queue"]["name"] == "OrdersDlq"  # a name that is no person's
