"""Cost per million orders: AWS requests that successful orders really make on the local stack, priced with what
the synthesized template deploys.

`python benchmarks/cost_model.py [--checkouts 200] [--template cdk.out/MarketPay.template.json]` places checkouts of
1-5 orders with cards that succeed, waits until every order is SUCCESS, and meters the run
(verification/metering.py): every boto3 call by service and operation; DynamoDB write and read units from real item
sizes (transactions doubled) and every global secondary index's writes (an item entering, leaving or changing in an
index: DynamoDB's rules, from the tables' own index definitions); Lambda invocations and durations of every function
on the order's path (the API authorizer and its rate-counter writes, webhooks in, notifications out included) from
the local runtime, each duration with its AWS calls taken out and billed at AWS_CALL_S each (moto on a shared
machine is many times slower than DynamoDB); Express executions, billed as their tasks' durations plus overhead.
`--save run.json` keeps the metered run and `--run run.json` prices a saved one again (against the template of
now).

From the template (`python infra/app.py` writes it): each function's memory, architecture (arm64 or x86_64),
log level (POWERTOOLS_LOG_LEVEL: the log bytes each invocation writes) and log sample rate
(POWERTOOLS_LOGGER_SAMPLE_RATE: that share of invocations logs at DEBUG).
Modelled, not metered (per charge or order, constants below): the nightly recon run's reads and fee writes, the
storage an order leaves for a month, and the storefront's status polls (none: it is told by notifications).
Prices are us-east-1 list prices. A table of components, then the last line `cost_per_million_orders_usd=<n>`.
Target: at most $15.

Not counted, and why: SQS receives that found nothing (the event source mapping's idle polling is a fixed cost
of about $0.26 a month per queue), the Sweeper's minute schedule (43,200 runs a month, fixed), and the PSP's fees.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEFAULT_TEMPLATE = REPO / "cdk.out" / "MarketPay.template.json"

# us-east-1 list prices
HTTP_API_PER_REQUEST = 1.00 / 1e6
LAMBDA_PER_REQUEST = 0.20 / 1e6
LAMBDA_PER_GB_S = {"arm64": 0.0000133334, "x86_64": 0.0000166667}
SQS_PER_REQUEST = 0.40 / 1e6
EXPRESS_PER_EXECUTION = 1.00 / 1e6
EXPRESS_PER_GB_S = 0.00001667
EXPRESS_MEMORY_GB = 0.0625  # Express bills memory in 64 MB steps; our state is a few KB
DDB_PER_WRU = 0.625 / 1e6
DDB_PER_RRU = 0.125 / 1e6
DDB_PER_GB_MONTH = 0.25
DDB_ITEM_OVERHEAD_BYTES = 100  # DynamoDB adds 100 bytes per item (and per index entry) to its storage size
LOGS_PER_GB = 0.50
# Stripe answers a PaymentIntent confirm in about half a second; the sandbox answers in milliseconds. The
# executor's billed duration adds the difference, so the figure holds against the real PSP.
STRIPE_LATENCY_S = 0.6
# Bytes one invocation writes to CloudWatch Logs at each level: START/END/REPORT (~350), plus our structured lines
# (~400 each at INFO: one per invocation on the payment path; DEBUG adds the Powertools event logging).
LOG_BYTES_PER_INVOCATION = {"DEBUG": 2500, "INFO": 750, "WARNING": 350, "ERROR": 350, "CRITICAL": 350}
# Whatever the level: every handler flushes its metrics (Powertools EMF, one JSON line of ~250 bytes with the
# namespace, dimensions and values) into the same log stream, and CloudWatch Logs bills those bytes too.
EMF_BYTES_PER_INVOCATION = 250
# The nightly recon (functions/recon), per charge of the Stripe report: the order read through an index and the
# ledger's transaction looked up (eventually consistent, under 4 KB: half a unit each), and the fee: a ledger
# transaction, its order-index entry and the run's guard item. Speed: benchmarks/recon_bench.py (~68k rows/s).
RECON_READ_UNITS_PER_CHARGE = 1.0
RECON_WRITE_UNITS_PER_CHARGE = 3
RECON_ROWS_PER_S = 68_000
# The storefront learns an order's outcome from a notification (docs: "Notifications to the storefront"), so it
# makes no status GET; set this to the polls per order of a storefront that does not register an endpoint.
STOREFRONT_POLLS_PER_ORDER = 0
# Local durations are moto's and a shared machine's: each AWS call a handler makes is taken out of its measured
# duration and billed at what an in-region call takes (DynamoDB, SQS, Step Functions: single-digit milliseconds).
AWS_CALL_S = 0.008
WORKFLOW_TASKS = ("Executor", "Wallet", "Ledger", "Finalize")  # the Express workflow waits for these
EXPRESS_OVERHEAD_S = 0.1  # per execution: its transitions, and billing in 100 ms steps
OFF_PATH = ("Sweeper", "Recon")  # fixed-cost schedules, not per-order (Recon is modelled above)


@dataclass(frozen=True)
class FunctionConfig:
    memory_mb: int
    architecture: str
    log_level: str
    log_sample_rate: float = 0.0  # POWERTOOLS_LOGGER_SAMPLE_RATE: this share of invocations logs at DEBUG

    def log_bytes_per_invocation(self) -> float:
        level = LOG_BYTES_PER_INVOCATION.get(self.log_level, LOG_BYTES_PER_INVOCATION["INFO"])
        rate = min(max(self.log_sample_rate, 0.0), 1.0)
        return (1 - rate) * level + rate * LOG_BYTES_PER_INVOCATION["DEBUG"]


@dataclass(frozen=True)
class Deployed:
    """What the template deploys that the price depends on."""

    functions: dict[str, FunctionConfig]  # by name: logical id without construct prefix and hash (Executor)

    @classmethod
    def read(cls, path: Path) -> Deployed:
        resources = json.loads(Path(path).read_text())["Resources"]
        functions = {}
        for lid, resource in resources.items():
            if resource["Type"] != "AWS::Lambda::Function":
                continue
            props = resource["Properties"]
            variables = props.get("Environment", {}).get("Variables", {})
            functions[function_name(lid)] = FunctionConfig(
                memory_mb=int(props.get("MemorySize", 128)),
                architecture=(props.get("Architectures") or ["x86_64"])[0],
                log_level=str(variables.get("POWERTOOLS_LOG_LEVEL", "INFO")).upper(),
                log_sample_rate=float(variables.get("POWERTOOLS_LOGGER_SAMPLE_RATE") or 0),
            )
        return cls(functions)


def function_name(logical_id_or_deployed_name: str) -> str:
    """`FunctionsExecutorE2FB4802` or `MarketPay-FunctionsExecutorE2FB4802-X1Y2` → `Executor`."""
    text = logical_id_or_deployed_name
    if "-" in text:
        text = text.split("-")[1]
    return re.sub(r"^Functions", "", re.sub(r"[0-9A-F]{8}$", "", text))


@dataclass
class Run:
    """What the orders of a metered run used (per run; priced per million orders)."""

    orders: int
    checkouts: int
    charges: int
    api_requests: int
    invocations: dict[str, int]  # by function name
    seconds: dict[str, float]  # billed seconds by function name (the Executor's include Stripe's latency)
    sqs_requests: int
    express_executions: int
    express_billed_seconds: float
    table_write_units: dict[str, float]
    index_write_units: dict[str, float]
    read_units: float
    stored_bytes: dict[str, int] = field(default_factory=dict)  # by table, index copies included

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> Run:
        return cls(**json.loads(Path(path).read_text()))


def components(run: Run, deployed: Deployed) -> dict[str, float]:
    """USD per million orders by component."""
    per_order = 1e6 / run.orders
    costs: dict[str, float] = {}
    api_requests = run.api_requests + STOREFRONT_POLLS_PER_ORDER * run.orders
    costs["api_gateway_http"] = api_requests * HTTP_API_PER_REQUEST
    log_bytes = 0.0
    for name in sorted(run.invocations):
        config = deployed.functions[name]
        invocations = run.invocations[name]
        gb_s = run.seconds[name] * config.memory_mb / 1024
        costs[f"lambda {name}"] = invocations * LAMBDA_PER_REQUEST + gb_s * LAMBDA_PER_GB_S[config.architecture]
        log_bytes += invocations * (config.log_bytes_per_invocation() + EMF_BYTES_PER_INVOCATION)
    costs["cloudwatch_logs"] = log_bytes / 1e9 * LOGS_PER_GB
    costs["sqs"] = run.sqs_requests * SQS_PER_REQUEST
    costs["step_functions_express"] = (run.express_executions * EXPRESS_PER_EXECUTION
                                       + run.express_billed_seconds * EXPRESS_MEMORY_GB * EXPRESS_PER_GB_S)
    costs["dynamodb_table_writes"] = sum(run.table_write_units.values()) * DDB_PER_WRU
    costs["dynamodb_index_writes"] = sum(run.index_write_units.values()) * DDB_PER_WRU
    costs["dynamodb_reads"] = run.read_units * DDB_PER_RRU
    recon = deployed.functions.get("Recon")
    recon_gb_s = run.charges / RECON_ROWS_PER_S * (recon.memory_mb / 1024 if recon else 0)
    costs["recon_run (modelled)"] = (run.charges * (RECON_READ_UNITS_PER_CHARGE * DDB_PER_RRU
                                                    + RECON_WRITE_UNITS_PER_CHARGE * DDB_PER_WRU)
                                     + recon_gb_s * LAMBDA_PER_GB_S[recon.architecture if recon else "arm64"])
    costs["storage_first_month"] = sum(run.stored_bytes.values()) / 1024**3 * DDB_PER_GB_MONTH
    costs["storefront_polling"] = STOREFRONT_POLLS_PER_ORDER * run.orders * (
        HTTP_API_PER_REQUEST + 2 * LAMBDA_PER_REQUEST)
    return {name: cost * per_order for name, cost in costs.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkouts", type=int, default=200)
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE)
    parser.add_argument("--save", type=Path, help="write the metered run here (JSON)")
    parser.add_argument("--run", type=Path, help="price this saved run instead of metering a new one")
    args = parser.parse_args(argv)
    deployed = Deployed.read(args.template)
    if args.run:
        run, calls = Run.load(args.run), Counter()
    else:
        run, calls = measure(args.checkouts)
        if args.save:
            run.save(args.save)
    print_table(run, deployed, calls)
    return 0


def measure(checkouts: int) -> tuple[Run, Counter]:
    from local.moto_server import free_port
    from local.stack import LocalStack, Ports
    from verification.driver import place_all, watch_until_settled
    from verification.metering import Meter
    from verification.storefront import ApiClient, make_checkouts

    logging.basicConfig(level=logging.WARNING)
    for noisy in ("werkzeug", "local", "moto"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    meter = Meter()
    stack = LocalStack(ports=Ports(aws=free_port(), api=free_port(), psp=free_port()),
                       extra_env={"POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_METRICS_DISABLED": "true"},
                       schedule_interval=10**9)
    with stack:
        workload = make_checkouts(checkouts, seed=3, decline_rate=0.0, prefix="cost")
        api = ApiClient(stack.api_url, stack.api_key)
        meter.install()
        aws = _time_aws_calls(stack)
        try:
            record = place_all(api, workload, replay_rate=0, conflict_rate=0, read_after_write=False)
            orders = watch_until_settled(_Unmetered(stack, meter), stack.outputs, record.accepted_order_ids, record,
                                         timeout_s=600)
        finally:
            meter.uninstall()
        assert all(o["payment_order_status"] == "SUCCESS" for o in orders.values()), "every order must succeed"
        run = _run(stack, meter, len(orders), checkouts, aws)
    return run, meter.calls


class _Unmetered:
    """Clients for the watcher's reads: they are the benchmark's own, not the orders', so they bypass the meter."""

    def __init__(self, stack: Any, meter: Any):
        self._stack, self._meter = stack, meter

    def client(self, name: str):  # noqa: ANN201
        client = self._stack.client(name)
        original, operations = self._meter._original, client.meta.method_to_api_mapping

        class Unmetered:
            def __getattr__(self, method: str):  # noqa: ANN204
                return lambda **params: original(client, operations[method], params)

        return Unmetered()


