"""The chaos run: orders through the local stack while the PSP, the network and our own functions fail.

`python -m verification.chaos --seed 1 --orders 10000` (make chaos). Faults, all drawn from the seed:
- PSP (the sandbox): 500/502/503, 429, connection resets, timeouts, latency, and charges whose answer is lost,
  on at least 20% of PaymentIntent requests (drawn per request identity, so the same seed gives the same faults);
- our functions: a share of Lambda invocations killed at a random point: before the handler runs, right after
  one of its AWS or PSP calls (the write happened, the process died), or after the handler, before the answer;
- SQS: a share of batches delivered twice;
- overnight orders: a few charges whose answers are lost all day, so the orders end dead-lettered; then 25 hours
  pass (the PSP prunes its idempotency keys) and the on-call engineer redrives them.
Time is compressed: the workflow's retry waits are scaled down and, whenever the system is idle, the clock moves
seven minutes and the sweeper runs. At the end every invariant of architecture.md is checked against the
sandbox's own records, and a table says what was injected and what held.

`disable=` switches one protection off (the mutation tests prove the checker then reports the violation).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from botocore.client import BaseClient

from functions.shared import clock, psp
from functions.shared.tables import PaymentTables
from local.lambda_runtime import Invocation, LambdaKilled
from local.moto_server import free_port
from local.stack import LocalStack, Ports
from verification.driver import RunRecord, place_all, watch_until_settled
from verification.invariants import Result, check, collect
from verification.storefront import ApiClient, make_checkouts

log = logging.getLogger("chaos")

PSP_FAULT_RATES = {  # 28% of PaymentIntent requests (retries and replays included in the denominator)
    "http_500": 0.04, "http_502": 0.04, "http_503": 0.04, "rate_limit": 0.04, "connection_reset": 0.04,
    "lost_response": 0.05, "timeout": 0.01, "latency": 0.02,
}
PSP_FAULT_PARAMS = {"timeout": {"hold_seconds": 1.5, "after_processing": True}, "latency": {"delay_ms": 150}}
PROTECTIONS = ("psp_idempotency_key", "wallet_guard", "ledger_guard", "expired_key_lookup")


@dataclass
class ChaosConfig:
    seed: int = 1
    orders: int = 10_000
    kill_rate: float = 0.07
    duplicate_rate: float = 0.04  # per message: a batch of ten is delivered twice about a third of the time
    overnight_rate: float = 0.005
    retry_time_scale: float = 0.02
    disable: str | None = None
    timeout_s: float = 7200.0
    max_in_flight: int = 300


@dataclass
class ChaosReport:
    config: ChaosConfig
    orders: int
    faults: Counter
    results: list[Result]
    duration_s: float
    statuses: Counter = field(default_factory=Counter)
    shares: dict[str, tuple[int, int]] = field(default_factory=dict)
    overnight: dict[str, str] = field(default_factory=dict)

    @property
    def violations(self) -> int:
        return sum(len(r.violations) for r in self.results)

    @property
    def total_faults(self) -> int:
        return sum(self.faults.values())

    def last_line(self) -> str:
        return (f"chaos seed={self.config.seed} orders={self.orders} faults={self.total_faults} "
                f"violations={self.violations}")


# -- kills ---------------------------------------------------------------------------------------------


class KillInjector:
    """Kills a share of invocations at a point drawn from the seed and the invocation's identity."""

    def __init__(self, seed: int, rate: float, faults: Counter):
        self.seed, self.rate, self.faults = seed, rate, faults
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
        self._local.plan, self._local.calls = None, 0
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


