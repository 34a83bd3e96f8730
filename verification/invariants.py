"""The invariants of architecture.md, checked from the outside against the PSP's own records and the tables.

`check(snapshot)` is pure: it takes what `collect(...)` read (or data a test fabricated) and returns one
result per invariant, each with its violations. The chaos run, the demo and the tests all use it; the
mutation tests prove it catches what it claims.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from functions.shared import adyen_units, psp_units
from functions.shared.money import Money
from functions.shared.names import BALANCE_SORT_PREFIX, PAYIN, TRANSFER, charge_key

FINAL = {"SUCCESS", "FAILED"}
ORDER_OF = {"NOT_STARTED": 0, "EXECUTING": 1, "SUCCESS": 2, "FAILED": 2}
# Pay-out statuses (issue 15): FAILED -> RELEASED is the one move back, made only by `ops payouts retry`.
PAYOUT_ORDER_OF = {"HELD": 0, "RELEASED": 1, "TRANSFERRING": 2, "TRANSFERRED": 3, "FAILED": 3}
PAYOUT_OPEN = {"RELEASED", "TRANSFERRING"}


@dataclass
class Snapshot:
    orders: list[dict[str, Any]]
    ledger: list[dict[str, Any]]
    wallet: list[dict[str, Any]]
    # The PSP's own record of every charge attempt (the sandbox's /_sandbox/charges): charge_id, payment_intent,
    # amount, currency, status, metadata (checkout_id, charge_key) of its PaymentIntent.
    psp_charges: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    # payment_order_id -> statuses in the order they were observed (GETs during the run)
    observed_statuses: dict[str, list[str]] = field(default_factory=dict)
    # (request, first answer, second answer) of replayed requests; conflicting replays with what they changed
    replays: list[dict[str, Any]] = field(default_factory=list)
    # orders accepted with a 2xx that a read right after did not return
    unreadable_after_write: list[str] = field(default_factory=list)
    accepted_order_ids: list[str] = field(default_factory=list)
    # checkout_id -> whether the card the storefront used succeeds (the workload knows; empty: not checked)
    card_succeeds: dict[str, bool] = field(default_factory=dict)
    # Pay-outs (issue 15): the Payouts and Sellers tables; the PSP's own record of every transfer (id, amount,
    # currency, destination, metadata.payment_order_id, amount_reversed) and of each connected account's balance
    # (acct_ -> currency -> minor units, available and pending together).
    payouts: list[dict[str, Any]] = field(default_factory=list)
    sellers: list[dict[str, Any]] = field(default_factory=list)
    psp_transfers: list[dict[str, Any]] = field(default_factory=list)
    psp_account_balances: dict[str, dict[str, int]] = field(default_factory=dict)
    # payment_order_id -> pay-out statuses in the order they were observed; the orders the storefront was told
    # were released (202/200); those `ops payouts retry` moved FAILED -> RELEASED
    observed_payout_statuses: dict[str, list[str]] = field(default_factory=dict)
    released_order_ids: list[str] = field(default_factory=list)
    retried_payouts: list[str] = field(default_factory=list)
    # the system's time when the snapshot was taken (ISO, as stored): a HELD pay-out past auto_release_at is late
    now: str = ""
    # Refunds (issue 16 a): the Refunds table (a SUCCEEDED reversal took its seller_share back from the transfer).
    refunds: list[dict[str, Any]] = field(default_factory=list)
    # refund_id -> payment_order_id of every refund the API accepted (202/200); what the storefront saw that no
    # correct system answers (a replay answered differently, a refund past the order's amount accepted)
    accepted_refunds: dict[str, str] = field(default_factory=dict)
    refund_answers_wrong: list[str] = field(default_factory=list)
    # Disputes (issue 16): the Disputes table (each dispute's parts and their steps).
    disputes: list[dict[str, Any]] = field(default_factory=list)
    # the PSP's own disputes (the sandbox's Dispute objects: id, charge, amount, status, balance_transactions) and
    # what the storefront's admin calls saw that no correct PSP answers; None: disputes not checked
    psp_disputes: list[dict[str, Any]] | None = None
    dispute_answers_wrong: list[str] = field(default_factory=list)
    # Failover (issue 18): the Adyen sandbox's own payments (pspReference, merchantReference = our charge key,
    # resultCode, amount {currency, value} in Adyen's units, refunded, cancelled); None: Adyen not in the run (then
    # every order must be Stripe's, and invariant 8 has nothing to compare)
    adyen_payments: list[dict[str, Any]] | None = None
    # the run had a PSP outage (--stripe-outage): a charge parked and never sent may end FAILED `psp_unavailable`
    # (after psp_unavailable_fail_after_s) whatever the buyer's card, provided no PSP charged it (invariants 1 and 8)
    psp_outage: bool = False


@dataclass
class Result:
    number: int
    name: str
    violations: list[str]

    @property
    def ok(self) -> bool:
        return not self.violations


def check(snap: Snapshot) -> list[Result]:
    return [
        Result(1, "at most one successful PSP charge per checkout and currency, for the sum of its orders, "
                  "whose outcome they share; at most one transfer per order, never more than its released net; "
                  "each connected account holds what we transferred to it; refunds never pass what was charged "
                  "and the PSP refunded exactly what our refunds say",
               _one_charge(snap) + _one_transfer(snap) + _accounts_hold_our_transfers(snap)
               + _refunds_within_charges(snap)),
        Result(2, "every accepted order is final or dead-lettered; every released order TRANSFERRED, FAILED, "
                  "awaiting its seller or dead-lettered; every accepted refund final or dead-lettered",
               _all_final_or_dead_lettered(snap) + _payouts_final(snap) + _refunds_final(snap)),
        Result(3, "ledger transactions balance per currency; accounts sum to zero", _ledger_balances(snap)),
        Result(4, "seller wallets equal the sellers' ledger entries, bucket by bucket; every dispute booked once",
               _wallet_matches_ledger(snap) + _disputes_booked(snap) + _disputes_as_decided(snap)),
        Result(5, "no order or pay-out status moves backwards", _no_backwards(snap) + _no_payout_backwards(snap)),
        Result(6, "replays answer the same; conflicts change nothing", _replays(snap)
               + list(snap.refund_answers_wrong)),
        Result(7, "after a 2xx the caller reads what it wrote", list(snap.unreadable_after_write)),
        Result(8, "no charge paid at two PSPs; each SUCCESS order charged once, for its charge's sum, at the PSP it "
                  "records, a FAILED one authorised nowhere; Adyen refunded exactly what our refunds say",
               _one_psp_per_charge(snap)),
    ]


ADYEN = "adyen"


def _psp_of(order: dict[str, Any]) -> str:
    return str(order.get("psp") or "stripe")


def _adyen_authorised(snap: Snapshot) -> dict[str, list[dict[str, Any]]]:
    """Adyen's authorised (not cancelled) payments by our charge key, its merchantReference."""
    authorised: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for payment in snap.adyen_payments or []:
        if payment.get("resultCode") == "Authorised" and not payment.get("cancelled"):
            authorised[str(payment.get("merchantReference"))].append(payment)
    return authorised