def _time_aws_calls(stack: Any) -> dict[str, list[float]]:
    """Function name → [seconds inside AWS calls, calls], of the handlers' own threads (after meter.install)."""
    from botocore.client import BaseClient

    totals: dict[str, list[float]] = {}
    local = threading.local()
    inner = BaseClient._make_api_call
    run_handler = stack.runtime._run

    def timed_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
        started = time.monotonic()
        try:
            return inner(client, operation, params)
        finally:
            acc = getattr(local, "acc", None)
            if acc is not None:
                acc[0] += time.monotonic() - started
                acc[1] += 1

    def timed_run(handler_string: str, invocation: Any, environment: int = 0) -> Any:
        local.acc = [0.0, 0]
        try:
            return run_handler(handler_string, invocation, environment)
        finally:
            if not invocation.trigger.startswith("http GET"):
                total = totals.setdefault(function_name(invocation.function_name), [0.0, 0])
                total[0] += local.acc[0]
                total[1] += local.acc[1]
            local.acc = None

    BaseClient._make_api_call = timed_call  # type: ignore[method-assign]  # meter.uninstall() restores boto3's
    stack.runtime._run = timed_run
    return totals


def _run(stack: Any, meter: Any, orders: int, checkouts: int, aws: dict[str, list[float]]) -> Run:
    invocations: Counter = Counter()
    measured: Counter = Counter()
    for record in stack.runtime.invocations:
        name = function_name(record.function_name)
        if name in OFF_PATH or record.trigger.startswith("http GET"):
            continue  # fixed-cost schedules; the watcher's own status reads
        invocations[name] += 1
        measured[name] += record.duration_ms / 1000
    seconds = {}
    for name, count in invocations.items():
        inside, calls = aws.get(name, (0.0, 0))
        own = max(measured[name] - inside, 0.001 * count)
        seconds[name] = own + calls * AWS_CALL_S + (STRIPE_LATENCY_S * count if name == "Executor" else 0)
    sfn = stack.client("stepfunctions")
    executions = []
    for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=stack.outputs["StateMachineArn"]):
        executions += page["executions"]
    billed = sum(seconds.get(name, 0.0) for name in WORKFLOW_TASKS) + EXPRESS_OVERHEAD_S * len(executions)
    sqs = sum(n for (service, op), n in meter.calls.items() if service == "sqs" and op != "ReceiveMessage")
    # Receives that returned messages: at most one per delivered batch; count the deletes' batches as a bound.
    sqs += sum(n for (service, op), n in meter.calls.items() if service == "sqs" and op == "DeleteMessageBatch")
    api = sum(n for name, n in invocations.items() if name == "PaymentApi")
    return Run(orders=orders, checkouts=checkouts, charges=len(executions), api_requests=api,
               invocations=dict(invocations), seconds=dict(seconds), sqs_requests=sqs,
               express_executions=len(executions), express_billed_seconds=billed,
               table_write_units={_table(t): u for t, u in meter.write_units.items()},
               index_write_units={_table(t): u for t, u in meter.gsi_write_units.items() if u},
               read_units=sum(meter.read_units.values()), stored_bytes=_stored_bytes())


