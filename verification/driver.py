"""Drives a workload through the API like a storefront, and watches the orders until they settle.

Used by the end-to-end tests, the demo, the chaos run and the benchmarks. Everything it learns goes into the
invariant checker's Snapshot: replays, reads after writes, and the statuses it saw over time.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from functions.shared.tables import batch_get
from verification.storefront import (
    ROUTE_STALE,
    ApiClient,
    PaymentMethodRefused,
    PaymentMethods,
    Router,
    Workload,
    token_of,
    with_payment_method,
)

logger = logging.getLogger("verification.driver")

FINAL = {"SUCCESS", "FAILED"}


@dataclass
class RunRecord:
    accepted_order_ids: list[str] = field(default_factory=list)
    replays: list[dict[str, Any]] = field(default_factory=list)
    unreadable_after_write: list[str] = field(default_factory=list)
    # reads after a write that failed at least once: order id -> each try's status (0: no answer), then the body
    reads_retried: dict[str, list[Any]] = field(default_factory=dict)
    observed_statuses: dict[str, list[str]] = field(default_factory=dict)
    post_latencies_ms: list[float] = field(default_factory=list)
    rejected: list[tuple[str, int, Any]] = field(default_factory=list)
    retried_posts: int = 0
    payment_methods: dict[str, str] = field(default_factory=dict)  # checkout_id -> the single-use pm_ it used


def place_all(api: ApiClient, workload: Workload, *, seed: int = 1, replay_rate: float = 0.1,
              conflict_rate: float = 0.05, read_after_write: bool = True, threads: int = 8,
              retries: int = 6, on_progress: Callable[[int], None] | None = None,
              pace: Callable[[], None] | None = None, record: RunRecord | None = None,
              payment_methods: PaymentMethods | None = None, router: Router | None = None) -> RunRecord:
    """POST every checkout (retrying 5xx and connection errors with the same body, as a storefront should),
    replay some with the same body and some with a changed one, and read each order right after the 2xx.
    A checkout paid with a card number first gets its own single-use PaymentMethod from `payment_methods`
    (as Stripe.js would); its retries and replays reuse that body, token included.

    `pace` runs before each checkout (it may wait, to bound the orders in flight); a watcher may read
    `record.accepted_order_ids` meanwhile: an id is added only after its read-after-write was recorded.
    With a `router` (failover), each checkout first asks the route endpoint and pays with the routed PSP's
    method; a 422 payment_method_not_for_routed_psp (the route went stale) is asked again and posted once more."""
    record = record or RunRecord()
    rng = random.Random(seed)
    plan = [(c, rng.random() < replay_rate, rng.random() < conflict_rate) for c in workload.checkouts]
    if payment_methods is None and any(not token_of(c) for c in workload.checkouts):
        raise ValueError("the workload has card numbers: pass payment_methods=PaymentMethods(psp_url)")

    def one(item: tuple[dict[str, Any], bool, bool]) -> None:
        checkout, replay, conflict = item
        if pace:
            pace()
        card = workload.cards.get(checkout["checkout_id"])
        original = checkout
        try:
            checkout = router.prepare(checkout, card) if router else with_payment_method(checkout, card,
                                                                                          payment_methods)
        except PaymentMethodRefused as error:
            record.rejected.append((checkout["checkout_id"], error.status, error.body))
            return
        if card is not None and (card.number or "adyen" in (checkout.get("payment_method") or {})):
            record.payment_methods[checkout["checkout_id"]] = str(token_of(checkout) or "adyen_card")
        started = time.perf_counter()
        status, body, headers = _post_with_retries(api, checkout, retries, record)
        if router and status == 422 and _error_code(body) == ROUTE_STALE:
            try:  # the route changed between asking and posting: ask again, pay with the other PSP's method
                checkout = router.prepare(original, card, avoid=router.routed.get(checkout["checkout_id"], ""))
            except PaymentMethodRefused as error:
                record.rejected.append((checkout["checkout_id"], error.status, error.body))
                return
            router.counts["stale_routes_retried"] = router.counts.get("stale_routes_retried", 0) + 1
            status, body, headers = _post_with_retries(api, checkout, retries, record)
        if router and "adyen" in (checkout.get("payment_method") or {}):  # the failover's trail, for a diagnosis
            logger.warning("checkout %s posted with an Adyen card: %s %s", checkout["checkout_id"], status,
                           _error_code(body) if status != 202 else [o.get("payment_order_id")
                                                                      for o in body.get("payment_orders", [])])
        record.post_latencies_ms.append((time.perf_counter() - started) * 1000)
        if status != 202:
            record.rejected.append((checkout["checkout_id"], status, body))
            return
        ids = [o["payment_order_id"] for o in checkout["payment_orders"]]
        if read_after_write:
            for order_id in ids:
                got, order = _read_back(api, order_id, record, order_id)
                if got != 200:
                    record.unreadable_after_write.append(order_id)
                else:
                    record.observed_statuses.setdefault(order_id, []).append(order["payment_order_status"])
        record.accepted_order_ids.extend(ids)
        if replay:
            again = _post_with_retries(api, checkout, retries, record)
            record.replays.append({"kind": "same", "checkout_id": checkout["checkout_id"], "first_status": status,
                                   "first_body": body, "second_status": again[0], "second_body": again[1],
                                   "replayed_header": again[2].get("idempotent-replayed") == "true"})
        if conflict:
            changed = copy.deepcopy(checkout)
            changed["payment_orders"][0]["amount"] = _bump(changed["payment_orders"][0]["amount"])
            answer = _post_with_retries(api, changed, retries, record)
            # read back as a storefront would: a read that failed (a killed function) is read again
            conflicted = changed["payment_orders"][0]["payment_order_id"]
            got, after = _read_back(api, conflicted, record, f"{conflicted} (after the conflict)")
            if got != 200:
                record.unreadable_after_write.append(changed["payment_orders"][0]["payment_order_id"])
            record.replays.append({
                "kind": "conflict", "checkout_id": checkout["checkout_id"], "second_status": answer[0],
                "changed": None if got != 200 or after.get("amount") == checkout["payment_orders"][0]["amount"]
                else f"amount {after.get('amount')}"})
        if on_progress:
            on_progress(len(ids))

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, plan))
    return record


def _error_code(body: dict[str, Any]) -> str:
    """The API's error code: its own (`error.code`) or the first of a validation error's details."""
    error = body.get("error") or {}
    details = error.get("details") or body.get("detail") or []
    codes = [str(d.get("type") or d.get("code")) for d in details if isinstance(d, dict)]
    return ROUTE_STALE if ROUTE_STALE in codes else str(error.get("code") or (codes[0] if codes else ""))


def _post_with_retries(api: ApiClient, checkout: dict[str, Any], retries: int,
                       record: RunRecord) -> tuple[int, dict[str, Any], dict[str, str]]:
    answer: tuple[int, dict[str, Any], dict[str, str]] = (0, {}, {})
    failures = 0
    for _ in range(retries + RATE_LIMITED_RETRIES):
        try:
            answer = api.post_checkout(checkout)
        except OSError:
            answer = (0, {}, {})
        if answer[0] == 429:  # the API's rate limit: a storefront waits Retry-After and sends it again
            time.sleep(_retry_after(answer[2]))
            continue
        if answer[0] and answer[0] < 500:
            return answer
        failures += 1
        if failures >= retries:
            break
        record.retried_posts += 1
        time.sleep(min(0.05 * 2**failures, 1.0))
    return answer


RATE_LIMITED_RETRIES = 20  # 429s waited out (Retry-After) besides the retries of failures


def _retry_after(headers: dict[str, str]) -> float:
    try:
        return min(max(float(headers.get("retry-after", "1")), 0.1), 5.0)
    except ValueError:
        return 1.0


READ_FAILURES = 10  # a read back after a write: 5xx and dropped connections are read again (~6.5 s of waits)


def _read_back(api: ApiClient, order_id: str, record: RunRecord, label: str) -> tuple[int, dict[str, Any]]:
    """A read the network or a killed function failed is read again; a 404 is an answer. A read that was not
    answered 200 at once is kept in `record.reads_retried[label]` with each try's status (then the last body when
    it never got a 200), so a read given up on says why."""
    answer: tuple[int, dict[str, Any]] = (0, {})
    tried: list[Any] = []
    failures = 0
    for _ in range(READ_FAILURES + RATE_LIMITED_RETRIES):
        try:
            status, body, headers = api.get_order(order_id)
            answer = (status, body)
        except OSError:
            answer, headers = (0, {}), {}
        tried.append(answer[0])
        if answer[0] == 429:  # rate limited: wait as told, then read again
            time.sleep(_retry_after(headers))
            continue
        if answer[0] and answer[0] < 500:
            break
        failures += 1
        if failures >= READ_FAILURES:
            break
        time.sleep(min(0.05 * 2**failures, 1.0))
    if tried != [200]:
        record.reads_retried[label] = [*tried, answer[1]] if answer[0] != 200 else tried
        if answer[0] != 200:
            logger.warning("read after write of %s given up: tries %s, last answer %s", order_id, tried, answer[1])
    return answer


def _bump(amount: str) -> str:
    whole, _, fraction = amount.partition(".")
    return f"{int(whole) + 1}.{fraction}" if fraction else str(int(whole) + 1)


def watch_until_settled(session: Any, outputs: dict[str, str], order_ids: list[str], record: RunRecord, *,
                        timeout_s: float = 120.0, interval_s: float = 0.5,
                        is_settled: Callable[[dict[str, Any]], bool] | None = None,
                        on_tick: Callable[[int, int], None] | None = None,
                        on_idle: Callable[[], None] | None = None,
                        more_coming: Callable[[], bool] = lambda: False) -> dict[str, dict[str, Any]]:
    """Read the orders until every one is final (or dead-lettered), recording each status seen.

    Each tick costs what is still open, not what the table holds: the sweep index lists the orders the system
    still owes a final state (keys only), the orders that left it are read (consistently) to learn how they
    ended, and a rotating sample of the open ones is read to see their statuses on the way. `order_ids` may
    grow while this runs (a paced placement appends to it); `more_coming` says whether it still will.
    `on_idle` runs when nothing changed for a few ticks (the chaos run moves the clock and sweeps there).
    """
    db = session.client("dynamodb")
    table = outputs["PaymentOrdersTableName"]
    settled = is_settled or (lambda o: o["payment_order_status"] in FINAL or bool(o.get("dead_letter_reason")))
    deadline = time.monotonic() + timeout_s
    latest: dict[str, dict[str, Any]] = {}
    pending: set[str] = set()
    known, rotation = 0, 0
    last_done, unchanged, failed_ticks = -1, 0, 0
    while True:
        placing = more_coming()  # asked before reading the ids, so none accepted after the answer is missed
        if len(order_ids) > known:
            pending.update(order_ids[known:])
            known = len(order_ids)
        try:
            open_ids = _open_order_ids(db, table)
            left = [i for i in pending if i not in open_ids]
            still_open = sorted(i for i in pending if i in open_ids)
            sample = still_open[rotation:rotation + OBSERVED_PER_TICK] if still_open else []
            read = list(batch_get(db, table, "payment_order_id", left + sample).values())
        except (BotoCoreError, ClientError) as error:
            # A read the local stack failed: every tick starts afresh, so the next one reads again.
            failed_ticks += 1
            if failed_ticks > MAX_FAILED_TICKS:
                raise
            logger.warning("watcher read failed (%s of %s): %s", failed_ticks, MAX_FAILED_TICKS, error)
            time.sleep(interval_s)
            continue
        rotation = rotation + OBSERVED_PER_TICK if rotation + OBSERVED_PER_TICK < len(still_open) else 0
        # An accepted order that is stored nowhere will never settle: stop waiting, the checker names it.
        pending.difference_update(set(left) - {order["payment_order_id"] for order in read})
        for order in read:
            order_id = order["payment_order_id"]
            latest[order_id] = order
            seen = record.observed_statuses.setdefault(order_id, [])
            if not seen or seen[-1] != order["payment_order_status"]:
                seen.append(order["payment_order_status"])
            if order_id in pending and settled(order) and order_id not in open_ids:
                pending.discard(order_id)
        done = known - len(pending)
        if on_tick:
            on_tick(done, known)
        if not pending and not placing:
            return {i: latest[i] for i in order_ids if i in latest}  # an order stored nowhere is left out
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} of {known} orders not settled in {timeout_s} s")
        unchanged = unchanged + 1 if done == last_done else 0
        last_done = done
        if on_idle and unchanged >= 4:
            on_idle()
            unchanged = 0
        time.sleep(interval_s)


OBSERVED_PER_TICK = 100
MAX_FAILED_TICKS = 50  # reads the local stack may fail in one run before the watcher gives up


def _open_order_ids(db: Any, table: str) -> set[str]:
    """Orders that carry sweep_shard: not final and not waiting in a dead-letter queue. (The orders table has no
    sweep index, docs/decisions.md 2026-12-06: a harness may pay for a filtered scan, the product does not.)"""
    ids: set[str] = set()
    kwargs: dict[str, Any] = {"TableName": table, "ProjectionExpression": "payment_order_id",
                              "FilterExpression": "attribute_exists(sweep_shard)"}
    while True:
        answer = db.scan(**kwargs)
        ids.update(item["payment_order_id"]["S"] for item in answer.get("Items", []))
        if "LastEvaluatedKey" not in answer:
            return ids
        kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