def _one_psp_per_charge(snap: Snapshot) -> list[str]:
    """Invariant 8 (failover): compared by charge key (Stripe's metadata, Adyen's merchantReference), no charge is
    paid at both PSPs; an order recording Adyen is SUCCESS only with exactly one authorised Adyen payment of its
    charge for its orders' sum (the same pspReference), FAILED only with none; Adyen charges no order that records
    another PSP; Adyen's refunded amount of a payment is our SUCCEEDED refunds of its orders."""
    orders_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for order in snap.orders:
        orders_of[charge_key(order["checkout_id"], order["currency"])].append(order)
    adyen_orders = [o for o in snap.orders if _psp_of(o) == ADYEN]
    if snap.adyen_payments is None:
        return [f"{o['payment_order_id']}: records psp adyen but the run had no Adyen" for o in adyen_orders]
    stripe_paid, _ = _succeeded_charges(snap.psp_charges)
    authorised = _adyen_authorised(snap)
    violations = [f"{key}: paid at both PSPs (Stripe {', '.join(c['charge_id'] for c in stripe_paid[key])}, "
                  f"Adyen {', '.join(str(p['pspReference']) for p in authorised[key])})"
                  for key in sorted(set(stripe_paid) & set(authorised))]
    for key, payments in sorted(authorised.items()):
        orders = orders_of.get(key, [])
        psps = {_psp_of(o) for o in orders}
        if psps != {ADYEN}:
            violations.append(f"{key}: authorised at Adyen ({', '.join(str(p['pspReference']) for p in payments)}) "
                              f"but its orders record {sorted(psps) or 'nothing'}")
            continue
        if len(payments) > 1:
            violations.append(f"{key}: {len(payments)} authorised Adyen payments "
                              f"({', '.join(str(p['pspReference']) for p in payments)})")
        currency = orders[0]["currency"]
        total = sum(int(o["amount_minor"]) for o in orders)
        for payment in payments:
            charged = adyen_units.from_adyen_amount(payment["amount"])
            if charged != Money(total, currency):
                violations.append(f"{key}: Adyen charged {charged} ({payment['pspReference']}) but its orders sum "
                                  f"to {Money(total, currency)}")
    references = {key: {str(p["pspReference"]) for p in payments} for key, payments in authorised.items()}
    for order in adyen_orders:
        key = charge_key(order["checkout_id"], order["currency"])
        order_id, status = order["payment_order_id"], order["payment_order_status"]
        if status == "SUCCESS" and len(references.get(key, ())) != 1:
            violations.append(f"{order_id}: SUCCESS at Adyen with {len(references.get(key, ()))} authorised "
                              f"payments of {key}")
        elif status == "SUCCESS" and order.get("psp_reference") not in references[key]:
            violations.append(f"{order_id}: SUCCESS naming {order.get('psp_reference')}, not Adyen's payment of "
                              f"{key} ({', '.join(sorted(references[key]))})")
        if status == "FAILED" and references.get(key):
            violations.append(f"{order_id}: FAILED but Adyen authorised {key} ({', '.join(sorted(references[key]))})")
    return violations + _adyen_refunds_match(snap, authorised)