def _table(name: str) -> str:
    return function_name(name)


def _stored_bytes() -> dict[str, int]:
    """Bytes each table keeps after the run (DynamoDB's 100 bytes an item added), its indexes' copies included."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    stored = {}
    for name, table in dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].tables.items():
        total = 0
        for item in table.all_items():
            size = item.size() + DDB_ITEM_OVERHEAD_BYTES
            total += size
            for index in table.global_indexes:
                if all(k["AttributeName"] in item.attrs for k in index.schema):
                    total += size
        stored[_table(name)] = total
    return stored


def print_table(run: Run, deployed: Deployed, calls: Counter) -> None:
    print(f"orders: {run.orders} (all SUCCESS) in {run.checkouts} checkouts, {run.charges} charges")
    if calls:
        print("AWS requests by service and operation (per order):")
        for (service, operation), count in sorted(calls.items()):
            if service in ("dynamodb", "sqs", "stepfunctions", "lambda"):
                print(f"  {service:14} {operation:22} {count:7d}  {count / run.orders:6.2f}")
    print("DynamoDB write units per order (table + its indexes): " + ", ".join(
        f"{t} {u / run.orders:.2f}+{run.index_write_units.get(t, 0) / run.orders:.2f}"
        for t, u in sorted(run.table_write_units.items())))
    print("Lambda per order (invocations, memory MB, architecture, log level): " + ", ".join(
        f"{n} {c / run.orders:.2f} {deployed.functions[n].memory_mb} {deployed.functions[n].architecture} "
        f"{deployed.functions[n].log_level}" for n, c in sorted(run.invocations.items())))
    costs = components(run, deployed)
    total = sum(costs.values())
    print(f"{'component':32} {'USD per million orders':>24}  share")
    for name, cost in sorted(costs.items(), key=lambda item: -item[1]):
        print(f"  {name:30} {cost:24.2f}  {cost / total:6.1%}")
    print(f"  {'total':30} {total:24.2f}  (target: at most 15)")
    print(f"cost_per_million_orders_usd={total:.2f}")


if __name__ == "__main__":
    from local.lifecycle import run_stoppable

    sys.exit(run_stoppable(main))
