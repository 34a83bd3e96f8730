"""Cost per million orders, from the AWS requests successful orders really make on the local stack.

`python benchmarks/cost_model.py [--checkouts 200]` places checkouts of 2-3 orders with cards that succeed,
waits until every order is SUCCESS, and meters the run (verification/metering.py): every boto3 call of the
process by service and operation, DynamoDB write and read units from real item sizes (transactions doubled,
writes of the sparse sweep index included), Lambda invocations and durations from the local runtime, Express
executions and their durations from the state machine. It prices them at us-east-1 list prices and prints the
cost per million orders; the last line is `cost_per_million_orders_usd=<number>`. Target: at most $20.

Not counted, and why: SQS receives that found nothing (the event source mapping's idle polling is a fixed cost
of about $0.26 a month per queue, not a per-order cost), the status reads the storefront may make, CloudWatch
Logs (printed separately as an estimate), and the PSP's own fees.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from local.lifecycle import run_stoppable  # noqa: E402
from local.moto_server import free_port  # noqa: E402
from local.stack import LocalStack, Ports  # noqa: E402
from verification.driver import place_all, watch_until_settled  # noqa: E402
from verification.metering import LOGS_PER_GB, STANDARD_PER_TRANSITION, Meter, Usage  # noqa: E402
from verification.storefront import ApiClient, make_checkouts  # noqa: E402

LAMBDA_MEMORY_GB = 0.25  # every function of the stack but Recon (not on the order path)
EXPRESS_MEMORY_GB = 0.0625  # Express bills memory in 64 MB steps; our state is a few KB
# Stripe answers a PaymentIntent confirm in about half a second; the sandbox answers in milliseconds. The
# executor's billed duration adds the difference, so the figure holds against the real PSP.
STRIPE_LATENCY_S = 0.6
LOG_BYTES_PER_INVOCATION = 350  # START/END/REPORT lines at WARNING level; our INFO line adds ~400 when enabled
STANDARD_TRANSITIONS_PER_ORDER = 6  # Charge, ChargeOutcome, CreditWallet, RecordLedger, MarkSucceeded, end


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkouts", type=int, default=200)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("werkzeug", "local", "moto"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    meter = Meter()
    stack = LocalStack(ports=Ports(aws=free_port(), api=free_port(), psp=free_port()),
                       extra_env={"POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"},
                       schedule_interval=10**9)
    with stack:
        workload = make_checkouts(args.checkouts, seed=3, decline_rate=0.0, prefix="cost")
        api = ApiClient(stack.api_url, stack.api_key)
        meter.install()
        try:
            record = place_all(api, workload, replay_rate=0, conflict_rate=0, read_after_write=False)
            orders = watch_until_settled(_Unmetered(stack, meter), stack.outputs, record.accepted_order_ids, record,
                                         timeout_s=600)
        finally:
            meter.uninstall()
        assert all(o["payment_order_status"] == "SUCCESS" for o in orders.values()), "every order must succeed"
        usage = _usage(stack, meter, len(orders), args.checkouts)
    _print(usage, meter)
    return 0


class _Unmetered:
    """Clients for the watcher's reads: they are the benchmark's own, not the orders', so they bypass the meter."""

    def __init__(self, stack: LocalStack, meter: Meter):
        self._stack, self._meter = stack, meter

    def client(self, name: str):  # noqa: ANN201
        client = self._stack.client(name)
        original, operations = self._meter._original, client.meta.method_to_api_mapping

        class Unmetered:
            def __getattr__(self, method: str):  # noqa: ANN204
                return lambda **params: original(client, operations[method], params)

        return Unmetered()