def _adyen_refunds_match(snap: Snapshot, authorised: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Per authorised Adyen payment: what Adyen holds refunded (received and not refused) equals our SUCCEEDED
    refunds of the charge's orders (a refund is final in our books once Adyen's REFUND notification came)."""
    orders = {o["payment_order_id"]: o for o in snap.orders}
    ours: dict[str, int] = defaultdict(int)
    for refund in snap.refunds:
        order = orders.get(refund["payment_order_id"])
        if order and _psp_of(order) == ADYEN and refund.get("refund_status") == "SUCCEEDED":
            ours[charge_key(order["checkout_id"], order["currency"])] += int(refund["amount_minor"])
    violations = []
    for key, payments in sorted(authorised.items()):
        currency = str(payments[0]["amount"]["currency"])
        refunded = sum(adyen_units.from_adyen_amount({"currency": currency, "value": int(p.get("refunded") or 0)}).minor
                       for p in payments)
        if refunded != ours.get(key, 0):
            violations.append(f"{key}: Adyen refunded {refunded}, our SUCCEEDED refunds say {ours.get(key, 0)}")
    return violations


def _one_charge(snap: Snapshot) -> list[str]:
    """Invariant 1 for the charge-per-checkout cycle. Amounts compare as the PSP holds them: the workload charges
    USD, EUR and JPY, whose Stripe units are ISO's minor units (ISK or UGX would need Stripe's units first)."""
    succeeded, violations = _succeeded_charges(snap.psp_charges)
    orders_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for order in snap.orders:
        if _psp_of(order) != ADYEN:  # an Adyen order's charge is Adyen's: invariant 8 holds it to Adyen's books
            orders_of[charge_key(order["checkout_id"], order["currency"])].append(order)
    for key, charges in succeeded.items():
        if len(charges) > 1:
            ids = ", ".join(c["charge_id"] for c in charges)
            violations.append(f"{key}: {len(charges)} successful charges ({ids})")
        total = sum(int(o["amount_minor"]) for o in orders_of.get(key, []))
        violations += [f"{key}: charged {c['amount']} ({c['charge_id']}) but its orders sum to {total}"
                       for c in charges if int(c["amount"]) != total]
    for key, orders in orders_of.items():
        violations += _orders_share_the_charge(key, orders, succeeded.get(key, []))
    return violations + _outcome_follows_the_card(snap)


def _succeeded_charges(records: list[dict[str, Any]]) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Succeeded charges by the charge key their metadata and currency name; violations for those that name
    no checkout or a charge key of another currency or checkout."""
    succeeded: dict[str, list[dict[str, Any]]] = defaultdict(list)
    violations = []
    for record in records:
        if record.get("status") != "succeeded":
            continue
        metadata = record.get("metadata") or {}
        checkout_id = metadata.get("checkout_id")
        if not checkout_id:
            violations.append(f"{record['charge_id']}: a successful charge that names no checkout ({metadata})")
            continue
        key = charge_key(checkout_id, str(record["currency"]))
        if metadata.get("charge_key", key) != key:
            violations.append(f"{record['charge_id']}: metadata names charge {metadata['charge_key']} but {key} "
                              f"was charged")
        succeeded[key].append(record)
    return succeeded, violations


def _orders_share_the_charge(key: str, orders: list[dict[str, Any]], charges: list[dict[str, Any]]) -> list[str]:
    """Every order of a succeeded charge SUCCESS and naming it; no order of an uncharged checkout SUCCESS."""
    violations = []
    intents = {c.get("payment_intent") for c in charges}
    charge_ids = {c["charge_id"] for c in charges}
    for order in orders:
        order_id, status = order["payment_order_id"], order["payment_order_status"]
        if order.get("charge_key", key) != key:
            violations.append(f"{order_id}: records charge {order['charge_key']} but belongs to {key}")
        if status == "SUCCESS" and not charges:
            violations.append(f"{order_id}: SUCCESS without a successful charge of {key} at the PSP")
        elif status == "SUCCESS" and order.get("psp_reference") not in intents:
            violations.append(f"{order_id}: SUCCESS naming {order.get('psp_reference')}, not the charge of {key} "
                              f"({', '.join(sorted(map(str, intents)))})")
        elif status == "SUCCESS" and order.get("charge_id") and order["charge_id"] not in charge_ids:
            violations.append(f"{order_id}: SUCCESS naming charge {order['charge_id']}, not {sorted(charge_ids)}")
        elif status == "SUCCESS" and not order.get("charge_id"):  # its Transfer's source_transaction
            violations.append(f"{order_id}: SUCCESS without the id of its charge ({sorted(charge_ids)}): its "
                              "transfer would draw on the platform's balance instead of the charge")
        if status == "FAILED" and charges:
            violations.append(f"{order_id}: FAILED but the PSP charged {key} "
                              f"({', '.join(c['charge_id'] for c in charges)})")
    return violations


PSP_DOWN = "psp_unavailable"  # functions/executor/handler.py: a charge never sent, its PSP down for 15 min