@contextlib.contextmanager
def _calls_observed(injector: KillInjector) -> Iterator[None]:
    """Let the injector kill right after an AWS or PSP call made by a handler."""
    original_call = BaseClient._make_api_call
    original_charge, original_retrieve = psp.PspClient.charge, psp.PspClient.retrieve

    def api_call(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        result = original_call(client, operation, params)
        injector.after_call()
        return result

    def charge(self: psp.PspClient, work: Any) -> Any:
        result = original_charge(self, work)
        injector.after_call()
        return result

    def retrieve(self: psp.PspClient, reference: str) -> Any:
        result = original_retrieve(self, reference)
        injector.after_call()
        return result

    with mock.patch.object(BaseClient, "_make_api_call", api_call), \
            mock.patch.object(psp.PspClient, "charge", charge), \
            mock.patch.object(psp.PspClient, "retrieve", retrieve):
        yield


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
def _without(protection: str | None) -> Iterator[None]:
    if protection is None:
        yield
        return
    if protection not in PROTECTIONS:
        raise ValueError(f"unknown protection {protection!r}; known: {', '.join(PROTECTIONS)}")
    if protection == "psp_idempotency_key":
        from stripe._payment_intent_service import PaymentIntentService

        original = PaymentIntentService.create

        def create(self: Any, params: Any = None, options: Any = None) -> Any:
            return original(self, params, {**(options or {}), "idempotency_key": str(uuid.uuid4())})

        with mock.patch.object(PaymentIntentService, "create", create):
            yield
    elif protection == "wallet_guard":
        from functions.shared.tables import WalletTable, to_item

        def unguarded(self: WalletTable, account_id: str, kind: str, reference: str, currency: str,
                      pending_delta: int, available_delta: int, now: str) -> bool:
            self._db.update_item(
                TableName=self.table, Key=to_item({"account_id": account_id, "sk": f"BALANCE#{currency}"}),
                UpdateExpression="ADD pending_minor :p, available_minor :a SET currency = :c",
                ExpressionAttributeValues=to_item({":p": pending_delta, ":a": available_delta, ":c": currency}))
            return True

        with mock.patch.object(WalletTable, "apply_movement", unguarded):
            yield
    elif protection == "ledger_guard":
        from functions.ledger.journal import Transaction

        with mock.patch.object(Transaction, "transaction_id",
                               property(lambda self: f"{self.kind}#{self.reference}#{uuid.uuid4().hex[:8]}")):
            yield
    else:  # expired_key_lookup
        with mock.patch.object(psp, "IDEMPOTENCY_KEY_SAFE_AGE", psp.timedelta(days=3650)):
            yield


# -- the run -------------------------------------------------------------------------------------------


def run(config: ChaosConfig, progress: Any = None) -> ChaosReport:
    started = time.monotonic()
    faults: Counter = Counter()
    clock.reset()
    injector = KillInjector(config.seed, config.kill_rate, faults)
    with _without(config.disable), _compressed_retries(config.retry_time_scale), _calls_observed(injector):
        stack = _started_stack()
        try:
            return _drive(stack, config, injector, faults, started, progress)
        finally:
            stack.stop()
            clock.reset()


def _started_stack(attempts: int = 3) -> LocalStack:
    """A local stack on free ports. A port found free can be taken by another process (a second test worker's
    connections) before the stack binds it; the stack then cleans up and is started again on new ports."""
    for attempt in range(1, attempts + 1):
        stack = LocalStack(ports=Ports(aws=free_port(), api=free_port(), psp=free_port()), schedule_interval=10**9,
                           function_concurrency=4,
                           extra_env={"POWERTOOLS_LOG_LEVEL": "CRITICAL", "PSP_TIMEOUT_S": "1"})
        try:
            return stack.start()
        except OSError as error:
            if error.errno != errno.EADDRINUSE or attempt == attempts:
                raise
    raise AssertionError("unreachable")


def _drive(stack: LocalStack, config: ChaosConfig, injector: KillInjector, faults: Counter, started: float,
           progress: Any) -> ChaosReport:
    sandbox = stack.sandbox
    sandbox.faults.configure(seed=config.seed, rates=PSP_FAULT_RATES, paths=["/v1/payment_intents"],
                             params=PSP_FAULT_PARAMS)
    workload = make_checkouts(max(1, round(config.orders / 2.5)), seed=config.seed, decline_rate=0.08,
                              prefix="chaos")
    rng = random.Random(f"{config.seed}:overnight")
    overnight = [i for i in workload.order_ids if rng.random() < config.overnight_rate]
    for order_id in overnight:  # charged, the answer lost; then the PSP is unreachable for it all day
        sandbox.faults.push("lost_response", match={"idempotency_key": order_id})
        sandbox.faults.push("connection_reset", match={"idempotency_key": order_id}, times=10_000)
    faults["overnight_orders"] = len(overnight)

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

    api = ApiClient(stack.api_url, timeout=60)
    record = RunRecord()
    settled_so_far = [0]
    placing = threading.Event()
    placing.set()
    failure: list[BaseException] = []

    def pace() -> None:
        """A storefront's steady stream rather than a flood: at most `max_in_flight` orders not yet final."""
        while len(record.accepted_order_ids) - settled_so_far[0] > config.max_in_flight:
            time.sleep(0.1)

    def place() -> None:
        try:
            place_all(api, workload, seed=config.seed, replay_rate=0.05, conflict_rate=0.02, threads=8,
                      read_after_write=True, on_progress=progress, pace=pace, record=record)
        except BaseException as error:  # re-raised by the main thread below
            failure.append(error)
        finally:
            placing.clear()

    def tick(done: int, total: int) -> None:
        settled_so_far[0] = done
        _log_tick(done, total)

    placer = threading.Thread(target=place, name="storefront", daemon=True)
    aws = _Aws(stack)
    sweeper = next(t.rule_logical_id for t in stack.events.schedules)

    sfn = stack.client("stepfunctions")

    def idle() -> None:
        """Nothing moved for a while: let seven minutes pass, then sweep. Only when no execution runs: an
        Express execution lives five minutes at most, so jumping the clock under a running one would let it
        outlive the sweeper's deadline, which real time never does."""
        running = sfn.list_executions(stateMachineArn=stack.outputs["StateMachineArn"], statusFilter="RUNNING")
        if running["executions"]:
            return
        clock.advance(420)
        sandbox.advance_clock(420)
        stack.events.fire(sweeper)

    placer.start()
    try:
        watch_until_settled(aws, stack.outputs, record.accepted_order_ids, record, timeout_s=config.timeout_s,
                            interval_s=0.5, on_idle=idle, on_tick=tick, more_coming=placing.is_set)
    except TimeoutError:  # what never settled is reported by invariant 2 below
        _log_unsettled(stack)
    placer.join()
    if failure:
        raise failure[0]

    # The night passes; in the morning on-call redrives what the dead-letter queues hold.
    sandbox.faults.clear_queued()
    LocalStack.wait_until(lambda: not sfn.list_executions(stateMachineArn=stack.outputs["StateMachineArn"],
                                                          statusFilter="RUNNING")["executions"], timeout=120)
    clock.advance(25 * 3600)
    sandbox.advance_clock(25 * 3600)
    redriven = _redrive_dead_lettered(stack)
    faults["redriven_by_on_call"] = redriven
    try:
        watch_until_settled(aws, stack.outputs, record.accepted_order_ids, record, timeout_s=config.timeout_s,
                            interval_s=0.5, on_idle=idle,
                            is_settled=lambda o: o["payment_order_status"] in ("SUCCESS", "FAILED"))
    except TimeoutError:
        _log_unsettled(stack)

    stats = sandbox.faults.stats()
    for kind, count in stats["drawn"].items():
        faults[f"psp_{kind}"] += count
    for kind, count in stats["injected"].items():  # the overnight orders' pinned faults, counted apart
        if count > stats["drawn"].get(kind, 0):
            faults[f"overnight_psp_{kind}"] += count - stats["drawn"].get(kind, 0)
    snapshot = collect(aws, stack.outputs, sandbox.charges(), observed_statuses=record.observed_statuses,
                       replays=record.replays, unreadable_after_write=record.unreadable_after_write,
                       accepted_order_ids=record.accepted_order_ids)
    report = ChaosReport(config, len(record.accepted_order_ids), faults, check(snapshot),
                         time.monotonic() - started,
                         Counter(o["payment_order_status"] for o in snapshot.orders))
    by_id = {o["payment_order_id"]: o for o in snapshot.orders}
    report.overnight = {i: f"{by_id[i]['payment_order_status']} after {by_id[i].get('attempts')} attempts"
                        for i in overnight if i in by_id}
    kills = sum(v for k, v in faults.items() if k.startswith("kill_"))
    psp_faults = sum(v for k, v in faults.items() if k.startswith("psp_"))
    report.shares = {
        "psp requests faulted": (psp_faults, stats["drawn_from"]),  # seeded draws; overnight ones apart
        "invocations killed": (kills, injector.invocations),
        "messages delivered twice": (faults["duplicate_deliveries"], shares["messages"]),
    }
    return report


_last_tick = [0.0]


def _log_tick(done: int, total: int) -> None:
    if time.monotonic() - _last_tick[0] >= 30:
        _last_tick[0] = time.monotonic()
        log.info("%d of %d orders placed so far are settled", done, total)


def _log_unsettled(stack: LocalStack) -> None:
    tables = PaymentTables(stack.outputs["PaymentEventsTableName"], stack.outputs["PaymentOrdersTableName"])
    for order in tables.scan_orders():
        if order["payment_order_status"] not in ("SUCCESS", "FAILED") and not order.get("dead_letter_reason"):
            log.error("unsettled: %s", {k: v for k, v in order.items() if k != "payment_method"})


def _redrive_dead_lettered(stack: LocalStack) -> int:
    """What on-call does in the morning: every dead-lettered, non-final order goes back to the sweeper."""
    from ops.orders import redrive_order

    tables = PaymentTables(stack.outputs["PaymentEventsTableName"], stack.outputs["PaymentOrdersTableName"])
    count = 0
    for order in tables.scan_orders():
        if order.get("dead_letter_reason") and order["payment_order_status"] not in ("SUCCESS", "FAILED"):
            redrive_order(tables, order["payment_order_id"])
            count += 1
    sweeper = next(t.rule_logical_id for t in stack.events.schedules)
    stack.events.fire(sweeper)
    return count


class _Aws:
    def __init__(self, stack: LocalStack):
        self._stack = stack

    def client(self, name: str) -> Any:
        return self._stack.client(name)


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
    for order_id, outcome in report.overnight.items():
        console.print(f"overnight order {order_id}: {outcome}")
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(report.statuses.items()))
    console.print(f"orders: {report.orders} accepted ({statuses}); {report.duration_s:.0f} s")
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
    parser.add_argument("--disable", choices=PROTECTIONS, help="switch one protection off (mutation testing)")
    parser.add_argument("--kill-rate", type=float, default=ChaosConfig.kill_rate)
    parser.add_argument("--overnight-rate", type=float, default=ChaosConfig.overnight_rate)
    parser.add_argument("--timeout", type=float, default=ChaosConfig.timeout_s)
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line (for tests)")
    args = parser.parse_args(argv)
    config = ChaosConfig(seed=args.seed, orders=args.orders, disable=args.disable, kill_rate=args.kill_rate,
                         overnight_rate=args.overnight_rate, timeout_s=args.timeout)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)  # progress every 30 s
    for noisy in ("werkzeug", "local", "moto", "psp_sandbox", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    from rich.progress import Progress

    if args.json:
        report = run(config)
        print(json.dumps({"violations": {r.number: r.violations for r in report.results if not r.ok},
                          "faults": report.faults, "shares": report.shares, "overnight": report.overnight,
                          "orders": report.orders, "last_line": report.last_line()}))
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


if __name__ == "__main__":
    sys.exit(main())