def _usage(stack: LocalStack, meter: Meter, orders: int, checkouts: int) -> Usage:
    invocations: Counter = Counter()
    gb_seconds = 0.0
    for record in stack.runtime.invocations:
        function = record.function_name.split("-")[1] if "-" in record.function_name else record.function_name
        if "Recon" in function or "Sweeper" in function:
            continue  # not on the order path (the sweeper's minute schedule is a fixed cost: 43,200 runs a month)
        if record.trigger.startswith("http GET"):
            continue
        invocations[function] += 1
        seconds = max(record.duration_ms, 1) / 1000
        if "Executor" in function:
            seconds += STRIPE_LATENCY_S
        gb_seconds += seconds * LAMBDA_MEMORY_GB
    sfn = stack.client("stepfunctions")
    executions = []
    for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=stack.outputs["StateMachineArn"]):
        executions += page["executions"]
    express_gb_s = 0.0
    for execution in executions:
        seconds = (execution["stopDate"] - execution["startDate"]).total_seconds() + STRIPE_LATENCY_S
        express_gb_s += (int(seconds * 10) + 1) / 10 * EXPRESS_MEMORY_GB  # billed in 100 ms steps
    sqs = sum(n for (service, op), n in meter.calls.items() if service == "sqs" and op != "ReceiveMessage")
    # Receives that returned messages: at most one per delivered batch; count the deletes' batches as a bound.
    sqs += sum(n for (service, op), n in meter.calls.items() if service == "sqs" and op == "DeleteMessageBatch")
    return Usage(
        orders=orders,
        api_requests=checkouts,
        lambda_invocations=invocations,
        lambda_gb_seconds=gb_seconds,
        sqs_requests=sqs,
        express_executions=len(executions),
        express_gb_seconds=express_gb_s,
        standard_transitions=STANDARD_TRANSITIONS_PER_ORDER * orders,
        write_units=sum(meter.write_units.values()) + sum(meter.gsi_write_units.values()),
        read_units=sum(meter.read_units.values()),
        log_bytes=sum(invocations.values()) * LOG_BYTES_PER_INVOCATION,
    )


def _print(usage: Usage, meter: Meter) -> None:
    print(f"orders: {usage.orders} (all SUCCESS)")
    print("AWS requests by service and operation (per order):")
    for (service, operation), count in sorted(meter.calls.items()):
        if service in ("dynamodb", "sqs", "stepfunctions", "lambda"):
            print(f"  {service:14} {operation:22} {count:7d}  {count / usage.orders:6.2f}")
    print("DynamoDB write units per order: " + ", ".join(
        f"{table.split('-')[1] if '-' in table else table} {units / usage.orders:.2f}"
        for table, units in sorted(meter.write_units.items())))
    print(f"  sweep index writes per order: {sum(meter.gsi_write_units.values()) / usage.orders:.2f}")
    print(f"DynamoDB read units per order: {usage.read_units / usage.orders:.2f}")
    print("Lambda invocations per order: " + ", ".join(
        f"{name} {count / usage.orders:.2f}" for name, count in sorted(usage.lambda_invocations.items())))
    print(f"Lambda GB-s per order: {usage.lambda_gb_seconds / usage.orders:.4f} (executor includes "
          f"{STRIPE_LATENCY_S} s of Stripe latency)")
    print(f"Express executions per order: {usage.express_executions / usage.orders:.2f}")
    print("cost per million orders (USD):")
    per_million = usage.per_million_orders()
    for name, cost in per_million.items():
        print(f"  {name:24} {cost:8.2f}")
    total = sum(per_million.values())
    print(f"  {'total':24} {total:8.2f}   (target: at most 20)")
    standard = usage.standard_alternative_per_million()
    print(f"Step Functions Standard instead of Express would add {standard:.2f} "
          f"({STANDARD_TRANSITIONS_PER_ORDER} transitions x ${STANDARD_PER_TRANSITION * 1e3:.3f} per thousand)")
    logs = usage.log_bytes / usage.orders * 1e6 / 1e9 * LOGS_PER_GB
    print(f"not in the total: CloudWatch Logs ingestion, about {logs:.2f} per million orders at WARNING level")
    print(f"cost_per_million_orders_usd={total:.2f}")


if __name__ == "__main__":
    sys.exit(run_stoppable(main))