def _outcome_follows_the_card(snap: Snapshot) -> list[str]:
    """Only the buyer's card decides: an order of a card that succeeds never fails (a failure there is a checkout
    charged in part, e.g. a single-use token spent on its first currency), one of a declined card never succeeds.
    During a PSP outage (`psp_outage`) a charge never sent may also end FAILED `psp_unavailable`; that nothing was
    charged for it is invariant 1's and 8's (a FAILED order with a charge at either PSP is reported there)."""
    violations = []
    for order in snap.orders:
        succeeds = snap.card_succeeds.get(order["checkout_id"])
        status = order["payment_order_status"]
        if succeeds is True and status == "FAILED" and not (snap.psp_outage and order.get("failure_code") == PSP_DOWN):
            violations.append(f"{order['payment_order_id']}: FAILED ({order.get('failure_code')}: "
                              f"{str(order.get('failure_reason'))[:80]}) although its card succeeds "
                              f"[charged at {order.get('psp')}, route {order.get('psp_route') or '-'}, placed "
                              f"{order.get('created_at')}, method {str(order.get('payment_method'))[:20]}]")
        if succeeds is False and status == "SUCCESS":
            violations.append(f"{order['payment_order_id']}: SUCCESS although its card is declined")
    return violations


def _all_final_or_dead_lettered(snap: Snapshot) -> list[str]:
    dead = _dead_lettered(snap)
    by_id = {o["payment_order_id"]: o for o in snap.orders}
    violations = []
    for order_id in snap.accepted_order_ids or list(by_id):
        order = by_id.get(order_id)
        if order is None:
            violations.append(f"{order_id}: accepted but not stored")
        elif order["payment_order_status"] not in FINAL and order_id not in dead:
            violations.append(f"{order_id}: {order['payment_order_status']} and in no dead-letter queue")
    return violations


def _refunds_within_charges(snap: Snapshot) -> list[str]:
    """Per order, the refunds committed (PENDING and SUCCEEDED) never pass its amount; per charge, the PSP's
    refunded amount equals our SUCCEEDED refunds of its orders (a FAILED one gave its money back at both)."""
    orders = {o["payment_order_id"]: o for o in snap.orders}
    committed: dict[str, int] = defaultdict(int)
    succeeded_of_charge: dict[str, int] = defaultdict(int)
    for refund in snap.refunds:
        order = orders.get(refund["payment_order_id"], {})
        if refund.get("refund_status") in ("PENDING", "SUCCEEDED"):
            committed[refund["payment_order_id"]] += int(refund["amount_minor"])
        if refund.get("refund_status") == "SUCCEEDED" and order.get("charge_id"):
            succeeded_of_charge[order["charge_id"]] += int(refund["amount_minor"])
    violations = [f"{order_id}: refunds commit {minor} of an order of {orders[order_id]['amount_minor']}"
                  for order_id, minor in committed.items()
                  if order_id in orders and minor > int(orders[order_id]["amount_minor"])]
    for charge in snap.psp_charges:
        if charge.get("status") != "succeeded":
            continue
        refunded, ours = int(charge.get("amount_refunded") or 0), succeeded_of_charge.get(charge["charge_id"], 0)
        if refunded > int(charge["amount"]):
            violations.append(f"{charge['charge_id']}: the PSP refunded {refunded} of a charge of {charge['amount']}")
        if refunded != ours:
            violations.append(f"{charge['charge_id']}: the PSP refunded {refunded}, our SUCCEEDED refunds say {ours}")
    return violations


def refund_done(refund: dict[str, Any]) -> bool:
    """FAILED, or SUCCEEDED with every step after it (the reversal asked, the books written): `finished_at`."""
    return refund.get("refund_status") == "FAILED" or (
        refund.get("refund_status") == "SUCCEEDED" and bool(refund.get("finished_at")))


def _refunds_final(snap: Snapshot) -> list[str]:
    dead = {m.get("refund_id") for m in snap.dead_letters if m.get("refund_id")}
    by_id = {r["refund_id"]: r for r in snap.refunds}
    violations = []
    for refund_id, order_id in snap.accepted_refunds.items():
        refund = by_id.get(refund_id)
        if refund is None:
            violations.append(f"{refund_id} ({order_id}): accepted but not stored")
        elif not refund_done(refund) and refund_id not in dead:
            violations.append(f"{refund_id} ({order_id}): {refund.get('refund_status')}"
                              f"{' but unfinished' if refund.get('refund_status') == 'SUCCEEDED' else ''} "
                              "and in no dead-letter queue")
    return violations


def _ledger_balances(snap: Snapshot) -> list[str]:
    violations = []
    totals: dict[str, int] = defaultdict(int)
    for tx in snap.ledger:
        per_currency: dict[str, int] = defaultdict(int)
        for entry in tx["entries"]:
            per_currency[entry["currency"]] += int(entry["amount_minor"])
            totals[entry["currency"]] += int(entry["amount_minor"])
        for currency, total in per_currency.items():
            if total:
                violations.append(f"{tx['transaction_id']}: {currency} off by {total}")
    violations += [f"all accounts: {currency} sums to {total}" for currency, total in totals.items() if total]
    return violations


WALLET_BUCKETS = ("pending", "available", "transferred", "owed")


