"""The storefront's refunds in a chaos run (issue 16): a seeded share of the settled orders is refunded, some held,
some released, some already transferred; some in two partial refunds whose sum passes the order's amount (the
second must be refused), some asked twice at once (the replay must answer the same). Then a watch until every
accepted refund is final. The invariants compare what was accepted with the Refunds table and the PSP's own
record of each charge's refunded amount."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from functions.shared.money import Money
from verification.invariants import refund_done
from verification.storefront import ApiClient, pause_after_read

REFUND_RATE = 0.12  # of the SUCCESS orders
TWICE_RATE = 0.2  # of the refunds: the same request twice at once
OVER_RATE = 0.25  # of the refunded orders: a first partial, then a second that passes what remains


@dataclass
class RefundRecord:
    accepted: dict[str, str] = field(default_factory=dict)  # refund_id -> payment_order_id (a 202 or 200)
    refused: list[tuple[str, int, str]] = field(default_factory=list)  # (refund_id, status, error code)
    answers: Counter = field(default_factory=Counter)  # status -> count
    twice: int = 0
    over_asked: int = 0  # second refunds asked for more than remained
    over_refused: int = 0  # ... and refused 422 refund_exceeds_remaining, as they must be
    unexpected: list[str] = field(default_factory=list)


def plan_refunds(orders: list[dict[str, Any]], seed: int) -> list[tuple[str, str, str | None, bool]]:
    """(payment_order_id, refund_id, amount or None for all that remains, asked twice at once), in the order to
    send; a refund of the same order follows its first (sent in turn, not at once)."""
    rng = random.Random(f"{seed}:refunds")
    plan = []
    for order in sorted(orders, key=lambda o: o["payment_order_id"]):
        if order.get("payment_order_status") != "SUCCESS" or rng.random() >= REFUND_RATE:
            continue
        order_id, gross = order["payment_order_id"], int(order["amount_minor"])
        currency = order["currency"]
        twice = rng.random() < TWICE_RATE
        if gross < 2 or rng.random() >= OVER_RATE:
            amount = None if rng.random() < 0.5 else Money(rng.randint(1, gross), currency).to_major()
            plan.append((order_id, f"rf_{order_id}_1", amount, twice))
            continue
        first = rng.randint(1, gross - 1)
        plan.append((order_id, f"rf_{order_id}_1", Money(first, currency).to_major(), twice))
        plan.append((order_id, f"rf_{order_id}_2", Money(gross - first + 1, currency).to_major(), False))
    return plan


def refund_some(api: ApiClient, orders: list[dict[str, Any]], *, seed: int, threads: int = 8,
                attempts: int = 8) -> RefundRecord:
    record = RefundRecord()
    lock = threading.Lock()
    by_order: dict[str, list[tuple[str, str, str | None, bool]]] = {}
    for step in plan_refunds(orders, seed):
        by_order.setdefault(step[0], []).append(step)

    def once(order_id: str, refund_id: str, amount: str | None) -> tuple[int, dict[str, Any]]:
        body = {"refund_id": refund_id, "reason": "chaos"} | ({"amount": amount} if amount else {})
        status, answer = 0, {}
        for attempt in range(attempts):
            try:
                status, answer, _ = api.request("POST", f"/v1/payments/{order_id}/refunds", body)
            except OSError:
                status, answer = 0, {}
            if status and status < 500:
                break
            time.sleep(min(0.05 * 2**attempt, 1.0))
        return status, answer

    def one_order(steps: list[tuple[str, str, str | None, bool]]) -> None:
        for number, (order_id, refund_id, amount, twice) in enumerate(steps):
            if twice:
                with ThreadPoolExecutor(max_workers=2) as pair:
                    asked = [pair.submit(once, order_id, refund_id, amount) for _ in range(2)]
                    answers = [future.result() for future in asked]
            else:
                answers = [once(order_id, refund_id, amount)]
            with lock:
                record.twice += twice
                for status, _ in answers:
                    record.answers[status] += 1
                accepted = [answer for status, answer in answers if status in (200, 202)]
                if accepted:
                    record.accepted[refund_id] = order_id
                    if len({a.get("amount") for a in accepted}) > 1:
                        record.unexpected.append(f"{refund_id}: two answers of one refund differ: {accepted}")
                else:
                    status, answer = answers[-1]
                    record.refused.append((refund_id, status, str((answer.get("error") or {}).get("code"))))
                if number == 1:  # the second of an order: it asked past what remained
                    record.over_asked += 1
                    if not accepted and answers[-1][0] == 422:
                        record.over_refused += 1
                    elif accepted:
                        record.unexpected.append(f"{refund_id}: a refund past the order's amount was accepted")

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one_order, by_order.values()))
    return record


def watch_refunds(read: Callable[[], list[dict[str, Any]]], accepted: dict[str, str], *, timeout_s: float,
                  interval_s: float = 0.5, on_idle: Callable[[], None] | None = None) -> None:
    """Until every accepted refund is done in the Refunds table: FAILED, or SUCCEEDED and finished (its reversal
    asked and its books written: SUCCEEDED comes first, so a snapshot taken then would catch a reversal half
    recorded). TimeoutError otherwise (what never settles is then reported by invariant 2)."""
    deadline = time.monotonic() + timeout_s
    last: list[str] = []
    while True:
        read_at = time.monotonic()
        done = {r["refund_id"] for r in read() if refund_done(r)}
        read_s = time.monotonic() - read_at
        open_ids = [refund_id for refund_id in accepted if refund_id not in done]
        if not open_ids:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(open_ids)} refunds not final, e.g. {open_ids[:5]}")
        if on_idle and open_ids == last:  # nothing moved since the last read
            on_idle()
        last = open_ids
        pause_after_read(interval_s, read_s)
