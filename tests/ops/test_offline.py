"""`ops offline record / bounce`: the API's service code, its refusals printed as one red line with their code."""

from functions.payment.schemas import PaymentRequest
from functions.payment.service import place_checkout
from functions.shared.names import offline_reference
from functions.shared.tables import PaymentTables
from tests.ops.support import cli as ops

REFERENCE = offline_reference("chk_ops#USD")


def placed():
    place_checkout(PaymentRequest.model_validate({
        "buyer_info": {}, "checkout_id": "chk_ops", "payment_method": {"type": "money_order"},
        "payment_orders": [{"seller_account": "s", "amount": "45.00", "currency": "USD", "payment_order_id": "po_1"}],
    }))


def test_record_checks_every_field_then_records_once(system):
    placed()
    wrong = ops("offline", "record", "chk_ops", "--amount", "45.10", "--currency", "usd", "--reference", REFERENCE)
    assert wrong.exit_code == 1 and "offline_amount_mismatch" in wrong.output
    assert "offline_receipt" not in PaymentTables.from_settings().get_charge("chk_ops#USD")
    typed = REFERENCE.lower().replace("-", " ")
    done = ops("offline", "record", "chk_ops", "--amount", "45.00", "--currency", "usd", "--reference", typed)
    assert done.exit_code == 0, done.output
    assert "recorded: chk_ops 45.00 USD money_order " + REFERENCE in done.output
    charge = PaymentTables.from_settings().get_charge("chk_ops#USD")
    assert charge["offline_receipt"]["reference"] == REFERENCE and charge["due_at"] <= charge["updated_at"]
    again = ops("offline", "record", "chk_ops", "--amount", "45.00", "--currency", "USD", "--reference", REFERENCE)
    assert again.exit_code == 0 and "recorded before: nothing changed" in again.output


def test_bounce_before_success_is_refused(system):
    placed()
    refused = ops("offline", "bounce", "chk_ops", "--currency", "USD", "--reference", REFERENCE)
    assert refused.exit_code == 1 and "offline_payment_not_recorded" in refused.output
