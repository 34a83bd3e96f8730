"""The throughput governor (infra/governor.py): every PSP caller's concurrency is derived from the configured rate
limit, so that together they stay under it even at the PSP's fastest answer."""

from __future__ import annotations

import json

import pytest

from infra import governor, names
from tests.infra.conftest import Synth, run_app


def caps(synth: Synth) -> dict[str, int]:
    """Function name → its reserved concurrency, or its SQS event source's maximum concurrency."""
    functions = {lid: name for name in governor.CALLERS for lid in synth.of_type("AWS::Lambda::Function")
                 if synth.logical_id("AWS::Lambda::Function", f"{names.FUNCTIONS}{name}") == lid}
    found: dict[str, int] = {}
    for lid, name in functions.items():
        reserved = synth.props(lid).get("ReservedConcurrentExecutions")
        if reserved is not None:
            found[name] = reserved
    for mapping in synth.of_type("AWS::Lambda::EventSourceMapping").values():
        target = mapping["Properties"]["FunctionName"]["Ref"]
        if target in functions and "ScalingConfig" in mapping["Properties"]:
            found[functions[target]] = mapping["Properties"]["ScalingConfig"]["MaximumConcurrency"]
    return found


def test_every_psp_caller_is_capped_from_the_default_rate(synth):
    assert caps(synth) == {names.EXECUTOR.name: 16, names.TRANSFER.name: 5, names.REFUND_WORKER.name: 2,
                           names.WEBHOOK_PROCESSOR.name: 2}
    # 25 instances at 0.25 s a call: 100 calls a second, Stripe's live-mode limit
    assert governor.ceiling_calls_per_s(governor.DEFAULT_PSP_RATE_LIMIT_PER_S) == 100


@pytest.fixture(scope="module")
def raised(tmp_path_factory, stand_in_layer):
    outdir = tmp_path_factory.mktemp("cdk.out.raised")
    done = run_app(outdir, stand_in_layer, context={governor.CTX_PSP_RATE_LIMIT: "400"})
    assert done.returncode == 0, done.stdout + done.stderr
    return Synth(outdir, json.loads((outdir / "MarketPay.template.json").read_text()), "")


def test_the_caps_follow_the_configured_rate(raised):
    # A limit raised by Stripe to 400 a second: four times the instances
    assert caps(raised) == {names.EXECUTOR.name: 60, names.TRANSFER.name: 20, names.REFUND_WORKER.name: 10,
                            names.WEBHOOK_PROCESSOR.name: 10}


@pytest.mark.parametrize("rate", [25, 100, 400, 1000])
def test_the_caps_stay_under_the_rate_but_for_the_sqs_minimum(rate):
    smallest = (1 + len(governor.SHARES) * governor.SQS_MIN_CONCURRENCY) / governor.PSP_MIN_CALL_LATENCY_S
    assert governor.ceiling_calls_per_s(rate) <= max(rate, smallest)
