"""The chaos run: orders through the local stack while the PSP, the network and our own functions fail.

`python -m verification.chaos --seed 1 --orders 10000` (make chaos). Faults, all drawn from the seed:
- PSP (the sandbox): 500/502/503, 429, connection resets, timeouts, latency, and charges whose answer is lost,
  on at least 20% of PaymentIntent requests (drawn per request identity, so the same seed gives the same faults);
- our functions: a share of Lambda invocations killed at a random point: before the handler runs, right after
  one of its AWS or PSP calls (the write happened, the process died), or after the handler, before the answer;
- SQS: a share of batches delivered twice;
- PaymentIntent search (the executor's look-up): results lag a minute behind creation, as Stripe's search does;
- overnight charges: a few charges whose answers are lost and whose look-ups fail all day, so their orders end
  dead-lettered; then 25 hours pass (the PSP prunes its idempotency keys) and the on-call engineer redrives them.
The storefront places multi-seller checkouts in one to three currencies (one charge per checkout and currency),
most paid with a single-use PaymentMethod created per checkout as Stripe.js creates it.
Time is compressed: the workflow's retry waits are scaled down and, whenever the system is idle, the clock moves
seven minutes and the sweeper runs. At the end every invariant of architecture.md is checked against the
sandbox's own records, and a table says what was injected and what held.

`--stripe-outage AT:SECONDS` (issue 18, failover): the stack runs with the Adyen sandbox too and the routing
`{"failover": {"stripe": "adyen"}}` (Stripe charges everything; Adyen takes card charges over while Stripe's
circuit breaker is open). Once a share AT (0-1) of the orders was placed, the Stripe sandbox refuses every request
(a connection reset) for SECONDS of wall time, then the run's usual faults come back. The breaker opens by the
executors' own failures (no operator's open). The storefront asks `POST /v1/payment_routes` before each checkout and
pays one-currency card checkouts with the routed PSP's card (Adyen's encrypted card while the route names Adyen;
a stale route, answered 422, is asked again and paid with the other PSP's card); other methods, 3-D Secure cards
and multi-currency checkouts stay at Stripe, and their charges wait, parked (outcome `parked`, EXECUTING until the
sweeper drives them), for its return; one never sent for psp_unavailable_fail_after_s of the system's clock ends
FAILED `psp_unavailable`, which the checks accept in this run only with nothing charged at either PSP (the clock
does not jump during the outage, so a short window ends before that). Invariant 8 compares
both PSPs' own books by charge key: no charge paid at both, each order charged once at the PSP it records. The
pay-outs of Adyen-charged orders are Stripe Connect transfers without a source charge (from the platform's Stripe
balance); disputes are drawn among Stripe's charges only (the Stripe sandbox's); refunds of Adyen orders go to
Adyen, finished by its REFUND notifications. Without the option nothing of this runs: the default run is as before.

`disable=` switches one protection off (the mutation tests prove the checker then reports the violation);
MUTATIONS says what each switch patches.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import pkgutil
import random
import re
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from botocore.client import BaseClient

from functions.shared import clock, psp
from functions.shared.names import (
    balance_sort_key,
    charge_idempotency_key,
    charge_key,
    ledger_transaction_id,
    wallet_shard_key,
)
from functions.shared.tables import PaymentTables
from local.lambda_runtime import Invocation, LambdaKilled
from local.moto_server import free_port
from local.stack import LocalStack, Ports, default_adyen_sandbox
from verification.disputes import (
    DISPUTE_RATE,
    DisputeRecord,
    SandboxAdmin,
    decide,
    dispute_shape,
    open_disputes,
    plan_disputes,
    watch_disputes,
)
from verification.driver import RunRecord, place_all, watch_until_settled
from verification.invariants import PSP_DOWN, Result, check, collect, peek_queue, scan
from verification.payouts import Connect, ReleaseRecord, SellerPlan, release_all, watch_payouts
from verification.refunds import RefundRecord, refund_some, watch_refunds
from verification.storefront import (
    BUYER_ACTIONS,
    DEBIT_ACCOUNTS,
    MEAN_ORDERS_PER_CHECKOUT,
    ApiClient,
    PaymentMethods,
    Router,
    Workload,
    make_checkouts,
)

log = logging.getLogger("chaos")

PSP_FAULT_RATES = {  # 28% of PaymentIntent requests (retries and replays included in the denominator)
    "http_500": 0.04, "http_502": 0.04, "http_503": 0.04, "rate_limit": 0.04, "connection_reset": 0.04,
    "lost_response": 0.05, "timeout": 0.01, "latency": 0.02,
}
PSP_FAULT_PARAMS = {"timeout": {"hold_seconds": 1.5, "after_processing": True}, "latency": {"delay_ms": 150}}
SEARCH_LAG_S = 60  # Stripe's search is eventually consistent: a new PaymentIntent is found "within a minute"
SINGLE_USE_RATE = 0.9  # buyers typing a card number (a single-use PaymentMethod); the others send pm_card_*
ASYNC_RATE = 0.1  # one-currency checkouts paid by 3-D Secure or bank debit (issue 17)
DEBIT_BANK_SECONDS = 600  # a bank debit's answer in the run: two of the idle clock's jumps, not three days
RELEASE_RATE = 0.9  # deliveries the storefront confirms; the rest stay HELD (but the auto-releasing seller's)
IDLE_S = 420  # the virtual time an idle round lets pass (then the sweeper runs)
MAX_IDLE_JUMP_S = 6 * 3600  # an idle round of the pay-outs goes at most this far, to the next due transfer
SHORT_SWEEPS = 2  # sweeps during which the platform's PSP balance cannot cover a transfer
# --stripe-outage: Stripe charges everything; Adyen takes card charges over while Stripe's breaker is open
FAILOVER_ROUTING = {"failover": {"stripe": "adyen"}}
OUTAGE_FAULT = "connection_reset"  # every request to the Stripe sandbox during the outage: no answer at all

# Each protection the mutation tests switch off: what is patched, and how. Re-point a target here if the code it
# names moves (a run reports how often each patch was hit, and the mutation tests fail on a patch never hit).
MUTATIONS = {
    "psp_idempotency_key": ("stripe._payment_intent_service.PaymentIntentService.create",
                            "every PaymentIntent create sends a new random key, not the adapter's "
                            "charge:<checkout_id>:<CURRENCY>"),
    "wallet_guard": ("functions.shared.tables.WalletTable.apply_movement",
                     "the balance is updated without the once-only movement item"),
    "ledger_guard": ("functions.ledger.journal.Transaction.transaction_id",
                     "every write of a pay-in gets a new transaction id"),
    "charge_lookup": ("functions.shared.psp.PspClient.find_payment_intent",
                      "the look-up before creating a charge again finds nothing"),
    "transfer_idempotency_key": ("stripe._transfer_service.TransferService.create",
                                 "every Transfer create sends a new random key, not transfer:<payment_order_id>"),
}
PROTECTIONS = tuple(MUTATIONS)


@dataclass
class ChaosConfig:
    seed: int = 1
    orders: int = 10_000
    kill_rate: float = 0.07
    kill_after_money_rate: float = 0.0  # besides kill_rate: invocations dying right after a charge/transfer/refund
    # per message (one per charge, a third of the per-order messages of before): a batch holding a drawn message
    # is delivered twice
    duplicate_rate: float = 0.1
    overnight_rate: float = 0.005
    retry_time_scale: float = 0.02
    disable: str | None = None
    timeout_s: float = 7200.0
    max_in_flight: int = 300
    payin_only: bool = False  # stop after the pay-in (charges, wallets, ledger): no releases, transfers, refunds
    payouts_only: bool = False  # stop after the pay-outs: no refunds or disputes
    search_lag_s: float = SEARCH_LAG_S
    disputes: float = DISPUTE_RATE  # of the succeeded charges not refunded in full, disputed after the refunds
    # of the one-currency checkouts, paid by a 3-D Secure card (completed, failed or abandoned) or a bank debit
    async_rate: float = ASYNC_RATE
    single_use_rate: float = SINGLE_USE_RATE  # of the card checkouts, a number typed (a single-use PaymentMethod)
    # (AT, SECONDS): Stripe refuses every request for SECONDS of wall time once a share AT of the orders was placed;
    # the stack then runs with Adyen as Stripe's failover PSP. None: no outage, no Adyen (the default run)
    stripe_outage: tuple[float, float] | None = None


@dataclass
class ChaosReport:
    config: ChaosConfig
    orders: int
    faults: Counter
    results: list[Result]
    duration_s: float
    statuses: Counter = field(default_factory=Counter)
    shares: dict[str, tuple[int, int]] = field(default_factory=dict)
    reads_retried: dict[str, list[Any]] = field(default_factory=dict)  # RunRecord.reads_retried
    overnight: dict[str, str] = field(default_factory=dict)  # charge key -> its orders' outcome
    rejected: Counter = field(default_factory=Counter)  # HTTP status -> checkouts refused (API or PaymentMethod)
    mutation_hits: Counter = field(default_factory=Counter)
    workload: dict[str, int] = field(default_factory=dict)  # what the storefront placed (see _workload_shape)
    payouts: dict[str, int] = field(default_factory=dict)  # releases and pay-out outcomes (see _payout_shape)
    refunds: dict[str, int] = field(default_factory=dict)  # refunds asked and their outcomes (see _refund_shape)
    disputes: dict[str, int] = field(default_factory=dict)  # disputes opened and decided (disputes.dispute_shape)
    webhooks: dict[str, int] = field(default_factory=dict)  # the PSP's webhook deliveries (see _webhook_shape)
    failover: dict[str, int] = field(default_factory=dict)  # --stripe-outage: charges moved, parked, trips (_failover)

    @property
    def violations(self) -> int:
        return sum(len(r.violations) for r in self.results)

    @property
    def total_faults(self) -> int:
        return sum(self.faults.values())

    def last_line(self) -> str:
        moved = (f" failover={self.failover.get('charges_failed_over_to_adyen', 0)}"
                 f" parked_then_succeeded={self.failover.get('parked_then_succeeded', 0)}"
                 if self.config.stripe_outage else "")
        return (f"chaos seed={self.config.seed} orders={self.orders} faults={self.total_faults} "
                f"violations={self.violations}{moved}")


# -- kills ---------------------------------------------------------------------------------------------


class KillInjector:
    """Kills a share of invocations at a point drawn from the seed and the invocation's identity."""

    def __init__(self, seed: int, rate: float, faults: Counter, after_money_rate: float = 0.0):
        self.seed, self.rate, self.faults = seed, rate, faults
        self.after_money_rate = after_money_rate  # besides `rate`: dies right after a call that moves money
        self._local = threading.local()
        self._seen: Counter = Counter()
        self._lock = threading.Lock()
        self.invocations = 0

    def before(self, inv: Invocation) -> None:
        with self._lock:
            self.invocations += 1
        identity = _identity(inv.event)
        short = inv.function_name.split("-")[1] if "-" in inv.function_name else inv.function_name
        with self._lock:
            nth = self._seen[(short, identity)]
            self._seen[(short, identity)] += 1
        rng = random.Random(f"{self.seed}:kill:{short}:{identity}:{nth}")
        self._local.plan, self._local.calls, self._local.drawn = None, 0, f"{short}:{identity}:{nth}"
        if rng.random() >= self.rate:
            return
        point = rng.choice(["start", "after_call", "after_call", "end"])
        if point == "start":
            self._count("kill_before_handler")
            raise LambdaKilled("killed before the handler ran")
        self._local.plan = (point, rng.randint(1, 3))

    def after_call(self) -> None:
        plan = getattr(self._local, "plan", None)
        if plan is None or plan[0] != "after_call":
            return
        self._local.calls += 1
        if self._local.calls == plan[1]:
            self._local.plan = None
            self._count("kill_after_a_call")
            raise LambdaKilled(f"killed after call {plan[1]}")

    def after_money_call(self, name: str) -> None:
        """A charge, transfer or refund has just reached the PSP: the worst moment to die, drawn on its own."""
        drawn = getattr(self._local, "drawn", None)
        if not self.after_money_rate or drawn is None:
            return
        if random.Random(f"{self.seed}:kill_after_money:{name}:{drawn}").random() < self.after_money_rate:
            self._local.drawn = None
            self._count("kill_after_money_call")
            raise LambdaKilled(f"killed right after {name}")

    def after(self, inv: Invocation) -> None:
        plan, self._local.plan = getattr(self._local, "plan", None), None
        if plan is not None:  # "end", or fewer calls than drawn: die before answering
            self._count("kill_before_answer")
            raise LambdaKilled("killed after the handler, before answering")

    def _count(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1


def _identity(event: Any) -> str:
    if isinstance(event, dict):
        if "charge_key" in event:
            return f"{event['charge_key']}:{event.get('attempt')}"
        if "payment_order_id" in event:
            return f"{event['payment_order_id']}:{event.get('attempt')}"
        if isinstance(event.get("Records"), list):
            # the bodies, not the messageIds (random), so the same seed kills the same deliveries
            return ",".join(str(r.get("body") or r.get("messageId")) for r in event["Records"])
        if "routeKey" in event:
            return f"{event['routeKey']}:{(event.get('body') or '')[:400]}"
        if "id" in event:
            return str(event["id"])
    return str(event)[:200]


# The adapter's methods that reach the PSP: a kill can land right after any of them.
PSP_CALLS = ("charge", "retrieve", "find_payment_intent", "create_customer", "attach", "attached_customer",
             "transfer", "find_transfer")
MONEY_CALLS = ("charge", "transfer", "refund")  # of them, those that move money (`--kill-after-money-rate`)


@contextlib.contextmanager
def _calls_observed(injector: KillInjector) -> Iterator[None]:
    """Let the injector kill right after an AWS or PSP call made by a handler."""
    original_call = BaseClient._make_api_call

    def api_call(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        result = original_call(client, operation, params)
        injector.after_call()
        return result

    def observed(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: psp.PspClient, *args: Any, **kwargs: Any) -> Any:
            result = original(self, *args, **kwargs)
            if name in MONEY_CALLS:
                injector.after_money_call(name)
            injector.after_call()
            return result
        return call

    with contextlib.ExitStack() as patches:
        patches.enter_context(mock.patch.object(BaseClient, "_make_api_call", api_call))
        for name in dict.fromkeys((*PSP_CALLS, *MONEY_CALLS)):
            patches.enter_context(mock.patch.object(psp.PspClient, name, observed(name, getattr(psp.PspClient, name))))
        yield


class SearchFaults:
    """Two faults of Stripe's PaymentIntent search, injected at the SDK: the sandbox's search is immediate, and its
    queued faults match idempotency keys, which a search has none of. Results lag `lag_s` behind creation (so
    within that minute only the idempotency key stops a second charge), and the look-ups of the overnight charges
    fail with a connection error until the night has passed."""

    _KEY = re.compile(r"charge_key'\]\s*:\s*'([^']*)'")

    def __init__(self, now: Callable[[], float], faults: Counter, lag_s: float = SEARCH_LAG_S):
        self.now, self.faults, self.lag_s = now, faults, lag_s
        self.unreachable: set[str] = set()  # charge keys
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        import stripe
        from stripe._payment_intent_service import PaymentIntentService

        original = PaymentIntentService.search

        def search(service: Any, params: Any = None, options: Any = None) -> Any:
            named = self._KEY.search(str((params or {}).get("query", "")))
            if named and named.group(1) in self.unreachable:
                self._count("overnight_lookups_reset")
                raise stripe.APIConnectionError("connection reset (overnight: the PSP is unreachable for it)")
            found = original(service, params, options)
            visible = [intent for intent in found.data if intent.created <= self.now() - self.lag_s]
            if len(visible) < len(found.data):
                self._count("search_results_lagging")
                found.data = visible
            return found

        with mock.patch.object(PaymentIntentService, "search", search):
            yield

    def _count(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1


@contextlib.contextmanager
def _compressed_retries(scale: float) -> Iterator[None]:
    """Scale the waits of the workflow's Retry clauses (moto's interpreter sleeps in real time)."""
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    real_sleep = time.sleep
    scaled = type("ScaledTime", (), {"sleep": staticmethod(lambda seconds: real_sleep(seconds * scale)),
                                     "__getattr__": lambda self, name: getattr(time, name)})()
    with mock.patch.object(retrier_decl, "time", scaled):
        yield


# -- protections switched off (mutation tests) -----------------------------------------------------------


@contextlib.contextmanager
def _without(protection: str | None, hits: Counter) -> Iterator[None]:
    """Switch one protection off (MUTATIONS); `hits` counts how often the patch ran."""
    if protection is None:
        yield
        return
    if protection not in MUTATIONS:
        raise ValueError(f"unknown protection {protection!r}; known: {', '.join(PROTECTIONS)}")
    target = MUTATIONS[protection][0]
    original = pkgutil.resolve_name(target)

    def hit() -> None:
        hits[protection] += 1

    with mock.patch(target, _MUTANTS[protection](original, hit)):
        yield


def _random_key(original: Any, hit: Callable[[], None]) -> Any:
    def create(self: Any, params: Any = None, options: Any = None) -> Any:
        hit()
        return original(self, params, {**(options or {}), "idempotency_key": str(uuid.uuid4())})
    return create


def _unguarded_movement(original: Any, hit: Callable[[], None]) -> Any:
    from functions.shared.tables import WALLET_BUCKETS, WalletTable, to_item, wallet_shard

    def apply_movement(self: WalletTable, seller_account: str, kind: str, reference: str, currency: str, *,
                       now: str, details: dict[str, Any] | None = None, **deltas: int) -> bool:
        hit()
        shard = wallet_shard((details or {}).get("payment_order_id") or reference)
        self._db.update_item(
            TableName=self.table, Key=to_item({"account_id": wallet_shard_key(seller_account, shard),
                                               "sk": balance_sort_key(currency)}),
            UpdateExpression="ADD " + ", ".join(f"{b}_minor :{b}" for b in WALLET_BUCKETS)
                             + " SET currency = :c, seller_account = :s",
            ExpressionAttributeValues=to_item({**{f":{b}": deltas.get(b, 0) for b in WALLET_BUCKETS},
                                               ":c": currency, ":s": seller_account}))
        return True
    return apply_movement


def _new_transaction_ids(original: Any, hit: Callable[[], None]) -> Any:
    def transaction_id(self: Any) -> str:
        hit()
        return f"{ledger_transaction_id(self.kind, self.reference)}#{uuid.uuid4().hex[:8]}"
    return property(transaction_id)


def _no_lookup(original: Any, hit: Callable[[], None]) -> Any:
    def find_payment_intent(self: Any, *args: Any, **kwargs: Any) -> None:
        hit()
        return None
    return find_payment_intent


_MUTANTS: dict[str, Callable[[Any, Callable[[], None]], Any]] = {
    "psp_idempotency_key": _random_key, "transfer_idempotency_key": _random_key,
    "wallet_guard": _unguarded_movement, "ledger_guard": _new_transaction_ids,
    "charge_lookup": _no_lookup,
}


# -- the run -------------------------------------------------------------------------------------------


def run(config: ChaosConfig, progress: Any = None) -> ChaosReport:
    started = time.monotonic()
    faults: Counter = Counter()
    clock.reset()
    injector = KillInjector(config.seed, config.kill_rate, faults, config.kill_after_money_rate)
    hits: Counter = Counter()
    parked: set[str] = set()
    with _without(config.disable, hits), _compressed_retries(config.retry_time_scale), _calls_observed(injector), \
            _parks_observed(parked):
        stack = _started_stack(adyen=config.stripe_outage is not None)
        try:
            search = SearchFaults(stack.sandbox.clock.timestamp, faults, config.search_lag_s)
            with search.installed():
                report = _drive(stack, config, injector, faults, started, progress, search, parked)
            report.mutation_hits = hits
            return report
        finally:
            stack.stop()
            clock.reset()


@contextlib.contextmanager
def _parks_observed(parked: set[str]) -> Iterator[None]:
    """Note the charge keys the executor parked while their PSP was down (functions/executor/handler.py
    `_park_if_psp_down`): the report counts those that then succeeded."""
    original = PaymentTables.park_for_psp

    def park_for_psp(self: PaymentTables, key: str, attempt: int, due_at: str, now: str) -> dict[str, Any] | None:
        charge = original(self, key, attempt, due_at, now)
        if charge is not None:  # parked (EXECUTING, outcome `parked`), or about to end FAILED psp_unavailable
            parked.add(key)
        return charge

    with mock.patch.object(PaymentTables, "park_for_psp", park_for_psp):
        yield


def _started_stack(attempts: int = 3, adyen: bool = False) -> LocalStack:
    """A local stack on free ports. A port found free can be taken by another process (a second test worker's
    connections) before the stack binds it; the stack then cleans up and is started again on new ports. `adyen`:
    with the Adyen sandbox and the failover routing (--stripe-outage)."""
    for attempt in range(1, attempts + 1):
        failover: dict[str, Any] = ({"adyen_sandbox": default_adyen_sandbox,
                                     "psp_routing": json.dumps(FAILOVER_ROUTING)} if adyen else {})
        stack = LocalStack(ports=Ports(aws=free_port(), api=free_port(), psp=free_port(),
                                       **({"adyen": free_port()} if adyen else {})), schedule_interval=10**9,
                           function_concurrency=4, **failover,
                           extra_env={"POWERTOOLS_LOG_LEVEL": "CRITICAL", "POWERTOOLS_LOGGER_SAMPLE_RATE": "0",
                                      "POWERTOOLS_METRICS_DISABLED": "true", "PSP_TIMEOUT_S": "1"})
        try:
            return stack.start()
        except OSError as error:
            if error.errno != errno.EADDRINUSE or attempt == attempts:
                raise
    raise AssertionError("unreachable")


def _overnight(stack: LocalStack, workload: Workload, config: ChaosConfig, search: SearchFaults,
               faults: Counter) -> list[str]:
    """Draw the overnight charges: charged, the answer lost; then the PSP is unreachable for them all day (their
    creates by their idempotency key, their look-ups by their charge key). Returns their charge keys."""

    rng = random.Random(f"{config.seed}:overnight")
    drawn = [(checkout_id, currency) for checkout_id, currency in workload.charges
             if rng.random() < config.overnight_rate]
    for checkout_id, currency in drawn:
        key = charge_idempotency_key(checkout_id, currency)  # the key the adapter sends
        stack.sandbox.faults.push("lost_response", match={"idempotency_key": key})
        stack.sandbox.faults.push("connection_reset", match={"idempotency_key": key}, times=10_000)
    search.unreachable.update(charge_key(checkout_id, currency) for checkout_id, currency in drawn)
    faults["overnight_charges"] = len(drawn)
    return [charge_key(checkout_id, currency) for checkout_id, currency in drawn]


def _usual_faults(sandbox: Any, seed: int) -> None:
    sandbox.faults.configure(seed=seed, rates=PSP_FAULT_RATES, paths=["/v1/payment_intents", "/v1/transfers"],
                             params=PSP_FAULT_PARAMS)


def _outage(sandbox: Any, config: ChaosConfig, record: RunRecord, orders: int, placing: threading.Event,
            faults: Counter, started: float, window: dict[str, float]) -> None:
    """--stripe-outage AT:SECONDS: once a share AT of the orders was placed, Stripe refuses every request for
    SECONDS (wall time), then the run's usual faults come back (queued ones, the overnight charges', stay queued)."""
    assert config.stripe_outage is not None
    at, seconds = config.stripe_outage
    while len(record.accepted_order_ids) < at * orders and placing.is_set():
        time.sleep(0.2)
    window["opened_s"] = time.monotonic() - started
    sandbox.faults.configure(seed=config.seed, rates={OUTAGE_FAULT: 1.0}, paths=["/v1/"])
    log.info("Stripe outage: every request refused for %.0f s, %.0f s into the run", seconds, window["opened_s"])
    time.sleep(seconds)
    _usual_faults(sandbox, config.seed)
    window["closed_s"] = time.monotonic() - started
    faults["stripe_outage_s"] = round(seconds)
    log.info("Stripe outage over, %.0f s into the run", window["closed_s"])


def _drive(stack: LocalStack, config: ChaosConfig, injector: KillInjector, faults: Counter, started: float,
           progress: Any, search: SearchFaults, parked: set[str]) -> ChaosReport:
    sandbox = stack.sandbox
    adyen = getattr(stack.adyen_sandbox, "sandbox", None)  # the Adyen sandbox's books (--stripe-outage only)
    _usual_faults(sandbox, config.seed)
    workload = make_checkouts(max(1, round(config.orders / MEAN_ORDERS_PER_CHECKOUT)), seed=config.seed,
                              decline_rate=0.08, prefix="chaos", single_use_rate=config.single_use_rate,
                              async_rate=config.async_rate)
    sandbox.state.debit_processing_seconds = DEBIT_BANK_SECONDS
    overnight = _overnight(stack, workload, config, search, faults)
    api = ApiClient(stack.api_url, stack.api_key, timeout=60)
    connect = Connect(stack.psp_url or "")
    sellers = SellerPlan.draw(sorted({o["seller_account"] for c in workload.checkouts for o in c["payment_orders"]}),
                              config.seed)
    sellers.register(api, connect)

    def duplicate(messages: list[dict[str, Any]]) -> bool:
        """Each message is drawn (from its content and receive count: MessageIds are random); a batch holding a
        drawn message is delivered twice, whole, as SQS would redeliver it."""
        shares["messages"] += len(messages)
        if any(random.Random(f"{config.seed}:dup:{m.get('Body', '')}:"
                             f"{m.get('Attributes', {}).get('ApproximateReceiveCount')}").random()
               < config.duplicate_rate for m in messages):
            faults["duplicate_deliveries"] += len(messages)
            return True
        return False

    shares: Counter = Counter()
    stack.events.duplicate_delivery = duplicate
    stack.runtime.before_invoke.append(injector.before)
    stack.runtime.after_invoke.append(injector.after)

    record = RunRecord()
    settled_so_far = [0]
    placing = threading.Event()
    placing.set()
    failure: list[BaseException] = []

    def pace() -> None:
        """A storefront's steady stream rather than a flood: at most `max_in_flight` orders not yet final."""
        while len(record.accepted_order_ids) - settled_so_far[0] > config.max_in_flight:
            time.sleep(0.1)

    payment_methods = PaymentMethods(stack.psp_url or "")
    router = Router(api, payment_methods) if config.stripe_outage else None

    def place() -> None:
        try:
            place_all(api, workload, seed=config.seed, replay_rate=0.05, conflict_rate=0.02, threads=8,
                      read_after_write=True, on_progress=progress, pace=pace, record=record,
                      payment_methods=payment_methods, router=router)
        except BaseException as error:  # re-raised by the main thread below
            failure.append(error)
        finally:
            placing.clear()

    def tick(done: int, total: int) -> None:
        settled_so_far[0] = done
        _log_tick(done, total)

    placer = threading.Thread(target=place, name="storefront", daemon=True)
    buyers_done = threading.Event()
    challenged = threading.Thread(target=_buyers, name="buyers", daemon=True,
                                  args=(api, sandbox, workload, record, placing, buyers_done, faults))
    aws = _Aws(stack)
    sweeper = next(t.rule_logical_id for t in stack.events.schedules)

    sfn = stack.client("stepfunctions")
    window: dict[str, float] = {}  # the outage's opening and closing, seconds into the run; the top-up

    def idle(seconds: float = IDLE_S) -> None:
        """Nothing moved for a while: let seven minutes (or `seconds`) pass, then sweep. Only when no execution
        runs: an Express execution lives five minutes at most, so jumping the clock under a running one would let
        it outlive the sweeper's deadline, which real time never does."""
        running = sfn.list_executions(stateMachineArn=stack.outputs["StateMachineArn"], statusFilter="RUNNING")
        if running["executions"]:
            return
        if "opened_s" in window and "closed_s" not in window:
            # during the Stripe outage time is not compressed: SECONDS of it are SECONDS of the system's clock too
            # (a jump would pass the breaker's wait at each idle round: a probe, a refusal, a new wait, while the
            # route endpoint names Stripe again for a moment after each wait); only the sweeper runs
            stack.events.fire(sweeper)
            return
        clock.advance(seconds)
        sandbox.advance_clock(seconds)
        if adyen is not None:
            adyen.advance_clock(seconds)
        stack.events.fire(sweeper)

    outage = threading.Thread(target=_outage, name="stripe-outage", daemon=True,
                              args=(sandbox, config, record, len(workload.order_ids), placing, faults, started,
                                    window)) if config.stripe_outage else None
    placer.start()
    challenged.start()
    if outage is not None:
        outage.start()
    try:
        watch_until_settled(aws, stack.outputs, record.accepted_order_ids, record, timeout_s=config.timeout_s,
                            interval_s=0.5, on_idle=idle, on_tick=tick, more_coming=placing.is_set)
    except TimeoutError:  # what never settled is reported by invariant 2 below
        _log_unsettled(stack)
    placer.join()
    buyers_done.set()
    challenged.join(timeout=30)
    if outage is not None:  # a pay-in shorter than the outage: its end is waited for, then what it parked settles
        outage.join()
        try:
            watch_until_settled(aws, stack.outputs, record.accepted_order_ids, record, timeout_s=config.timeout_s,
                                interval_s=0.5, on_idle=idle)
        except TimeoutError:
            _log_unsettled(stack)
    if failure:
        raise failure[0]

    # The night passes; in the morning on-call redrives what the dead-letter queues hold.
    sandbox.faults.clear_queued()
    search.unreachable.clear()
    LocalStack.wait_until(lambda: not sfn.list_executions(stateMachineArn=stack.outputs["StateMachineArn"],
                                                          statusFilter="RUNNING")["executions"], timeout=120)
    clock.advance(25 * 3600)
    sandbox.advance_clock(25 * 3600)
    if adyen is not None:
        adyen.advance_clock(25 * 3600)
    _log_phase("on-call's redrive", started)
    redriven = _redrive_dead_lettered(stack)
    faults["redriven_by_on_call"] = redriven
    try:
        # A redrive is one more attempt (ops/orders.py): one that meets the day's faults again is dead-lettered
        # again, which invariant 2 allows; waiting for it to be final would wait for a second on-call round.
        watch_until_settled(aws, stack.outputs, record.accepted_order_ids, record, timeout_s=config.timeout_s,
                            interval_s=0.5, on_idle=idle)
    except TimeoutError:
        _log_unsettled(stack)

    if adyen is not None and not config.payin_only:
        window["topped_up_currencies"] = _top_up_from_adyen(sandbox, adyen.payments())
    if config.payin_only:
        payouts, refunds, disputes = PayoutRun(ReleaseRecord()), RefundRecord(), DisputeRecord()
    else:
        _log_phase("pay-outs", started)
        payouts = _pay_out(stack, config, api, connect, sellers, idle, faults)
        refunds, disputes = RefundRecord(), DisputeRecord()
        if not config.payouts_only:
            _log_phase("refunds", started)
            refunds = _refund(stack, config, api, idle, faults)
            _log_phase("disputes", started)
            disputes = _dispute(stack, config, idle, faults)
    _log_phase("the checks", started)

    stats = sandbox.faults.stats()
    # pay-in faults apart from transfer faults: how often a transfer is retried depends on timing (the sweeper's
    # auto-releases, the platform's balance coming back), so only the pay-in draws repeat exactly for a seed
    for path, counts in stats["drawn_by_path"].items():
        for kind, count in counts.items():
            if path == "/v1/":  # the outage's refusals (every path), counted apart from the seeded faults
                faults[f"stripe_outage_{kind}"] += count
                continue
            faults[f"{'transfer' if path.startswith('/v1/transfers') else 'psp'}_{kind}"] += count
    for kind, count in stats["injected"].items():  # the overnight charges' pinned faults, counted apart
        if count > stats["drawn"].get(kind, 0):
            faults[f"overnight_psp_{kind}"] += count - stats["drawn"].get(kind, 0)
    snapshot = collect(aws, stack.outputs, sandbox.charges(), observed_statuses=record.observed_statuses,
                       replays=record.replays, unreadable_after_write=record.unreadable_after_write,
                       accepted_order_ids=record.accepted_order_ids, card_succeeds=workload.card_succeeds,
                       psp_transfers=connect.transfers(), psp_account_balances=connect.account_balances(),
                       observed_payout_statuses=payouts.observed, released_order_ids=payouts.releases.released,
                       retried_payouts=payouts.retried, now=clock.iso(), accepted_refunds=refunds.accepted,
                       refund_answers_wrong=refunds.unexpected,
                       psp_disputes=None if config.payin_only or config.payouts_only else _psp_disputes(sandbox),
                       dispute_answers_wrong=disputes.unexpected,
                       adyen_payments=adyen.payments() if adyen is not None else None,
                       psp_outage=config.stripe_outage is not None)
    report = ChaosReport(config, len(record.accepted_order_ids), faults, check(snapshot),
                         time.monotonic() - started,
                         Counter(o["payment_order_status"] for o in snapshot.orders),
                         rejected=Counter(str(status) for _, status, _ in record.rejected))
    report.reads_retried = record.reads_retried
    report.overnight = _outcomes(overnight, snapshot.orders)
    report.workload = _workload_shape(workload, record)
    report.payouts = _payout_shape(snapshot.payouts, payouts)
    report.refunds = _refund_shape(snapshot.refunds, refunds)
    report.disputes = dispute_shape(snapshot.disputes, disputes)
    report.webhooks = _webhook_shape(sandbox)
    if config.stripe_outage:
        report.failover = _failover(stack, snapshot.orders, parked, router, window)
    kills = sum(v for k, v in faults.items() if k.startswith("kill_"))
    psp_faults = sum(v for k, v in faults.items() if k.startswith(("psp_", "transfer_")))
    refused_in_outage = sum(stats["drawn_by_path"].get("/v1/", {}).values())
    report.shares = {
        # seeded draws; overnight ones and the outage's refusals apart
        "psp requests faulted": (psp_faults, stats["drawn_from"] - refused_in_outage),
        "invocations killed": (kills, injector.invocations),
        "messages delivered twice": (faults["duplicate_deliveries"], shares["messages"]),
    }
    return report


def _top_up_from_adyen(sandbox: Any, payments: list[dict[str, Any]]) -> int:
    """The platform's treasury moves what Adyen collected into its Stripe balance (a Stripe top-up), since an
    Adyen-charged order's pay-out is a Stripe Connect transfer without a source charge: it draws on the platform's
    available Stripe balance (functions/shared/psp.py `transfer`). Without it those transfers wait, postponed, for
    the Stripe charges' funds to become available (two days of the sandbox's clock): correct, but many sweeps.
    Returns the currencies topped up."""
    from functions.shared import adyen_units, psp_units

    totals: Counter = Counter()
    for payment in payments:
        if payment.get("resultCode") == "Authorised" and not payment.get("cancelled"):
            money = adyen_units.from_adyen_amount(payment["amount"])
            totals[money.currency] += psp_units.to_stripe_amount(money)
    state = sandbox.state
    for currency, amount in sorted(totals.items()):
        source = state.new_id("tu")
        with state.lock:
            state._new_balance_transaction(amount=amount, fee=0, currency=currency.lower(), kind="topup",
                                           source=source, description="treasury: Adyen's collections (chaos run)")
    return len(totals)


def _failover(stack: LocalStack, orders: list[dict[str, Any]], parked: set[str], router: Router | None,
              window: dict[str, float]) -> dict[str, int]:
    """--stripe-outage: charges at Adyen by failover (and their outcomes), charges parked while Stripe was down
    and how they ended, Stripe's breaker trips (PspHealth), and what the storefront did."""
    db = stack.client("dynamodb")
    charges = scan(db, stack.outputs["ChargesTableName"],
                   attributes=("charge_key", "psp", "psp_route", "charge_status"))
    status_of: dict[str, set[str]] = {}
    for order in orders:
        status_of.setdefault(charge_key(order["checkout_id"], order["currency"]), set()).add(
            order["payment_order_status"])
    moved = [c for c in charges if str(c.get("psp_route", "")).endswith("/failover")]
    health = {str(item["psp"]): item for item in scan(db, stack.outputs["PspHealthTableName"])}
    adyen_orders = [o for o in orders if o.get("psp") == "adyen"]
    payouts = {p["payment_order_id"]: p["payout_status"]
               for p in scan(db, stack.outputs["PayoutsTableName"], attributes=("payment_order_id", "payout_status"))}
    return {
        "charges_failed_over_to_adyen": len(moved),
        "failed_over_succeeded": sum(status_of.get(c["charge_key"]) == {"SUCCESS"} for c in moved),
        "failed_over_failed": sum(status_of.get(c["charge_key"]) == {"FAILED"} for c in moved),
        "adyen_orders": len(adyen_orders),
        "adyen_orders_succeeded": sum(o["payment_order_status"] == "SUCCESS" for o in adyen_orders),
        "adyen_orders_transferred": sum(payouts.get(o["payment_order_id"]) == "TRANSFERRED" for o in adyen_orders),
        "charges_parked": len(parked),
        "parked_then_succeeded": sum(status_of.get(key) == {"SUCCESS"} for key in parked),
        "parked_then_failed": sum(status_of.get(key) == {"FAILED"} for key in parked),
        # of those, never sent and failed once Stripe had been down psp_unavailable_fail_after_s (15 min)
        "parked_failed_psp_unavailable": len({charge_key(o["checkout_id"], o["currency"]) for o in orders
                                              if o.get("failure_code") == PSP_DOWN} & parked),
        "stripe_breaker_trips": int(health.get("stripe", {}).get("trips", 0)),
        "adyen_breaker_trips": int(health.get("adyen", {}).get("trips", 0)),
        "outage_opened_at_s": round(window.get("opened_s", -1)),
        "outage_closed_at_s": round(window.get("closed_s", -1)),
        "platform_topped_up_currencies": round(window.get("topped_up_currencies", 0)),
        **{f"storefront_{k}": v for k, v in (router.counts if router else {}).items()},
    }


@dataclass
class PayoutRun:
    releases: ReleaseRecord
    observed: dict[str, list[str]] = field(default_factory=dict)  # payment_order_id -> pay-out statuses seen
    retried: list[str] = field(default_factory=list)  # moved FAILED -> RELEASED by `ops payouts retry`
    short_sweeps: int = 0  # sweeps run while the platform's balance was short


def _pay_out(stack: LocalStack, config: ChaosConfig, api: ApiClient, connect: Connect, sellers: SellerPlan,
             idle: Callable[[], None], faults: Counter) -> PayoutRun:
    """The storefront confirms most deliveries (some twice at once; the auto-releasing seller's are left to the
    sweeper), while the platform's PSP balance is short for a few sweeps; then the late sellers register, the
    restricted account is lifted and on-call retries its FAILED pay-outs; each stage waits for the pay-outs."""
    from functions.shared.tables import PayoutsTable
    from ops.payouts import retry_payout

    db = stack.client("dynamodb")
    table = stack.outputs["PayoutsTableName"]
    dlq = stack.outputs.get("PayoutsDlqUrl")

    def read() -> list[dict[str, Any]]:  # what the watch and the stages below look at, not whole items
        return scan(db, table, attributes=("payment_order_id", "payout_status", "seller_account", "due_at",
                                           "awaiting_seller", "dead_letter_reason"))

    def dead_lettered() -> set[str]:
        return {m.get("payment_order_id") for m in peek_queue(stack.client("sqs"), dlq)} if dlq else set()

    rng = random.Random(f"{config.seed}:deliveries")
    held = sorted(p["payment_order_id"] for p in read()
                  if p["payout_status"] == "HELD" and p["seller_account"] not in sellers.auto_release)
    confirmed = [order_id for order_id in held if rng.random() < RELEASE_RATE]
    connect.set_platform_short(True)
    run = PayoutRun(release_all(api, confirmed, seed=config.seed))
    faults["releases_sent_twice_at_once"] = run.releases.twice

    def short_idle(still: list[dict[str, Any]]) -> None:
        """As `idle`, but straight to the first open pay-out's due time when that is later: a transfer
        postponed for the platform's balance waits 15 minutes more at each attempt, hours after a few."""
        run.short_sweeps += 1
        if run.short_sweeps == SHORT_SWEEPS:
            connect.set_platform_short(False)
        due = min((p["due_at"] for p in still if p.get("due_at")), default=None)
        wait = (clock.parse_iso(due) - clock.now()).total_seconds() if due else 0
        idle(min(max(IDLE_S, wait + 1), MAX_IDLE_JUMP_S))

    for stage in ("releases", "late sellers and on-call's retries"):
        try:
            watch_payouts(read, run.observed, timeout_s=config.timeout_s, interval_s=0.25, on_idle=short_idle,
                          is_dead_lettered=dead_lettered)
        except TimeoutError as error:  # what never settled is reported by invariant 2
            log.error("pay-outs after %s: %s", stage, error)
        if stage == "releases":
            connect.set_platform_short(False)
            sellers.register_late(api, connect)
            for seller in sellers.restricted:
                connect.restrict(sellers.accounts[seller], restricted=False)
            # `ops payouts retry <id>`: the FAILED ones (the account fixed), and those the Transfer worker
            # dead-lettered (their alarm read in the morning, the cause gone)
            for payout in read():
                if payout["payout_status"] == "FAILED" or payout.get("dead_letter_reason"):
                    retry_payout(PayoutsTable.from_settings(), payout["payment_order_id"])
                    run.retried.append(payout["payment_order_id"])
            if dlq:  # then `ops redrive payouts`: the letters back to PayoutsQueue, the DLQ empty again
                _redrive_payout_letters(stack)
    faults["platform_balance_short_sweeps"] = min(run.short_sweeps, SHORT_SWEEPS)
    faults["payouts_retried_by_on_call"] = len(run.retried)
    return run


def _refund(stack: LocalStack, config: ChaosConfig, api: ApiClient, idle: Callable[[], None],
            faults: Counter) -> RefundRecord:
    """After the pay-outs: a seeded share of the SUCCESS orders refunded (held ones out of pending, transferred
    ones through a reversal or what the seller then owes), some twice at once, some past the order's amount;
    then a wait until every accepted refund is final."""
    db = stack.client("dynamodb")
    record = refund_some(api, scan(db, stack.outputs["PaymentOrdersTableName"]), seed=config.seed)
    faults["refunds_sent_twice_at_once"] = record.twice
    try:
        watch_refunds(lambda: scan(db, stack.outputs["RefundsTableName"]), record.accepted,
                      timeout_s=config.timeout_s, on_idle=idle)
    except TimeoutError as error:  # what never settled is reported by invariant 2
        log.error("refunds: %s", error)
    return record


def _dispute(stack: LocalStack, config: ChaosConfig, idle: Callable[[], None], faults: Counter) -> DisputeRecord:
    """After the refunds: the banks dispute a seeded share of the succeeded charges (verification/disputes.py),
    some on orders whose pay-out is still HELD (not confirmed), most on transferred ones; some decided at once,
    the others once our books show them open; then a wait until our books show every decision."""
    db = stack.client("dynamodb")
    admin = SandboxAdmin(stack.psp_url or "")
    record = DisputeRecord()

    def read() -> list[dict[str, Any]]:
        return scan(db, stack.outputs["DisputesTableName"])

    def as_the_psp_says() -> dict[str, str]:
        return {d["id"]: d["status"] for d in _psp_disputes(stack.sandbox) if d["id"] in record.opened}

    orders = scan(db, stack.outputs["PaymentOrdersTableName"], attributes=("charge_key", "payment_order_status"))
    unsettled = {o.get("charge_key") for o in orders if o["payment_order_status"] != "SUCCESS"}
    settled = {o.get("charge_key") for o in orders} - unsettled
    later = open_disputes(admin, plan_disputes(stack.sandbox.charges(), config.seed, config.disputes, settled), record)
    try:
        watch_disputes(read, as_the_psp_says(), timeout_s=config.timeout_s, on_idle=idle)
        for step in later:
            decide(admin, step["dispute_id"], step, record)
        watch_disputes(read, as_the_psp_says(), timeout_s=config.timeout_s, on_idle=idle)
    except TimeoutError as error:  # what never settled is reported by invariant 4
        log.error("disputes: %s", error)
    faults["disputes_opened_twice"] = record.opened_twice
    faults["disputes_decided_twice"] = record.decided_twice
    faults["disputes_decided_before_their_events"] = record.decided_at_once
    return record


def _psp_disputes(sandbox: Any) -> list[dict[str, Any]]:
    state = sandbox.state
    with state.lock:
        return [dispute.to_stripe(state) for dispute in state.disputes.values()]


def _webhook_shape(sandbox: Any) -> dict[str, int]:
    """What the PSP's webhook sender did (psp_sandbox/webhooks.py; duplicates and reordering are drawn while
    random faults are configured): events emitted, deliveries, events delivered twice (two first attempts), and
    events delivered after a later event of the same object (reordered)."""
    hooks = getattr(sandbox, "sandbox", sandbox).webhooks  # the server wraps the Sandbox
    with hooks._lock:
        events = list(hooks.events.values())
        delivered = list(hooks.delivered)
    emitted = {event.id: n for n, event in enumerate(events)}
    subject = {event.id: str(event.obj.get("id")) for event in events}
    first = Counter(d["event"] for d in delivered if d["attempt"] == 1)
    latest: dict[str, int] = {}  # object id -> the latest emission index delivered so far
    reordered, seen = 0, set()
    for delivery in delivered:
        event_id = delivery["event"]
        if event_id in seen or event_id not in emitted:
            continue
        seen.add(event_id)
        obj = subject[event_id]
        if latest.get(obj, -1) > emitted[event_id]:
            reordered += 1
        latest[obj] = max(latest.get(obj, -1), emitted[event_id])
    return {"chaos_on": int(sandbox.faults.webhook_chaos_seed() is not None), "events": len(events),
            "deliveries": len(delivered), "duplicated": sum(1 for n in first.values() if n > 1),
            "reordered": reordered, "answered_2xx": sum(1 for d in delivered if 200 <= d["status"] < 300)}


def _refund_shape(refunds: list[dict[str, Any]], record: RefundRecord) -> dict[str, int]:
    statuses = Counter(r.get("refund_status") for r in refunds)
    timing = Counter(r.get("timing") for r in refunds if r.get("refund_status") == "SUCCEEDED")
    return {"accepted": len(record.accepted), "refused": len(record.refused), "asked_twice_at_once": record.twice,
            "past_the_amount_asked": record.over_asked, "past_the_amount_refused": record.over_refused,
            **{f"refunds_{str(k).lower()}": v for k, v in statuses.items()},
            **{f"succeeded_{str(k).lower()}": v for k, v in timing.items()}}


def _payout_shape(payouts: list[dict[str, Any]], run: PayoutRun) -> dict[str, int]:
    statuses = Counter(p["payout_status"] for p in payouts)
    return {"released_by_storefront": len(run.releases.released), "released_twice_at_once": run.releases.twice,
            "auto_released": sum(1 for p in payouts if p.get("auto_release_at") and p["payout_status"] != "HELD"),
            "retried_by_on_call": len(run.retried), **{f"payouts_{k.lower()}": v for k, v in statuses.items()}}


def _workload_shape(workload: Workload, record: RunRecord) -> dict[str, int]:
    currencies = [{o["currency"] for o in c["payment_orders"]} for c in workload.checkouts]
    cards = workload.cards.values()
    return {"checkouts": len(workload.checkouts), "charges": len(workload.charges),
            "multi_seller": sum(len(c["payment_orders"]) > 1 for c in workload.checkouts),
            "multi_currency": sum(len(c) > 1 for c in currencies), "with_jpy": sum("JPY" in c for c in currencies),
            "single_use_payment_methods": len(record.payment_methods),
            **{f"threeds_{action}": sum(c.action == action for c in cards) for action, _ in BUYER_ACTIONS},
            **{method: sum(c.method == method for c in cards) for method in DEBIT_ACCOUNTS}}


def _buyers(api: ApiClient, sandbox: Any, workload: Workload, record: RunRecord, placing: threading.Event,
            done: threading.Event, faults: Counter) -> None:
    """The buyers of 3-D Secure checkouts, in their browsers: once a checkout shows next_action, complete or fail
    the challenge (the sandbox's resolve call, as the bank's page would), or walk away. Until every challenge
    was answered, or the pay-in has settled (`done`)."""
    waiting = {cid: card.action for cid, card in workload.cards.items() if card.action in ("complete", "fail")}
    while waiting and not done.is_set():
        accepted = {order_id.rpartition("_")[0] for order_id in record.accepted_order_ids}
        for checkout_id in [c for c in waiting if c in accepted]:
            status, checkout, _ = api.get_checkout(checkout_id)
            if status != 200:
                continue
            orders = checkout.get("payment_orders") or []
            if checkout.get("next_action") and orders and orders[0].get("psp_reference"):
                outcome = "succeeded" if waiting.pop(checkout_id) == "complete" else "failed"
                try:
                    sandbox.state.resolve_payment_intent(orders[0]["psp_reference"], outcome)
                    faults[f"threeds_{outcome}"] += 1
                except Exception:  # noqa: BLE001 - cancelled meanwhile (its deadline): the outcome says so
                    faults["threeds_too_late"] += 1
            elif orders and all(o["payment_order_status"] in ("SUCCESS", "FAILED") for o in orders):
                waiting.pop(checkout_id)  # decided without a challenge (a fault, an overnight charge)
        if not placing.is_set():
            waiting = {c: a for c, a in waiting.items() if c in accepted}  # refused checkouts have no challenge
        time.sleep(2)  # a browser polling its checkout page, not a load test of the storefront's key


def _outcomes(keys: list[str], orders: list[dict[str, Any]]) -> dict[str, str]:
    """Each charge's outcome as its orders show it ("SUCCESS (3 orders)"; several statuses joined by +)."""
    statuses: dict[str, list[str]] = {}
    for order in orders:
        statuses.setdefault(charge_key(order["checkout_id"], order["currency"]), []).append(
            order["payment_order_status"])
    return {key: f"{'+'.join(sorted(set(statuses[key])))} ({len(statuses[key])} orders)"
            for key in keys if key in statuses}


_last_tick = [0.0]


def _log_tick(done: int, total: int) -> None:
    if time.monotonic() - _last_tick[0] >= 30:
        _last_tick[0] = time.monotonic()
        log.info("%d of %d orders placed so far are settled", done, total)


def _log_phase(name: str, started: float) -> None:
    log.info("%s, %.0f s into the run", name, time.monotonic() - started)


def _tables(stack: LocalStack) -> PaymentTables:
    outputs = stack.outputs
    charges = {"charges_table": outputs["ChargesTableName"]} if outputs.get("ChargesTableName") else {}
    return PaymentTables(outputs["PaymentEventsTableName"], outputs["PaymentOrdersTableName"], **charges)


def _log_unsettled(stack: LocalStack) -> None:
    tables = _tables(stack)
    for order in tables.scan_orders():
        if order["payment_order_status"] not in ("SUCCESS", "FAILED") and not order.get("dead_letter_reason"):
            log.error("unsettled: %s", {k: v for k, v in order.items() if k != "payment_method"})


def _redrive_payout_letters(stack: LocalStack) -> None:
    from infra import names
    from ops.redrive import redrive_queue
    from ops.resources import Resources, find_dlq

    urls = {"payouts_dlq_url": stack.outputs[names.OUT_QUEUE_URLS[names.PAYOUTS_DLQ]],
            "payouts_queue_url": stack.outputs[names.OUT_QUEUE_URLS[names.PAYOUTS_QUEUE]]}
    redrive_queue(find_dlq("payouts"), Resources(overrides=urls))


def _redrive_dead_lettered(stack: LocalStack) -> int:
    """What on-call does in the morning: every dead-lettered, non-final order goes back to the sweeper (with its
    charge). Returns how many charges that was."""
    from ops.orders import redrive_order

    tables = _tables(stack)
    charges = set()
    for order in tables.scan_orders():
        key = charge_key(order["checkout_id"], order["currency"])
        if order.get("dead_letter_reason") and order["payment_order_status"] not in ("SUCCESS", "FAILED") \
                and key not in charges:
            redrive_order(tables, order["payment_order_id"])  # `ops order redrive <id>`: the order's charge
            charges.add(key)
    sweeper = next(t.rule_logical_id for t in stack.events.schedules)
    stack.events.fire(sweeper)
    return len(charges)


class _Aws:
    def __init__(self, stack: LocalStack):
        self._stack = stack

    def client(self, name: str) -> Any:
        return self._stack.client(name)


def _reads_retried(reads: dict[str, list[Any]]) -> str:
    """How the storefront's reads after a write went: how many failed at least once, the most tries one took,
    and each read given up on with its tries' statuses and last answer."""
    if not reads:
        return "reads after a write not answered 200 at once: none"
    tries = {k: [s for s in v if isinstance(s, int)] for k, v in reads.items()}
    given_up = {k: v for k, v in reads.items() if 200 not in v}
    line = (f"reads after a write not answered 200 at once: {len(reads)}, most tries "
            f"{max(len(v) for v in tries.values())}, statuses {dict(Counter(s for v in tries.values() for s in v))}")
    return line + "".join(f"\n  given up: {k}: {v}" for k, v in given_up.items())


def print_report(report: ChaosReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    faults = Table(title=f"faults injected (seed {report.config.seed})")
    faults.add_column("fault")
    faults.add_column("count", justify="right")
    for kind, count in sorted(report.faults.items()):
        faults.add_row(kind, str(count))
    faults.add_row("total", str(report.total_faults), style="bold")
    console.print(faults)
    for name, (part, whole) in report.shares.items():
        console.print(f"{name}: {part} of {whole} ({part / whole:.1%})" if whole else f"{name}: none")
    console.print(_reads_retried(report.reads_retried))
    for key, outcome in report.overnight.items():
        console.print(f"overnight charge {key}: {outcome}")
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(report.statuses.items()))
    console.print("checkouts: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.workload.items()))
    console.print("pay-outs: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.payouts.items()))
    console.print("refunds: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.refunds.items()))
    console.print("disputes: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.disputes.items()))
    console.print("webhooks: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.webhooks.items()))
    if report.failover:
        console.print("failover: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.failover.items()))
    refused = ", ".join(f"{count} with {status}" for status, count in sorted(report.rejected.items())) or "none"
    console.print(f"orders: {report.orders} accepted ({statuses}); checkouts refused: {refused}; "
                  f"{report.duration_s:.0f} s")
    for protection, count in report.mutation_hits.items():
        console.print(f"protection switched off: {protection} ({MUTATIONS[protection][1]}; patched {count} times)")
    invariants = Table(title="invariants")
    invariants.add_column("#")
    invariants.add_column("invariant")
    invariants.add_column("result")
    for result in report.results:
        verdict = "held" if result.ok else f"VIOLATED: {len(result.violations)} ({'; '.join(result.violations[:3])})"
        invariants.add_row(str(result.number), result.name, verdict, style=None if result.ok else "red")
    console.print(invariants)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verification.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--disable", choices=PROTECTIONS,
                        help="switch one protection off (mutation testing; MUTATIONS says what each patches)")
    parser.add_argument("--kill-rate", type=float, default=ChaosConfig.kill_rate)
    parser.add_argument("--kill-after-money-rate", type=float, default=ChaosConfig.kill_after_money_rate,
                        help="besides --kill-rate: share of the PSP calls that move money (charge, transfer, refund) "
                             "after which the invocation dies before it records the answer")
    parser.add_argument("--overnight-rate", type=float, default=ChaosConfig.overnight_rate)
    parser.add_argument("--timeout", type=float, default=ChaosConfig.timeout_s)
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line (for tests)")
    parser.add_argument("--payouts-only", action="store_true",
                        help="stop after the pay-outs: no refunds or disputes (the transfer mutation)")
    parser.add_argument("--payin-only", action="store_true",
                        help="stop after the pay-in: no releases, transfers or refunds (the pay-in mutations)")
    parser.add_argument("--search-lag", type=float, default=ChaosConfig.search_lag_s,
                        help="seconds of the PSP's clock before a new PaymentIntent shows in a search")
    parser.add_argument("--single-use-rate", type=float, default=SINGLE_USE_RATE,
                        help="share of the card checkouts paid with a typed card number (a single-use PaymentMethod)")
    parser.add_argument("--async-rate", type=float, default=ASYNC_RATE,
                        help="share of the one-currency checkouts paid by 3-D Secure or bank debit (0: none)")
    parser.add_argument("--disputes", type=float, default=ChaosConfig.disputes,
                        help="share of the succeeded charges disputed after the refunds (0: none)")
    parser.add_argument("--stripe-outage", metavar="AT:SECONDS", type=_outage_window,
                        help="run with Adyen as Stripe's failover PSP; once a share AT (0-1) of the orders was placed, "
                             "Stripe refuses every request for SECONDS of wall time (e.g. 0.3:60)")
    args = parser.parse_args(argv)
    config = ChaosConfig(seed=args.seed, orders=args.orders, disable=args.disable, kill_rate=args.kill_rate,
                         kill_after_money_rate=args.kill_after_money_rate,
                         overnight_rate=args.overnight_rate, timeout_s=args.timeout, payin_only=args.payin_only,
                         payouts_only=args.payouts_only,
                         search_lag_s=args.search_lag, disputes=args.disputes, async_rate=args.async_rate,
                         single_use_rate=args.single_use_rate, stripe_outage=args.stripe_outage)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)  # progress every 30 s
    for noisy in ("werkzeug", "local", "moto", "psp_sandbox", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    from rich.progress import Progress

    if args.json:
        report = run(config)
        print(json.dumps({"violations": {r.number: r.violations for r in report.results if not r.ok},
                          "faults": report.faults, "shares": report.shares, "overnight": report.overnight,
                          "orders": report.orders, "rejected": report.rejected, "workload": report.workload,
                          "payouts": report.payouts, "refunds": report.refunds, "disputes": report.disputes,
                          "webhooks": report.webhooks, "failover": report.failover,
                          "mutation_hits": report.mutation_hits, "last_line": report.last_line()}))
        return 0
    if sys.stderr.isatty():
        with Progress() as bar:
            task = bar.add_task("placing orders", total=args.orders)
            report = run(config, progress=lambda n: bar.advance(task, n))
    else:
        report = run(config)
    print_report(report)
    print(report.last_line())
    return 0 if report.violations == 0 else 1


def _outage_window(text: str) -> tuple[float, float]:
    """`AT:SECONDS` of --stripe-outage: a share of the orders placed (0-1) and a positive number of seconds."""
    at, _, seconds = text.partition(":")
    try:
        window = (float(at), float(seconds))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected AT:SECONDS, e.g. 0.3:60") from None
    if not 0 <= window[0] < 1 or window[1] <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: AT must be in [0, 1) and SECONDS above 0")
    return window


if __name__ == "__main__":
    from local.lifecycle import run_stoppable

    sys.exit(run_stoppable(main))
