"""The storefront's side of pay-outs (issue 15), shared by the chaos run, the demo and the end-to-end tests:
sellers registered with connected accounts created at the PSP, deliveries confirmed (releases), and a watch of
the Payouts table until every released order is transferred, failed, waiting for its seller or dead-lettered.
`Connect` is the PSP sandbox's Connect side: accounts, restrictions, the platform's balance, and its own record
of transfers and connected-account balances (the ground truth of the invariants)."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from verification.storefront import ApiClient, pause_after_read

PSP_KEY = "sk_test_storefront"
FINAL_PAYOUT = {"TRANSFERRED", "FAILED"}
COMMISSIONS_BPS = (0, 500, 1000, 1250)


class Connect:
    """The PSP sandbox's Connect API and its admin routes, over HTTP."""

    def __init__(self, psp_url: str, api_key: str = PSP_KEY, timeout_s: float = 30.0):
        self.url, self.key, self.timeout_s = psp_url.rstrip("/"), api_key, timeout_s

    def create_account(self, attempts: int = 5) -> str:
        """An Express account with the transfers capability, as a marketplace onboards a seller. Retried on a
        5xx or a lost answer (a second account then is only an unused one)."""
        form = {"type": "express", "capabilities[transfers][requested]": "true"}
        for attempt in range(attempts):
            status, body = self._call("POST", "/v1/accounts", form)
            if status == 200 and str(body.get("id", "")).startswith("acct_"):
                return str(body["id"])
            if 400 <= status < 500 and status != 429:
                raise RuntimeError(f"account refused: {status} {body}")
            time.sleep(0.05 * 2**attempt)
        raise RuntimeError(f"no account after {attempts} attempts: {status} {body}")

    def restrict(self, account_id: str, restricted: bool = True) -> None:
        """The account unable to receive transfers (Stripe's `requirements.past_due`), or able again."""
        self._admin("POST", f"/_sandbox/accounts/{account_id}/{'restrict' if restricted else 'unrestrict'}", {})

    def set_platform_short(self, short: bool) -> None:
        """The platform's available balance too low for any transfer (or back to plenty)."""
        self._admin("POST", "/_sandbox/balance", {"short": short})

    def transfers(self) -> list[dict[str, Any]]:
        """Every transfer the sandbox made: id, amount, currency, destination, metadata, amount_reversed."""
        return [{**record, "id": record["transfer_id"]}
                for record in self._admin("GET", "/_sandbox/transfers")["data"]]

    def account_balances(self) -> dict[str, dict[str, int]]:
        """acct_ -> currency -> minor units the account holds (the sandbox keeps one figure per currency)."""
        return {record["account_id"]: {currency: int(minor) for currency, minor in record["balance"].items()}
                for record in self._admin("GET", "/_sandbox/accounts")["data"]}

    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
            return json.loads(answer.read() or b"{}")

    def _call(self, method: str, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        from urllib.parse import urlencode

        request = urllib.request.Request(self.url + path, data=urlencode(form).encode(), method=method,
                                         headers={"Authorization": f"Bearer {self.key}",
                                                  "Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                return answer.status, json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as error:
            try:
                return error.code, json.loads(error.read() or b"{}")
            except ValueError:
                return error.code, {}
        except (OSError, ValueError):
            return 0, {}


@dataclass
class SellerPlan:
    """What the storefront does with each seller, drawn from the seed: most have an account from the start; one
    auto-releases (auto_release_days 0); one registers with a commission but no account, one not at all, both
    given an account later; one's account is restricted (its transfers FAILED until ops retries them)."""

    commission_bps: dict[str, int]
    accounts: dict[str, str] = field(default_factory=dict)  # seller -> acct_ (the ones registered with one)
    auto_release: set[str] = field(default_factory=set)
    late: set[str] = field(default_factory=set)  # registered later (with or without a first registration)
    unregistered: set[str] = field(default_factory=set)  # not registered at all until later
    restricted: set[str] = field(default_factory=set)

    @classmethod
    def draw(cls, sellers: list[str], seed: int, *, special: bool = True) -> SellerPlan:
        """`special=False`: every seller registered with an account from the start, none restricted."""
        rng = random.Random(f"{seed}:sellers")
        order = sorted(sellers)
        rng.shuffle(order)
        plan = cls({seller: rng.choice(COMMISSIONS_BPS) for seller in sellers})
        if special and len(order) >= 5:
            plan.auto_release = {order[0]}
            plan.late = {order[1], order[2]}
            plan.unregistered = {order[2]}
            plan.restricted = {order[3]}
        return plan

    def register(self, api: ApiClient, connect: Connect, *, keep_accounts: bool = False) -> None:
        """The sellers' first registration (accounts created at the PSP); the restricted one is restricted.
        `keep_accounts`: a seller registered before with an account keeps it (a demo run again)."""
        for seller, bps in sorted(self.commission_bps.items()):
            if seller in self.unregistered:
                continue
            body: dict[str, Any] = {"commission_bps": bps}
            known = _registered_account(api, seller) if keep_accounts else None
            if seller not in self.late:
                self.accounts[seller] = body["psp_account_id"] = known or connect.create_account()
            if seller in self.auto_release:
                body["auto_release_days"] = 0
            put_seller(api, seller, body)
        for seller in self.restricted:
            connect.restrict(self.accounts[seller])

    def register_late(self, api: ApiClient, connect: Connect) -> None:
        """The late sellers finish onboarding: an account each, which wakes their waiting pay-outs."""
        for seller in sorted(self.late):
            self.accounts[seller] = connect.create_account()
            put_seller(api, seller, {"psp_account_id": self.accounts[seller],
                                     "commission_bps": self.commission_bps[seller]})


def _registered_account(api: ApiClient, seller: str) -> str | None:
    try:
        status, body, _ = api.get_seller(seller)
    except OSError:
        return None
    return body.get("psp_account_id") if status == 200 else None


def put_seller(api: ApiClient, seller: str, body: dict[str, Any], attempts: int = 8) -> dict[str, Any]:
    """PUT the seller, retried as a storefront would on a 5xx or a lost answer (a PUT is idempotent)."""
    status, answer = 0, {}
    for attempt in range(attempts):
        try:
            status, answer, _ = api.put_seller(seller, body)
        except OSError:
            status, answer = 0, {}
        if 200 <= status < 300:
            return answer
        if 400 <= status < 500:
            raise RuntimeError(f"PUT /v1/sellers/{seller}: {status} {answer}")
        time.sleep(min(0.05 * 2**attempt, 1.0))
    raise RuntimeError(f"PUT /v1/sellers/{seller}: {status} {answer} after {attempts} attempts")


@dataclass
class ReleaseRecord:
    released: list[str] = field(default_factory=list)  # answered 202 or 200
    twice: int = 0  # released by two concurrent requests
    answers: dict[int, int] = field(default_factory=dict)  # HTTP status -> count (after retries)
    refused: list[tuple[str, int, Any]] = field(default_factory=list)


def release_all(api: ApiClient, order_ids: list[str], *, seed: int, twice_rate: float = 0.15, threads: int = 8,
                attempts: int = 8) -> ReleaseRecord:
    """Confirm the delivery of each order; a `twice_rate` share is confirmed by two requests at once."""
    record = ReleaseRecord()
    lock = threading.Lock()
    rng = random.Random(f"{seed}:release")
    plan = [(order_id, rng.random() < twice_rate) for order_id in order_ids]

    def once(order_id: str) -> tuple[int, Any]:
        status, body = 0, {}
        for attempt in range(attempts):
            try:
                status, body, _ = api.release(order_id)
            except OSError:
                status, body = 0, {}
            if status and status < 500:
                break
            time.sleep(min(0.05 * 2**attempt, 1.0))
        return status, body

    def one(item: tuple[str, bool]) -> None:
        order_id, twice = item
        if twice:
            with ThreadPoolExecutor(max_workers=2) as pair:
                answers = list(pair.map(once, [order_id, order_id]))
        else:
            answers = [once(order_id)]
        with lock:
            record.twice += twice
            for status, _ in answers:
                record.answers[status] = record.answers.get(status, 0) + 1
            if any(status in (200, 202) for status, _ in answers):
                record.released.append(order_id)
            else:
                record.refused.append((order_id, answers[-1][0], answers[-1][1]))

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, plan))
    return record


def open_payouts(payouts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pay-outs the system still owes a step: something due in the sweep index (an auto-release, a release to
    apply, a transfer to try), or released and not final. Not open: one waiting for its seller's account (its
    `due_at` is only a late safety net) and one dead-lettered (out of the index; its message holds it)."""
    return [p for p in payouts
            if not p.get("awaiting_seller") and not p.get("dead_letter_reason")
            and (p.get("due_at") or p.get("payout_status") in ("RELEASED", "TRANSFERRING"))]


def watch_payouts(read: Callable[[], list[dict[str, Any]]], observed: dict[str, list[str]], *,
                  timeout_s: float, interval_s: float = 0.5,
                  on_idle: Callable[[list[dict[str, Any]]], None] | None = None,
                  is_dead_lettered: Callable[[], set[str]] = set, max_idle: int = 25) -> list[dict[str, Any]]:
    """Read the Payouts table (`read`) until no pay-out is open, recording every status seen; `on_idle` runs
    with the open pay-outs when nothing moved for a few ticks (the chaos run moves the clock and sweeps there).
    Raises TimeoutError, also after `max_idle` idle rounds in a row changed nothing (with the chaos run's rounds
    of 7 minutes or up to the next due transfer, past every backoff of the Transfer worker: what is still open
    then is stuck)."""
    deadline = time.monotonic() + timeout_s
    unchanged, last, failed, idle_rounds = 0, None, 0, 0
    while True:
        read_at = time.monotonic()
        try:
            payouts = read()
        except (BotoCoreError, ClientError):
            failed += 1
            if failed > 50:
                raise
            time.sleep(interval_s)
            continue
        for payout in payouts:
            seen = observed.setdefault(payout["payment_order_id"], [])
            if not seen or seen[-1] != payout["payout_status"]:
                seen.append(payout["payout_status"])
        still = open_payouts(payouts)
        if still:  # the dead-letter queue is read only while something is open
            dead = is_dead_lettered()
            still = [p for p in still if p["payment_order_id"] not in dead]
        if not still:
            return payouts
        if time.monotonic() > deadline or idle_rounds >= max_idle:
            raise TimeoutError(f"{len(still)} pay-outs still open after {timeout_s} s or {idle_rounds} idle "
                               f"rounds: {[(p['payment_order_id'], p['payout_status']) for p in still[:5]]}")
        state = sorted((p["payment_order_id"], p["payout_status"], str(p.get("due_at"))) for p in still)
        unchanged = unchanged + 1 if state == last else 0
        idle_rounds = idle_rounds if state == last else 0
        last = state
        if on_idle and unchanged >= 3:
            on_idle(still)
            unchanged = 0
            idle_rounds += 1
        pause_after_read(interval_s, time.monotonic() - read_at)
