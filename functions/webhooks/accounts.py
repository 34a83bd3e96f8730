"""Connect account events: account.updated and a seller's bank payouts (payout.paid / payout.failed).

account.updated: the account's transfer capability is recorded on its sellers (newest event wins: the event's
`created` orders them), and when transfers are `active` the seller's pay-outs waiting for an account are woken
and sent to the Transfer worker (PayoutsTable.wake_awaiting + functions/payment/payouts.send_to_transfer, as a
seller registration does). The worker asks Stripe: waking one too early only costs a refused transfer. FAILED
pay-outs stay FAILED: a human retries them (`ops payouts retry`).
payout.paid / payout.failed (Connect events, `account` set): the last bank payout recorded on the account's
sellers (newest event wins); a failed one logs a warning with Stripe's reason. Safe in any order and twice.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit

from functions.payment.payouts import send_to_transfer
from functions.shared import clock, psp_units
from functions.shared.tables import PayoutsTable, SellersTable
from functions.webhooks.events import WebhookEvent
from functions.webhooks.metrics import metrics

logger = Logger(service="webhooks")

ACCOUNT_STATE = "psp_account_state"
BANK_PAYOUT = "last_bank_payout"


def account_updated(event: WebhookEvent, sellers: SellersTable | None = None,
                    payouts: PayoutsTable | None = None) -> str:
    account = event.obj
    sellers = sellers or SellersTable.from_settings()
    seller_accounts = sellers.by_psp_account(str(account.get("id", "")))
    if not seller_accounts:
        return "not_ours"
    transfers = str((account.get("capabilities") or {}).get("transfers") or "inactive")
    state = {"account_id": account.get("id"), "transfers": transfers,
             "payouts_enabled": bool(account.get("payouts_enabled")),
             "disabled_reason": (account.get("requirements") or {}).get("disabled_reason")}
    now = clock.iso()
    for seller in seller_accounts:
        sellers.record_psp_fact(seller, ACCOUNT_STATE, state, event.created, now)
    if transfers != "active":
        return "recorded"
    payouts = payouts or PayoutsTable.from_settings()
    woken: list[str] = []
    for seller in seller_accounts:
        woken += payouts.wake_awaiting(seller, now)
    unsent = send_to_transfer(woken)  # unsent ones are due now: the sweeper sends them
    if woken:
        logger.info("pay-outs woken by account.updated", extra={"account": account.get("id"), "woken": len(woken),
                                                                "unsent": len(unsent)})
    return "woken" if woken else "recorded"


def bank_payout(event: WebhookEvent, sellers: SellersTable | None = None) -> str:
    if not event.account:
        return "not_connect"  # the platform's own bank payout: not a seller's
    sellers = sellers or SellersTable.from_settings()
    seller_accounts = sellers.by_psp_account(event.account)
    if not seller_accounts:
        return "not_ours"
    payout = event.obj
    fact = _bank_payout_fact(payout)
    for seller in seller_accounts:
        sellers.record_psp_fact(seller, BANK_PAYOUT, fact, event.created, clock.iso())
    status = fact["status"]
    metrics.add_metric(name=f"SellerBankPayouts_{'failed' if status == 'failed' else 'paid'}",
                       unit=MetricUnit.Count, value=1)
    if event.type == "payout.failed":
        logger.warning("a seller's bank payout failed", extra={
            "sellers": seller_accounts, "account": event.account, "payout_id": fact["payout_id"],
            "failure_code": fact["failure_code"], "failure_message": fact["failure_message"]})
        return "failed_recorded"
    return "paid_recorded"


def _bank_payout_fact(payout: dict[str, Any]) -> dict[str, Any]:
    currency = str(payout.get("currency") or "").upper()
    amount = psp_units.from_stripe_amount(currency, int(payout.get("amount") or 0)) if currency else None
    return {"payout_id": payout.get("id"), "status": payout.get("status"),
            "amount_minor": amount.minor if amount else None, "currency": currency or None,
            "arrival_date": payout.get("arrival_date"), "failure_code": payout.get("failure_code"),
            "failure_message": payout.get("failure_message")}