def _wallet_matches_ledger(snap: Snapshot) -> list[str]:
    """Per seller, currency and bucket: pending = -sum(seller_pending:s), available = -sum(seller_available:s),
    transferred = the nets of the seller's `transfer` transactions, owed = sum(seller_receivable:s); the wallet
    summed over its shards."""
    ledger: dict[tuple[str, str, str], int] = defaultdict(int)
    for tx in snap.ledger:
        for entry in tx["entries"]:
            prefix, _, seller = entry["account"].partition(":")
            if prefix == "seller_receivable":  # what the seller owes us (refunds after the transfer): `owed`
                ledger[(seller, entry["currency"], "owed")] += int(entry["amount_minor"])
            bucket = {"seller_pending": "pending", "seller_available": "available"}.get(prefix)
            if bucket:
                ledger[(seller, entry["currency"], bucket)] -= int(entry["amount_minor"])
                if bucket == "available" and tx.get("kind") == TRANSFER:
                    ledger[(seller, entry["currency"], "transferred")] += int(entry["amount_minor"])
    wallet: dict[tuple[str, str, str], int] = defaultdict(int)
    for item in snap.wallet:
        if item["sk"].startswith(BALANCE_SORT_PREFIX):
            seller = item.get("seller_account") or item["account_id"].rpartition("#")[0]
            for bucket in WALLET_BUCKETS:
                wallet[(seller, item["currency"], bucket)] += int(item.get(f"{bucket}_minor", 0))
    violations = []
    for key in sorted(set(ledger) | set(wallet)):
        if ledger.get(key, 0) != wallet.get(key, 0):
            violations.append(f"{key[0]} {key[1]} {key[2]}: wallet {wallet.get(key, 0)} != ledger {ledger.get(key, 0)}")
    # And per order: a SUCCESS order has its pay-in in the ledger, anything else has none.
    payins = {tx["reference"] for tx in snap.ledger if tx.get("kind") == PAYIN}
    for order in snap.orders:
        has = order["payment_order_id"] in payins
        if order["payment_order_status"] == "SUCCESS" and not has:
            violations.append(f"{order['payment_order_id']}: SUCCESS without its ledger transaction")
        if order["payment_order_status"] == "FAILED" and has:
            violations.append(f"{order['payment_order_id']}: FAILED but recorded in the ledger")
    return violations


def _no_backwards(snap: Snapshot) -> list[str]:
    violations = []
    for order_id, statuses in snap.observed_statuses.items():
        for before, after in zip(statuses, statuses[1:], strict=False):
            if ORDER_OF[after] < ORDER_OF[before] or (before in FINAL and after != before):
                violations.append(f"{order_id}: {before} -> {after}")
                break
    return violations


def _replays(snap: Snapshot) -> list[str]:
    violations = []
    for replay in snap.replays:
        if replay["kind"] == "same":
            if replay["second_status"] != replay["first_status"] or replay["second_body"] != replay["first_body"]:
                violations.append(f"{replay['checkout_id']}: replay answered differently")
            if not replay.get("replayed_header"):
                violations.append(f"{replay['checkout_id']}: replay not marked Idempotent-Replayed")
        elif replay["kind"] == "conflict":
            if replay["second_status"] != 409:
                violations.append(f"{replay['checkout_id']}: conflicting body answered {replay['second_status']}")
            if replay.get("changed"):
                violations.append(f"{replay['checkout_id']}: conflicting body changed {replay['changed']}")
    return violations


# -- pay-outs (issue 15) ----------------------------------------------------------------------------------------


def _dead_lettered(snap: Snapshot) -> set[str]:
    """The orders the dead letters name: a charge's names all its orders (`payment_order_ids`), others one."""
    dead = {d.get("payment_order_id") for d in snap.dead_letters}
    dead.update(order_id for d in snap.dead_letters for order_id in d.get("payment_order_ids") or ())
    return {order_id for order_id in dead if order_id}


def _one_transfer(snap: Snapshot) -> list[str]:
    """Invariant 1 for the money sent to sellers, from the PSP's transfers: one per order (by its metadata), to
    the seller's account, in the order's currency, for at most the net share frozen at release; and every order
    we hold TRANSFERRED is one of them."""
    payouts = {p["payment_order_id"]: p for p in snap.payouts}
    accounts = {s["seller_account"]: s.get("psp_account_id") for s in snap.sellers}
    by_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
    violations = []
    for transfer in snap.psp_transfers:
        order_id = (transfer.get("metadata") or {}).get("payment_order_id")
        if not order_id:
            violations.append(f"{transfer['id']}: a transfer that names no payment order")
            continue
        by_order[order_id].append(transfer)
    for order_id, transfers in sorted(by_order.items()):
        ids = ", ".join(t["id"] for t in transfers)
        if len(transfers) > 1:
            violations.append(f"{order_id}: {len(transfers)} transfers ({ids})")
        payout = payouts.get(order_id)
        if payout is None or payout.get("payout_status") == "HELD" or payout.get("net_minor") is None:
            violations.append(f"{order_id}: transferred ({ids}) but never released")
            continue
        sent = sum(int(t["amount"]) - int(t.get("amount_reversed") or 0) for t in transfers)
        if sent > int(payout["net_minor"]):
            violations.append(f"{order_id}: {sent} transferred ({ids}), more than its released net "
                              f"{payout['net_minor']}")
        for transfer in transfers:
            if str(transfer["currency"]).upper() != str(payout["currency"]).upper():
                violations.append(f"{transfer['id']}: in {transfer['currency']} for a {payout['currency']} order")
            if transfer.get("destination") != accounts.get(payout["seller_account"]):
                violations.append(f"{transfer['id']}: sent to {transfer.get('destination')}, not to "
                                  f"{payout['seller_account']}'s account {accounts.get(payout['seller_account'])}")
    for order_id, payout in sorted(payouts.items()):
        if payout.get("payout_status") != "TRANSFERRED":
            continue
        ids = {t["id"] for t in by_order.get(order_id, [])}
        if payout.get("transfer_id") not in ids:
            violations.append(f"{order_id}: TRANSFERRED as {payout.get('transfer_id')} but the PSP holds "
                              f"{sorted(ids) or 'no transfer'} for it")
    return violations


