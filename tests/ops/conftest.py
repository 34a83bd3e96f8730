"""The deployed shape in moto for the on-call tool: tables, main queues with their DLQs and redrive policies,
and a state machine under the configured ARN (executions are only recorded, not run)."""

import json
import os

import boto3
import botocore.loaders
import pytest
from moto import mock_aws

from functions.shared import clock
from tests.support.aws import create_resources

DLQS = {  # main queue env -> (DLQ name, DLQ env)
    "ORDERS_QUEUE_URL": ("OrdersDlq", "ORDERS_DLQ_URL"),
    "RECON_QUEUE_URL": ("ReconDlq", "RECON_DLQ_URL"),
    "REVIEW_QUEUE_URL": ("ReviewDlq", "REVIEW_DLQ_URL"),
    "NOTIFICATIONS_QUEUE_URL": ("NotificationsDlq", "NOTIFICATIONS_DLQ_URL"),
}


_parsed: dict[str, object] = {}
_load_file = botocore.loaders.JSONFileLoader.load_file


@pytest.fixture(autouse=True)
def _botocore_models_parsed_once(monkeypatch):
    """Every boto3 session (one per client in functions/shared/aws.py) parses the same model files again;
    that was half of this folder's CPU time. Within these tests, each file is parsed once (read-only data)."""

    def load_file(self, file_path):
        if file_path not in _parsed:
            _parsed[file_path] = _load_file(self, file_path)
        return _parsed[file_path]

    monkeypatch.setattr(botocore.loaders.JSONFileLoader, "load_file", load_file)


@pytest.fixture
def system():
    """Fresh moto AWS; yields the environment (table names, queue URLs) the tool reads by default."""
    saved = dict(os.environ)
    with mock_aws():
        env = create_resources("ops")
        sqs = boto3.client("sqs", region_name="us-east-1")
        env["NOTIFICATIONS_QUEUE_URL"] = os.environ["NOTIFICATIONS_QUEUE_URL"] = sqs.create_queue(
            QueueName="ops-NotificationsQueue")["QueueUrl"]
        for main_env, (dlq_name, dlq_env) in DLQS.items():
            url = sqs.create_queue(QueueName=f"ops-{dlq_name}")["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            sqs.set_queue_attributes(
                QueueUrl=env[main_env],
                Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 5})},
            )
            env[dlq_env] = os.environ[dlq_env] = url
        boto3.client("stepfunctions", region_name="us-east-1").create_state_machine(
            name="ops-PaymentWorkflow", roleArn="arn:aws:iam::123456789012:role/sfn",
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
        )
        yield env
    clock.reset()
    os.environ.clear()
    os.environ.update(saved)
