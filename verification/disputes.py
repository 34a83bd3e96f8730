"""Disputes in a chaos run (issue 16): the cardholders' banks dispute a seeded share of the succeeded charges through
the sandbox's admin call (what a bank does at Stripe), some in part; some of those calls are sent twice (the second
must be refused: a charge is disputed once). Some disputes are decided at once, before their opening events have
reached us (the sandbox's webhooks then arrive in any order, some twice); the others once our books show them
open. Half are won, half lost; some decisions are sent twice (the second refused: a closed dispute cannot change).
Then a watch until our Disputes table shows every dispute as the PSP decided it, every part resolved. The
invariants compare the books with the sandbox's own disputes (`psp_disputes`)."""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from verification.invariants import dispute_done
from verification.storefront import pause_after_read

DISPUTE_RATE = 0.3  # of the succeeded charges not refunded in full (ChaosConfig.disputes, --disputes)
PARTIAL_RATE = 0.3  # of the disputes: a part of what remains of the charge
OPENED_TWICE_RATE = 0.2  # the admin call sent twice
AT_ONCE_RATE = 0.3  # decided right after opening, before its events are in our books
DECIDED_TWICE_RATE = 0.2  # the win or loss sent twice
WIN_RATE = 0.5


@dataclass
class DisputeRecord:
    opened: dict[str, str] = field(default_factory=dict)  # dispute id -> charge id
    decided: dict[str, str] = field(default_factory=dict)  # dispute id -> "won" | "lost"
    opened_twice: int = 0
    second_open_refused: int = 0
    decided_twice: int = 0
    second_decision_refused: int = 0
    decided_at_once: int = 0
    unexpected: list[str] = field(default_factory=list)