def _accounts_hold_our_transfers(snap: Snapshot) -> list[str]:
    """Each connected account's balance at the PSP equals the net of the orders we hold TRANSFERRED to it (when
    the run read the balances: the sandbox's accounts make no bank payouts)."""
    if not snap.psp_account_balances:
        return []
    accounts = {s["seller_account"]: s.get("psp_account_id") for s in snap.sellers}
    reversed_of: dict[str, int] = defaultdict(int)
    for refund in snap.refunds:
        if refund.get("reversal_status") == "SUCCEEDED":
            reversed_of[refund["payment_order_id"]] += int(refund.get("seller_share_minor") or 0)
    ours: dict[tuple[str, str], int] = defaultdict(int)
    for payout in snap.payouts:
        if payout.get("payout_status") == "TRANSFERRED":
            account = accounts.get(payout["seller_account"]) or f"(no account of {payout['seller_account']})"
            # what the transfer sent (net less the seller's debt it netted), less what reversals took back
            ours[(account, str(payout["currency"]).upper())] += int(payout["net_minor"]) - int(
                payout.get("netted_minor") or 0) - reversed_of.get(payout["payment_order_id"], 0)
    theirs = {(account, currency.upper()): int(minor) for account, balances in snap.psp_account_balances.items()
              for currency, minor in balances.items()}
    return [f"{account} {currency}: the PSP holds {theirs.get((account, currency), 0)}, we transferred "
            f"{ours.get((account, currency), 0)}{_orders_that_differ(snap, account, reversed_of)}"
            for account, currency in sorted(set(ours) | set(theirs))
            if ours.get((account, currency), 0) != theirs.get((account, currency), 0)]


def _orders_that_differ(snap: Snapshot, account: str, reversed_of: dict[str, int]) -> str:
    """The orders behind an account's difference: what each transfer kept at the PSP against what we hold sent."""
    kept: dict[str, int] = defaultdict(int)
    for transfer in snap.psp_transfers:
        if transfer.get("destination") == account:
            order_id = (transfer.get("metadata") or {}).get("payment_order_id", transfer["id"])
            kept[order_id] += int(transfer["amount"]) - int(transfer.get("amount_reversed") or 0)
    accounts = {s["seller_account"]: s.get("psp_account_id") for s in snap.sellers}
    payouts = {p["payment_order_id"]: p for p in snap.payouts if accounts.get(p["seller_account"]) == account}
    differ = []
    for order_id in sorted(set(kept) | {o for o, p in payouts.items() if p.get("payout_status") == "TRANSFERRED"}):
        payout = payouts.get(order_id, {})
        sent = 0
        if payout.get("payout_status") == "TRANSFERRED":
            sent = int(payout["net_minor"]) - int(payout.get("netted_minor") or 0) - reversed_of.get(order_id, 0)
        if kept.get(order_id, 0) != sent and (order_id in kept or sent):
            differ.append(f"{order_id} PSP {kept.get(order_id, 0)} ours {sent} (net {payout.get('net_minor')}, "
                          f"netted {payout.get('netted_minor')}, reversed {reversed_of.get(order_id, 0)}, "
                          f"{payout.get('payout_status')})")
    return f" [{'; '.join(differ[:5])}]" if differ else ""


def _payouts_final(snap: Snapshot) -> list[str]:
    """Invariant 2 for pay-outs: a release the storefront was answered for took effect, and every released order
    ended TRANSFERRED or FAILED, or waits for its seller's account, or sits in a dead-letter queue."""
    payouts = {p["payment_order_id"]: p for p in snap.payouts}
    dead = _dead_lettered(snap)
    violations = [f"{order_id}: release accepted but its pay-out is "
                  f"{payouts[order_id]['payout_status'] if order_id in payouts else 'not stored'}"
                  for order_id in snap.released_order_ids
                  if payouts.get(order_id, {}).get("payout_status", "HELD") == "HELD"]
    violations += [f"{order_id}: HELD past its auto-release at {payout['auto_release_at']} (now {snap.now})"
                   for order_id, payout in sorted(payouts.items())
                   if snap.now and payout.get("payout_status") == "HELD" and payout.get("auto_release_at")
                   and payout["auto_release_at"] <= snap.now and order_id not in dead]
    for order_id, payout in sorted(payouts.items()):
        if payout.get("payout_status") in PAYOUT_OPEN and not payout.get("awaiting_seller") \
                and order_id not in dead:
            violations.append(f"{order_id}: {payout['payout_status']}, its seller registered, and in no "
                              f"dead-letter queue")
    return violations


