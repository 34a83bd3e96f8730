"""The dashboard and every alarm of the synthesized template (issue 19): alarms on rates and ages instead of
`Errors > 0` per function, each with its runbook entry in ops/README.md; the dashboard shows the payment path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from infra import names
from tests.infra.support import render

pytestmark = pytest.mark.xdist_group("infra-synth")

RUNBOOK = Path(__file__).resolve().parents[2] / "ops" / "README.md"
QUEUES = ("OrdersQueue", "PayoutsQueue", "ReconQueue", "WebhookQueue", "RefundsQueue", "NotificationsQueue")
DLQS = ("OrdersDlq", "WorkflowDlq", "ReconDlq", "ReviewDlq", "PayoutsDlq", "NotificationsDlq",
        "NotificationStreamDlq", "WebhookDlq", "RefundsDlq")
BUSINESS = ("ReviewQueueNotEmpty", "WorkflowExecutionsFailed", "WorkflowExecutionsTimedOut",
            "InternalReconUnexplained", "SellerOwedHigh", "RefundMismatch", "RefundWaitingOnPayout",
            "RefundFailedAfterSuccess")


def alarms(synth) -> dict[str, dict]:
    """Every alarm of the template, by its id (its name without the stack's prefix)."""
    found = {}
    for alarm in synth.of_type("AWS::CloudWatch::Alarm").values():
        name = alarm["Properties"]["AlarmName"]
        assert name.startswith(f"{names.STACK_NAME}-"), name
        found[name.removeprefix(f"{names.STACK_NAME}-")] = alarm["Properties"]
    return found


def runbook_entries() -> set[str]:
    """The alarm ids named in the headings of ops/README.md's section "Alarms" (and the sections they refer to)."""
    text = RUNBOOK.read_text()
    section = text.split("## 11. Alarms", 1)[1].split("\n## ", 1)[0]
    return {alarm for heading in re.findall(r"^### (.+)$", section, re.M) for alarm in re.findall(r"`(\w+)`", heading)}


def test_every_alarm_has_a_runbook_entry_and_says_where(synth):
    found = alarms(synth)
    print("\n".join(sorted(found)))  # the list, for the record
    entries = runbook_entries()
    assert set(found) - entries == set(), "alarms without a runbook entry in ops/README.md section 11"
    assert entries - set(found) == set(), "runbook entries of alarms the template does not have"
    for alarm_id, props in found.items():
        assert props["AlarmDescription"].endswith(f"Runbook: ops/README.md, alarm {alarm_id}"), alarm_id
        assert len(props["AlarmActions"]) == 1 and props["OKActions"] == props["AlarmActions"]


def test_no_alarm_is_errors_above_zero_of_one_function(synth):
    for alarm_id, props in alarms(synth).items():
        assert not (props.get("Namespace") == "AWS/Lambda" and props.get("MetricName") == "Errors"), alarm_id


@pytest.mark.parametrize("function", names.ALL_FUNCTIONS, ids=lambda f: f.name)
def test_each_function_has_an_error_rate_and_a_throttle_rate_alarm(synth, function):
    found = alarms(synth)
    fn = synth.logical_id("AWS::Lambda::Function", f"{names.FUNCTIONS}{function.name}")
    for alarm_id, metrics, threshold in ((f"{function.name}ErrorRate", {"Errors", "Invocations"}, 5),
                                         (f"{function.name}ThrottleRate", {"Throttles", "Invocations"}, 10)):
        props = found[alarm_id]
        assert props["Threshold"] == threshold and props["ComparisonOperator"] == "GreaterThanThreshold"
        queries = props["Metrics"]
        [expression] = [q for q in queries if q.get("ReturnData", True)]
        assert "100 *" in expression["Expression"]
        stats = [q["MetricStat"] for q in queries if "MetricStat" in q]
        assert {s["Metric"]["MetricName"] for s in stats} == metrics and {s["Period"] for s in stats} == {300}
        assert all(s["Metric"]["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": fn}}] for s in stats)


def test_queue_ages_dead_letters_and_the_api(synth):
    found = alarms(synth)
    for queue in QUEUES:
        props = found[f"{queue}Age"]
        assert props["MetricName"] == "ApproximateAgeOfOldestMessage" and props["Namespace"] == "AWS/SQS"
        [lid] = [lid for lid in synth.of_type("AWS::SQS::Queue") if re.search(rf"[a-z]{queue}[0-9A-F]{{8}}$", lid)]
        assert render(props["Dimensions"][0]["Value"]) == lid
    assert found["OrdersQueueAge"]["Threshold"] == 300
    for dlq in DLQS:
        props = found[f"{dlq}NotEmpty"]
        assert (props["MetricName"], props["Threshold"]) == ("ApproximateNumberOfMessagesVisible", 0)
    rate = found["Api5xxRate"]["Metrics"]
    assert {q["MetricStat"]["Metric"]["MetricName"] for q in rate if "MetricStat" in q} == {"5xx", "Count"}
    latency = found["ApiLatencyP99"]
    assert (latency["MetricName"], latency["ExtendedStatistic"], latency["Namespace"]) == ("Latency", "p99",
                                                                                          "AWS/ApiGateway")
    for alarm_id in BUSINESS:  # the business alarms are kept
        assert alarm_id in found


def test_the_dashboard_shows_the_payment_path(synth):
    [dashboard] = synth.of_type("AWS::CloudWatch::Dashboard").values()
    body = render(dashboard["Properties"]["DashboardBody"])
    widgets = json.loads(re.sub(r"<[^>]+>", "X", body))["widgets"]
    titles = [w["properties"].get("title") for w in widgets]
    print("\n".join(str(t) for t in titles))  # the list, for the record
    text = json.dumps(widgets)
    for shown in ('"OrdersAccepted"', '"OrdersSucceeded"', '"PspLatency"', '"ApproximateAgeOfOldestMessage"',
                  '"ApproximateNumberOfMessagesVisible"', '"Throttles"', '"5xx"', '"Latency"'):
        assert shown in text, shown
    searches = [m[0]["expression"] for w in widgets for m in w["properties"].get("metrics", []) if "expression" in m[0]]
    assert any("{MarketPay,service,reason}" in e and "OrdersFailed" in e for e in searches), searches
    assert any("{MarketPay,service,error_class}" in e and "PspErrors" in e for e in searches), searches
    assert '"p50"' in text and '"p99"' in text
    [status] = [w for w in widgets if w["type"] == "alarm"]
    assert len(status["properties"]["alarms"]) == len(alarms(synth))
