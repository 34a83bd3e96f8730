"""`python -m local` (make run): the deployed topology on this machine until Ctrl-C, SIGTERM or SIGHUP."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

# Only the standard library and local.lifecycle before the stop signals are handled: the stack's imports (boto3,
# moto, the handlers) take a second or two, and a signal in that time must stop the start-up cleanly too.
from local.lifecycle import StopRequested, sleep_until_signalled, stop_on_signals

REPO_ROOT = Path(__file__).resolve().parent.parent

PORT_FLAGS = "--api-port, --aws-port, --psp-port and --adyen-port"


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__)
    parser.add_argument("--cdk-out", type=Path, default=Path(os.environ.get("CDK_OUTDIR", REPO_ROOT / "cdk.out")))
    parser.add_argument("--stack", default="MarketPay")
    parser.add_argument("--aws-port", type=int, default=5000)
    parser.add_argument("--api-port", type=int, default=3000)
    parser.add_argument("--psp-port", type=int, default=12111)
    parser.add_argument("--adyen-port", type=int, default=12112, help="the Adyen sandbox's, when it runs")
    parser.add_argument(
        "--psp-routing",
        default=os.environ.get("MARKETPAY_PSP_ROUTING"),
        help="PSP_ROUTING's JSON rules in place of the template's (env MARKETPAY_PSP_ROUTING), e.g. "
        '\'{"rules": [{"name": "eur-cards", "psp": "adyen", "currencies": ["EUR"], "methods": ["card"]}]}\'; '
        "rules naming adyen start the Adyen sandbox",
    )
    parser.add_argument(
        "--schedule-interval",
        type=float,
        default=None,
        help="seconds between scheduled invocations (default: the template's rate)",
    )
    parser.add_argument("--no-sandbox", action="store_true", help="do not start the PSP sandboxes")
    parser.add_argument(
        "--notify-url",
        default=os.environ.get("MARKETPAY_NOTIFY_URL"),
        help="the storefront endpoint status changes are POSTed to (env MARKETPAY_NOTIFY_URL)",
    )
    parser.add_argument(
        "--notify-secret",
        default=os.environ.get("MARKETPAY_NOTIFY_SECRET"),
        help="its signing secret (env MARKETPAY_NOTIFY_SECRET; default: generated and printed)",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)-5s %(name)s %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("werkzeug", "botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    template = args.cdk_out / f"{args.stack}.template.json"
    if not template.exists():
        print(f"{template} not found: synthesize first (python infra/app.py)", file=sys.stderr)
        return 2

    with stop_on_signals():
        try:
            from functions.shared.routing import RoutingConfigError
            from local.stack import LocalStack, Ports, default_adyen_sandbox, default_sandbox, routes_to_adyen

            try:
                adyen = not args.no_sandbox and routes_to_adyen(_routing(args.psp_routing, template))
            except RoutingConfigError as error:
                print(f"--psp-routing: {error}", file=sys.stderr)
                return 2
            stack = LocalStack(
                cdk_out=args.cdk_out,
                stack_name=args.stack,
                ports=Ports(aws=args.aws_port, api=args.api_port, psp=args.psp_port, adyen=args.adyen_port),
                sandbox=None if args.no_sandbox else default_sandbox,
                schedule_interval=args.schedule_interval,
                adyen_sandbox=default_adyen_sandbox if adyen else None,
                psp_routing=args.psp_routing,
            )
            return _serve(stack, args)
        except StopRequested as stop:
            print(f"{stop}: stopped", flush=True)
            return 0


def _routing(given: str | None, template: Path) -> str:
    """The routing the functions will run with: the one given, else the template's (`-c psp_routing=...` at
    synthesis; the first function's that sets it: the synthesis gives every router the same)."""
    if given is not None:
        return given
    for resource in json.loads(template.read_text())["Resources"].values():
        variables = resource.get("Properties", {}).get("Environment", {}).get("Variables", {})
        if resource["Type"] == "AWS::Lambda::Function" and isinstance(variables.get("PSP_ROUTING"), str):
            return variables["PSP_ROUTING"]
    return ""


def _serve(stack: Any, args: argparse.Namespace) -> int:
    """Start (a signal during start-up stops what was started), print the endpoints, sleep until signalled."""
    started = time.monotonic()
    try:
        stack.start()
    except OSError as exc:
        print(f"cannot start the local stack: {exc}; choose other ports with {PORT_FLAGS}", file=sys.stderr)
        return 1
    try:
        print(f"local stack {args.stack} from {args.cdk_out} (state is in memory: gone when this stops)")
        for name, url in stack.endpoints().items():
            print(f"  {name:5} {url}")
        if stack.adyen_url:
            from local.stack import adyen_sandbox_settings

            path, key, merchant_account = adyen_sandbox_settings()
            print(f"Adyen sandbox: Checkout API {stack.adyen_url}{path} (X-API-Key {key}, merchant account "
                  f"{merchant_account}); its payments: {stack.adyen_url}/_sandbox/payments")
        if args.psp_routing is not None:
            print(f"PSP routing: {args.psp_routing or '(none: every charge to Stripe)'}")
        print("stack outputs:")
        for key, value in sorted(stack.outputs.items()):
            print(f"  {key} = {value}")
        if args.notify_url:
            import urllib.error

            try:
                endpoint = stack.set_notification_endpoint(args.notify_url, args.notify_secret)
            except urllib.error.HTTPError as refused:
                print(f"--notify-url refused: {refused.read().decode()}", file=sys.stderr)
                return 2
            secret = endpoint.get("secret") or "(the one given)"
            print(f"notifications to {endpoint['url']}, signed with {secret}")
        print(f"started in {time.monotonic() - started:.2f} s")
        print(stack.ready_line(), flush=True)
        sleep_until_signalled()
    finally:
        print("stopping...", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