def _no_payout_backwards(snap: Snapshot) -> list[str]:
    retried = set(snap.retried_payouts)
    violations = []
    for order_id, statuses in snap.observed_payout_statuses.items():
        for before, after in zip(statuses, statuses[1:], strict=False):
            if before == "FAILED" and after in ("RELEASED", "TRANSFERRING", "TRANSFERRED") and order_id in retried:
                continue  # `ops payouts retry`: the one explicit move back
            if PAYOUT_ORDER_OF[after] < PAYOUT_ORDER_OF[before] or (before in ("TRANSFERRED", "FAILED")
                                                                   and after != before):
                violations.append(f"{order_id}: pay-out {before} -> {after}")
                break
    return violations


def report(results: list[Result]) -> str:
    lines = []
    for result in results:
        mark = "ok" if result.ok else f"VIOLATED ({len(result.violations)})"
        lines.append(f"  {result.number}. {result.name}: {mark}")
        lines += [f"       - {v}" for v in result.violations[:5]]
    return "\n".join(lines)


# -- collection from a running system ---------------------------------------------------------------


def scan(db: Any, table: str, attributes: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every item of `table` (consistent), or only its `attributes` (a watcher's light read)."""
    from functions.shared.tables import from_item

    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    if attributes:
        kwargs["ProjectionExpression"] = ", ".join(f"#a{i}" for i in range(len(attributes)))
        kwargs["ExpressionAttributeNames"] = {f"#a{i}": name for i, name in enumerate(attributes)}
    while True:
        answer = db.scan(**kwargs)
        items += [from_item(i) for i in answer.get("Items", [])]
        if "LastEvaluatedKey" not in answer:
            return items
        kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]


def peek_queue(sqs: Any, queue_url: str, hide_s: int = 60) -> list[dict[str, Any]]:
    """Read every message of a queue without consuming it, for the dead-letter check: each is hidden while the
    others are read (received with a visibility of 0 they stay first in line, and only the first ten would ever
    be seen), then made visible again."""
    seen: dict[str, dict[str, Any]] = {}
    handles: list[str] = []
    try:
        while True:
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=hide_s,
                                           WaitTimeSeconds=0).get("Messages", [])
            if not messages:
                break
            for message in messages:
                handles.append(message["ReceiptHandle"])
                try:
                    seen[message["MessageId"]] = json.loads(message["Body"])
                except ValueError:
                    seen[message["MessageId"]] = {"raw": message["Body"]}
    finally:
        for start in range(0, len(handles), 10):
            sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(n), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                for n, handle in enumerate(handles[start:start + 10])])
    return list(seen.values())


def collect(session: Any, outputs: dict[str, str], psp_charges: list[dict[str, Any]], **extra: Any) -> Snapshot:
    """Read the tables and dead-letter queues named by the stack outputs."""
    db = session.client("dynamodb")
    sqs = session.client("sqs")
    dead: list[dict[str, Any]] = []
    for key in ("WorkflowDlqUrl", "OrdersDlqUrl", "PayoutsDlqUrl", "RefundsDlqUrl"):
        if outputs.get(key):
            dead += peek_queue(sqs, outputs[key])
    payout_tables = {field: scan(db, outputs[output]) for field, output in
                     (("payouts", "PayoutsTableName"), ("sellers", "SellersTableName"),
                      ("refunds", "RefundsTableName"), ("disputes", "DisputesTableName")) if outputs.get(output)}
    return Snapshot(
        orders=scan(db, outputs["PaymentOrdersTableName"]),
        ledger=scan(db, outputs["LedgerTableName"]),
        wallet=scan(db, outputs["WalletTableName"]),
        psp_charges=psp_charges,
        dead_letters=dead,
        **payout_tables,
        **extra,
    )


def _disputes_booked(snap: Snapshot) -> list[str]:
    """Every dispute's steps in the ledger (docs/decisions.md "Disputes"): the fee once it is booked; each opened
    part its `dispute#<dp>:<order>`; each resolved part its outcome's transaction (a lost transferred part with no
    commission share has none); and `disputed_funds` over the dispute's transactions holds, while it is OPEN, the
    opened parts less the sellers' owed shares, and nothing once it is WON or LOST and every part is resolved."""
    by_id = {tx["transaction_id"]: tx for tx in snap.ledger}
    violations = []
    for dispute in snap.disputes:
        dispute_id = dispute["dispute_id"]
        fee_missing = f"dispute_fee#{dispute_id}" not in by_id
        if dispute.get("fee_booked") and int(dispute.get("fee_minor") or 0) and fee_missing:
            violations.append(f"{dispute_id}: fee booked without its ledger transaction")
        funds, expected, resolved = 0, 0, True
        for order_id, part in (dispute.get("parts") or {}).items():
            reference = f"{dispute_id}:{order_id}"
            for kind in ("dispute", "dispute_won", "dispute_lost"):
                for entry in (by_id.get(f"{kind}#{reference}") or {}).get("entries", []):
                    if entry["account"].startswith("disputed_funds:"):
                        funds += int(entry["amount_minor"])
            if part.get("opened"):
                if f"dispute#{reference}" not in by_id:
                    violations.append(f"{reference}: opened without its ledger transaction")
                expected += int(part["amount_minor"]) - int(part.get("seller_share_minor") or 0)
            resolved = resolved and bool(part.get("resolved"))
            if part.get("resolved"):
                outcome = "dispute_won" if dispute["dispute_status"] == "WON" else "dispute_lost"
                needed = not (outcome == "dispute_lost" and part.get("timing") == "transferred"
                              and not int(part.get("commission_share_minor") or 0))
                if needed and f"{outcome}#{reference}" not in by_id:
                    violations.append(f"{reference}: resolved without its {outcome} transaction")
        if dispute["dispute_status"] == "OPEN" and funds != expected:
            violations.append(f"{dispute_id}: OPEN with disputed funds {funds}, expected {expected}")
        if dispute["dispute_status"] != "OPEN" and resolved and funds:
            violations.append(f"{dispute_id}: {dispute['dispute_status']} with disputed funds {funds} left")
    return violations


