"""Checks and money orders (issue 17): the payment_method's shape, the reference, the bank deposit parser."""

import io

import pytest
from pydantic import ValidationError

from functions.payment.schemas import OfflinePaymentRequest, PaymentRequest
from functions.recon import parsers
from functions.recon.errors import UnparseableFile
from functions.recon.rows import MalformedRow, RowKind
from functions.shared.money import Money
from functions.shared.names import normal_offline_reference, offline_reference

ORDERS = [{"seller_account": "s", "amount": "45.00", "currency": "USD", "payment_order_id": "po_1"}]


def request(payment_method):
    return PaymentRequest.model_validate({"buyer_info": {}, "checkout_id": "chk_1",
                                          "payment_method": payment_method, "payment_orders": ORDERS})


def error_types(payment_method):
    with pytest.raises(ValidationError) as refused:
        request(payment_method)
    return [error["type"] for error in refused.value.errors()]


@pytest.mark.parametrize("method", ["check", "money_order"])
def test_a_check_or_money_order_needs_no_token_and_is_offline(method):
    placed = request({"type": method})
    assert (placed.offline_method, placed.token, placed.wallet) == (method, method, None)


def test_a_card_is_not_offline_and_keeps_its_token():
    placed = request({"type": "card", "token": "pm_card_visa"})
    assert (placed.offline_method, placed.token) == (None, "pm_card_visa")


@pytest.mark.parametrize(("payment_method", "code"), [
    ({"type": "check", "token": "pm_card_visa"}, "offline_payment_method_has_token"),
    ({"type": "money_order", "wallet": "apple_pay"}, "offline_payment_method_has_token"),
    ({"type": "card"}, "payment_method_token_missing"),
    ({"type": "sepa_debit", "token": "pm_x"}, "mandate_data_missing"),
    ({"type": "us_bank_account"}, "payment_method_token_missing"),
    ({"type": "paypal", "token": "pm_x"}, "return_url_missing"),
    ({"type": "cash"}, "literal_error"),
])
def test_what_is_refused(payment_method, code):
    assert error_types(payment_method) == [code]


def test_the_reference_is_short_stable_unique_per_charge_and_unambiguous():
    reference = offline_reference("chk_1#USD")
    assert reference == offline_reference("chk_1#USD") != offline_reference("chk_1#EUR")
    assert len(reference) == len("MP-XXXXX-XXXXX") and reference.startswith("MP-") and reference[8] == "-"
    assert not set(reference[3:]) & set("ILOU")  # Crockford's base32: nothing to mistake on paper
    many = {offline_reference(f"chk_{n}#USD") for n in range(20_000)}
    assert len(many) == 20_000


def test_a_reference_typed_in_any_case_with_o_for_0_and_l_or_i_for_1_is_the_same():
    reference = "MP-0A1B2-C3D4E"
    for typed in ("mp-0a1b2-c3d4e", "MP 0A1B2 C3D4E", "MPOA1B2C3D4E", "mp-oalb2-c3d4e", "MP-0AIB2-C3D4E", "0A1B2C3D4E"):
        assert normal_offline_reference(typed) == reference, typed
    assert normal_offline_reference("MP-0A1B2-C3D4") == "MP-0A1B2-C3D4"  # too short: never any reference
    assert normal_offline_reference(" xyz ") == "XYZ"


def test_an_offline_payment_amount_is_a_decimal_string_of_the_currencys_decimals():
    assert OfflinePaymentRequest(amount="45.00", currency="USD", reference="r").money() == Money(4500, "USD")
    for amount, currency in ((45, "USD"), ("45.001", "USD"), ("0", "USD"), ("1.5", "JPY")):
        with pytest.raises(ValidationError):
            OfflinePaymentRequest.model_validate({"amount": amount, "currency": currency, "reference": "r"})


def deposits(text):
    return list(parsers.parse("bank", io.BytesIO(text.encode())))


def test_the_bank_file_parser_reads_columns_by_name_and_normalizes_the_reference():
    rows = deposits("Reference,Currency,Amount,Date,Memo\n"
                    "mp-0a1b2-c3d4e,usd,45.00,2026-12-06,x\n\n"
                    "MP-0A1B2-C3D4F,JPY,1200,2026-12-06,\n"
                    "MP-0A1B2-C3D4G,USD,-5.00,2026-12-06,\n"
                    "MP-0A1B2-C3D4H,USD,5.00,06/12/2026,\n")
    first, yen, negative, bad_date = rows
    assert (first.kind, first.psp_reference, first.gross, first.occurred_at.isoformat()) == (
        RowKind.CHARGE, "MP-0A1B2-C3D4E", Money(4500, "USD"), "2026-12-06T00:00:00+00:00")
    assert yen.gross == Money(1200, "JPY")
    assert isinstance(negative, MalformedRow) and isinstance(bad_date, MalformedRow)
    assert negative.psp_reference == "MP-0A1B2-C3D4G"


@pytest.mark.parametrize("text", ["", "date,amount,currency\n2026-12-06,1.00,USD\n"])
def test_a_file_without_the_columns_is_unparseable(text):
    with pytest.raises(UnparseableFile):
        deposits(text)
