"""Where the tool finds the system: the stack's outputs, unless an option or environment variable says otherwise."""

import json

import boto3
import pytest

from ops.resources import VALUES, OpsError, Resources
from tests.ops.support import cli, dead_letter_through_redrive_policy, depth, sqs


@pytest.fixture
def stack(system, monkeypatch):
    """A MarketPay stack in moto whose outputs name the queues and tables; no overriding environment."""
    for spec in VALUES.values():
        monkeypatch.delenv(spec.env, raising=False)
    outputs = {
        "OrdersQueueUrl": system["ORDERS_QUEUE_URL"], "OrdersDlqUrl": system["ORDERS_DLQ_URL"],
        "WorkflowDlqUrl": system["WORKFLOW_DLQ_URL"], "ReconQueueUrl": system["RECON_QUEUE_URL"],
        "ReconDlqUrl": system["RECON_DLQ_URL"], "ReviewQueueUrl": system["REVIEW_QUEUE_URL"],
        "ReviewDlqUrl": system["REVIEW_DLQ_URL"], "PaymentOrdersTableName": system["PAYMENT_ORDERS_TABLE"],
    }
    template = {"Resources": {"Marker": {"Type": "AWS::SQS::Queue"}},
                "Outputs": {key: {"Value": value} for key, value in outputs.items()}}
    boto3.client("cloudformation", region_name="us-east-1").create_stack(
        StackName="MarketPay", TemplateBody=json.dumps(template))
    return system


def test_values_come_from_the_stack_outputs(stack):
    resources = Resources()
    assert resources.get("orders_dlq_url") == stack["ORDERS_DLQ_URL"]
    assert resources.get("payment_orders_table") == stack["PAYMENT_ORDERS_TABLE"]
    assert resources.from_environment() == []


def test_an_option_beats_the_environment_which_beats_the_stack(stack, monkeypatch):
    monkeypatch.setenv("ORDERS_DLQ_URL", "https://env.example/q")
    assert Resources().get("orders_dlq_url") == "https://env.example/q"
    assert Resources(overrides={"orders_dlq_url": "https://option.example/q"}).get("orders_dlq_url") == (
        "https://option.example/q")


def test_a_missing_output_names_the_option_to_pass(stack):
    with pytest.raises(OpsError, match="stack MarketPay has no output LedgerTableName: pass --ledger-table"):
        Resources().get("ledger_table")


def test_a_missing_stack_is_one_clear_line(stack):
    result = cli("--stack", "Nope", "dlq", "list")
    assert result.exit_code == 1
    assert "error: cannot read stack Nope: Stack with id Nope does not exist" in result.output


def test_the_cli_redrives_with_queues_found_in_the_stack(stack):
    sqs().send_message(QueueUrl=stack["ORDERS_QUEUE_URL"], MessageBody='{"payment_order_id": "po_1"}')
    dead_letter_through_redrive_policy(stack["ORDERS_QUEUE_URL"])

    result = cli("dlq", "redrive", "orders", "--yes")

    assert result.exit_code == 0, result.output
    assert "stack MarketPay · us-east-1 · AWS" in result.output and "not from the stack" not in result.output
    assert depth(stack["ORDERS_DLQ_URL"]) == 0 and depth(stack["ORDERS_QUEUE_URL"]) == 1


def test_an_option_on_the_command_line_is_shown_as_not_from_the_stack(stack):
    result = cli("--review-dlq-url", stack["ORDERS_DLQ_URL"], "dlq", "show", "review")
    assert result.exit_code == 0, result.output
    assert "not from the stack: --review-dlq-url" in result.output
