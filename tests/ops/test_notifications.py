"""`ops notifications set-endpoint` / `show`, and the notifications dead-letter queue in `ops dlq`."""

import boto3
import pytest

from tests.ops.support import cli as ops


@pytest.fixture
def endpoints(system, monkeypatch):
    boto3.client("dynamodb", region_name="us-east-1").create_table(
        TableName="ops-NotificationEndpoints", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "client_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "client_id", "AttributeType": "S"}])
    monkeypatch.setenv("NOTIFICATION_ENDPOINTS_TABLE", "ops-NotificationEndpoints")
    return system


def test_set_endpoint_prints_a_generated_secret_once_and_show_never_does(endpoints):
    first = ops("notifications", "set-endpoint", "--url", "https://shop.example/hooks")
    assert first.exit_code == 0, first.output
    assert "created: default -> https://shop.example/hooks" in first.output
    secret = first.output.split("signing secret (shown once): ")[1].split()[0]
    assert secret.startswith("mpsec_")
    again = ops("notifications", "set-endpoint", "--url", "https://shop.example/v2")
    assert "updated" in again.output and "mpsec_" not in again.output
    shown = ops("notifications", "show")
    assert "https://shop.example/v2" in shown.output and secret not in shown.output


def test_set_endpoint_refuses_plain_http_to_another_host(endpoints):
    refused = ops("notifications", "set-endpoint", "--url", "http://shop.example/hooks")
    assert refused.exit_code == 1 and "must use https" in refused.output


def test_the_notifications_dlq_is_listed(endpoints):
    listed = ops("dlq", "list")
    assert listed.exit_code == 0, listed.output
    assert "NotificationsDlq" in listed.output


def test_each_client_has_its_own_endpoint(endpoints):
    assert ops("notifications", "set-endpoint", "--url", "https://a.example/h").exit_code == 0
    made = ops("notifications", "set-endpoint", "--url", "https://b.example/h", "--client", "shop_b")
    assert made.exit_code == 0 and "created: shop_b -> https://b.example/h" in made.output
    assert "https://a.example/h" in ops("notifications", "show").output
    assert "https://b.example/h" in ops("notifications", "show", "--client", "shop_b").output
    assert ops("notifications", "show", "--client", "shop_c").exit_code == 1