class SandboxAdmin:
    """The sandbox's `/_sandbox/` dispute calls over HTTP, as a test or an operator makes them."""

    def __init__(self, psp_url: str, attempts: int = 5):
        self.psp_url, self.attempts = psp_url.rstrip("/"), attempts

    def post(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body or {}).encode()
        for attempt in range(self.attempts):
            request = urllib.request.Request(self.psp_url + path, data=data, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
                    return answer.status, json.loads(answer.read() or b"{}")
            except urllib.error.HTTPError as refused:
                return refused.code, json.loads(refused.read() or b"{}")
            except OSError:
                time.sleep(0.1 * 2**attempt)
        raise OSError(f"the sandbox did not answer {path}")

    def open(self, charge_id: str, amount: int | None = None) -> tuple[int, dict[str, Any]]:
        return self.post(f"/_sandbox/charges/{charge_id}/dispute",
                         {"reason": "fraudulent"} | ({"amount": amount} if amount is not None else {}))

    def decide(self, dispute_id: str, outcome: str) -> tuple[int, dict[str, Any]]:
        return self.post(f"/_sandbox/disputes/{dispute_id}/{'win' if outcome == 'won' else 'lose'}")


def plan_disputes(charges: list[dict[str, Any]], seed: int, rate: float,
                  settled: set[str] | None = None) -> list[dict[str, Any]]:
    """Which charges are disputed, for how much (None: all that is not refunded), and how: drawn from the seed in
    the charges' key order. `settled`: the charge keys whose orders our books hold SUCCESS; a charge the PSP took
    while its orders wait in a dead-letter queue for a human is left out (its dispute's events would wait in
    WebhookDlq with it, for the same human)."""
    rng = random.Random(f"{seed}:disputes")
    plan = []
    disputable = [c for c in charges if c["status"] == "succeeded" and c["amount"] > c["amount_refunded"]
                  and (settled is None or (c.get("metadata") or {}).get("charge_key") in settled)]
    for charge in sorted(disputable, key=lambda c: ((c.get("metadata") or {}).get("charge_key", ""), c["charge_id"])):
        if rng.random() >= rate:
            continue
        left = charge["amount"] - charge["amount_refunded"]
        amount = rng.randint(1, left) if left > 1 and rng.random() < PARTIAL_RATE else None
        plan.append({"charge_id": charge["charge_id"], "amount": amount, "twice": rng.random() < OPENED_TWICE_RATE,
                     "at_once": rng.random() < AT_ONCE_RATE, "outcome": "won" if rng.random() < WIN_RATE else "lost",
                     "decided_twice": rng.random() < DECIDED_TWICE_RATE})
    return plan


def open_disputes(admin: SandboxAdmin, plan: list[dict[str, Any]], record: DisputeRecord) -> list[dict[str, Any]]:
    """Open each planned dispute (some twice); decide at once those drawn so. Returns the steps left to decide."""
    later = []
    for step in plan:
        status, answer = admin.open(step["charge_id"], step["amount"])
        if status != 200:
            record.unexpected.append(f"{step['charge_id']}: dispute refused {status} {answer}")
            continue
        record.opened[answer["id"]] = step["charge_id"]
        if step["twice"]:
            record.opened_twice += 1
            again, refused = admin.open(step["charge_id"], step["amount"])
            if again == 400 and (refused.get("error") or {}).get("code") == "charge_disputed":
                record.second_open_refused += 1
            else:
                record.unexpected.append(f"{step['charge_id']}: a second dispute answered {again} {refused}")
        if step["at_once"]:
            record.decided_at_once += 1
            decide(admin, answer["id"], step, record)
        else:
            later.append(step | {"dispute_id": answer["id"]})
    return later


def decide(admin: SandboxAdmin, dispute_id: str, step: dict[str, Any], record: DisputeRecord) -> None:
    status, answer = admin.decide(dispute_id, step["outcome"])
    if status != 200 or answer.get("status") != step["outcome"]:
        record.unexpected.append(f"{dispute_id}: {step['outcome']} answered {status} {answer}")
        return
    record.decided[dispute_id] = step["outcome"]
    if step["decided_twice"]:
        record.decided_twice += 1
        again, refused = admin.decide(dispute_id, step["outcome"])
        if again == 400 and (refused.get("error") or {}).get("code") == "dispute_already_closed":
            record.second_decision_refused += 1
        else:
            record.unexpected.append(f"{dispute_id}: a second decision answered {again} {refused}")


def watch_disputes(read: Callable[[], list[dict[str, Any]]], expected: dict[str, str], *, timeout_s: float,
                   interval_s: float = 0.5, on_idle: Callable[[], None] | None = None) -> None:
    """Until our Disputes table shows each dispute of `expected` (dispute id -> the PSP's status) in that status,
    every part opened (and resolved once decided), the fee booked. TimeoutError otherwise (the invariants then say
    which)."""
    deadline = time.monotonic() + timeout_s
    last: list[str] = []
    while True:
        read_at = time.monotonic()
        ours = {d["dispute_id"]: d for d in read()}
        read_s = time.monotonic() - read_at
        waiting = [i for i, status in expected.items() if not (i in ours and dispute_done(ours[i], status))]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(waiting)} disputes not as the PSP decided, e.g. {waiting[:5]}")
        if on_idle and waiting == last:  # nothing moved since the last read
            on_idle()
        last = waiting
        pause_after_read(interval_s, read_s)


def dispute_shape(ours: list[dict[str, Any]], record: DisputeRecord) -> dict[str, int]:
    statuses = Counter(d.get("dispute_status") for d in ours)
    timing = Counter(part.get("timing") for d in ours for part in (d.get("parts") or {}).values())
    return {"opened": len(record.opened), "opened_twice": record.opened_twice,
            "second_open_refused": record.second_open_refused, "decided_at_once": record.decided_at_once,
            "decided_twice": record.decided_twice, "second_decision_refused": record.second_decision_refused,
            "won": sum(1 for o in record.decided.values() if o == "won"),
            "lost": sum(1 for o in record.decided.values() if o == "lost"),
            **{f"ours_{str(k).lower()}": v for k, v in statuses.items()},
            **{f"parts_{str(k).lower()}": v for k, v in timing.items()}}