PSP_DISPUTE_STATUS = {"won": "WON", "lost": "LOST", "warning_closed": "WON"}  # anything else: OPEN


def dispute_done(dispute: dict[str, Any], psp_status: str) -> bool:
    """Our dispute item shows the PSP's status with its steps done: the fee booked, every part opened, and once
    decided every part resolved."""
    ours = PSP_DISPUTE_STATUS.get(psp_status, "OPEN")
    parts = (dispute.get("parts") or {}).values()
    return (dispute.get("dispute_status") == ours and bool(dispute.get("fee_booked")) and bool(parts)
            and all(p.get("opened") and (ours == "OPEN" or p.get("resolved")) for p in parts))


def _disputes_as_decided(snap: Snapshot) -> list[str]:
    """Every dispute of the PSP final in our books as the PSP decided: its item in that status with every step done;
    its parts adding up to the PSP's amount; the fee booked as the PSP withdrew it; per part, our PSP balance
    (psp_receivable over the part's transactions) back to where it was if won, short by the part if lost (the
    seller and the commission bore it); a won part reinstated by exactly one `dispute_won` and never lost, a lost
    one never reinstated."""
    if snap.psp_disputes is None:
        return []
    violations = list(snap.dispute_answers_wrong)
    ours = {d["dispute_id"]: d for d in snap.disputes}
    by_kind_reference: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for tx in snap.ledger:
        by_kind_reference[(tx.get("kind", ""), tx.get("reference", ""))].append(tx)

    def receivable(txs: list[dict[str, Any]]) -> int:
        return sum(int(e["amount_minor"]) for tx in txs for e in tx["entries"]
                   if e["account"].startswith("psp_receivable:"))

    for psp_dispute in snap.psp_disputes:
        dispute_id, psp_status = psp_dispute["id"], psp_dispute["status"]
        dispute = ours.get(dispute_id)
        if dispute is None:
            violations.append(f"{dispute_id}: {psp_status} at the PSP, unknown to us")
            continue
        if not dispute_done(dispute, psp_status):
            violations.append(f"{dispute_id}: {psp_status} at the PSP, ours {dispute.get('dispute_status')} with "
                              f"steps left")
            continue
        parts, currency = dispute["parts"], str(psp_dispute["currency"]).upper()
        amount = psp_units.from_stripe_amount(currency, int(psp_dispute["amount"])).minor
        if sum(int(p["amount_minor"]) for p in parts.values()) != amount or int(dispute["amount_minor"]) != amount:
            violations.append(f"{dispute_id}: {amount} at the PSP, ours {dispute['amount_minor']} in parts "
                              f"{sum(int(p['amount_minor']) for p in parts.values())}")
        fee = psp_units.from_stripe_amount(
            currency, sum(int(t.get("fee") or 0) for t in psp_dispute.get("balance_transactions") or [])).minor
        fee_txs = by_kind_reference[("dispute_fee", dispute_id)]
        if int(dispute.get("fee_minor") or 0) != fee or (fee and -receivable(fee_txs) != fee):
            violations.append(f"{dispute_id}: fee {fee} at the PSP, ours {dispute.get('fee_minor')} booked "
                              f"{-receivable(fee_txs)}")
        outcome = PSP_DISPUTE_STATUS.get(psp_status)
        for order_id, part in parts.items():
            reference = f"{dispute_id}:{order_id}"
            won, lost = by_kind_reference[("dispute_won", reference)], by_kind_reference[("dispute_lost", reference)]
            opened = by_kind_reference[("dispute", reference)]
            if outcome == "WON" and (len(won) != 1 or lost):
                violations.append(f"{reference}: won, reinstated {len(won)} times, lost {len(lost)} times")
            if outcome == "LOST" and won:
                violations.append(f"{reference}: lost but reinstated")
            if outcome in ("WON", "LOST"):
                moved = receivable(opened + won + lost)
                expected = 0 if outcome == "WON" else -int(part["amount_minor"])
                if moved != expected:
                    violations.append(f"{reference}: {outcome} moved our PSP balance by {moved}, not {expected}")
    return violations
