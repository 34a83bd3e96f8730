"""A small CDK-shaped template (written here by hand, no CDK) and its cdk.out folder, for the local tests.

It has what the real stack has, in the shapes CDK synthesizes: code and layer assets in the bootstrap bucket,
the BootstrapVersion parameter, an HTTP API (apigatewayv2: Api, Integration, Routes, Stage), SQS queues with
DLQs and an event source mapping with ReportBatchItemFailures, an S3 bucket notifying a queue on incoming/, an
Express state machine whose tasks call Lambdas by ARN, a rate(1 minute) rule, a CloudWatch alarm, a queue
policy and an SNS subscription (types moto's CloudFormation does not model).
"""

import json
from pathlib import Path

STACK = "ToyStack"
CODE_HASH = "a" * 64
LAYER_HASH = "b" * 64
ASSET_BUCKET = {"Fn::Sub": "cdk-hnb659fds-assets-${AWS::AccountId}-${AWS::Region}"}
CODE_DIR = Path(__file__).parent / "toy_code"


def _function(handler, env=None, timeout=10, layer=True, role="FnRole"):
    props = {
        "Code": {"S3Bucket": ASSET_BUCKET, "S3Key": f"{CODE_HASH}.zip"},
        "Handler": handler,
        "Role": {"Fn::GetAtt": [role, "Arn"]},
        "Runtime": "python3.11",
        "MemorySize": 256,
        "Timeout": timeout,
        "Environment": {"Variables": {"TOY_TABLE": {"Ref": "ToyTable"}, **(env or {})}},
    }
    if layer:
        props["Layers"] = [{"Ref": "DepsLayer"}]
    return {"Type": "AWS::Lambda::Function", "Properties": props, "DependsOn": [role]}


def _role():
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Statement": [
                    {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}}
                ],
                "Version": "2012-10-17",
            }
        },
    }


def _queue(dlq=None, visibility=30):
    props = {"VisibilityTimeout": visibility}
    if dlq:
        props["RedrivePolicy"] = {"deadLetterTargetArn": {"Fn::GetAtt": [dlq, "Arn"]}, "maxReceiveCount": 2}
    return {"Type": "AWS::SQS::Queue", "Properties": props, "UpdateReplacePolicy": "Delete"}


def _esm(queue, function, batch_size, report_failures=True, window=None, max_concurrency=None):
    props = {
        "EventSourceArn": {"Fn::GetAtt": [queue, "Arn"]},
        "FunctionName": {"Ref": function},
        "BatchSize": batch_size,
    }
    if report_failures:
        props["FunctionResponseTypes"] = ["ReportBatchItemFailures"]
    if window is not None:
        props["MaximumBatchingWindowInSeconds"] = window
    if max_concurrency is not None:
        props["ScalingConfig"] = {"MaximumConcurrency": max_concurrency}
    return {"Type": "AWS::Lambda::EventSourceMapping", "Properties": props}


def _definition():
    """An Express workflow: Charge retries PspTransientError, catches PspPermanentError into MarkFailed."""
    charge = {
        "Type": "Task",
        "Resource": "__CHARGE__",
        "ResultPath": "$.charge",
        "Retry": [{"ErrorEquals": ["PspTransientError"], "IntervalSeconds": 1, "BackoffRate": 1, "MaxAttempts": 3}],
        "Catch": [{"ErrorEquals": ["PspPermanentError"], "ResultPath": "$.error", "Next": "MarkFailed"}],
        "Next": "Done",
    }
    mark_failed = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": "__MARK__", "Payload.$": "$"},
        "OutputPath": "$.Payload",
        "End": True,
    }
    text = json.dumps(
        {"StartAt": "Charge", "States": {"Charge": charge, "MarkFailed": mark_failed, "Done": {"Type": "Succeed"}}}
    )
    before, rest = text.split("__CHARGE__")
    middle, after = rest.split("__MARK__")
    return {
        "Fn::Join": [
            "",
            [before, {"Fn::GetAtt": ["ChargeFn", "Arn"]}, middle, {"Fn::GetAtt": ["MarkFailedFn", "Arn"]}, after],
        ]
    }


def template():
    resources = {
        "FnRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Statement": [
                        {
                            "Action": "sts:AssumeRole",
                            "Effect": "Allow",
                            "Principal": {"Service": "lambda.amazonaws.com"},
                        }
                    ],
                    "Version": "2012-10-17",
                }
            },
        },
        "DepsLayer": {
            "Type": "AWS::Lambda::LayerVersion",
            "Properties": {
                "Content": {"S3Bucket": ASSET_BUCKET, "S3Key": f"{LAYER_HASH}.zip"},
                "CompatibleRuntimes": ["python3.11"],
            },
        },
        "ToyTable": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        },
        "EchoFn": _function("toy_handlers.echo", {"POWERTOOLS_SERVICE_NAME": "echo"}),
        "BatchFn": _function("toy_handlers.batch", {"POWERTOOLS_SERVICE_NAME": "batch"}),
        "FailFn": _function("toy_handlers.always_fail"),
        "ApiFn": _function("toy_handlers.api"),
        "ChargeFn": _function("toy_handlers.charge"),
        "MarkFailedFn": _function("toy_handlers.mark_failed"),
        "TickFn": _function("toy_handlers.tick", layer=False),
        # Its own role, which grants reads of the table but not writes; its own variable.
        "TableFn": _function("toy_handlers.table_user", {"ONLY_TABLE_FN": "mine"}, role="TableRole"),
        "TableRole": _role(),
        "TablePolicy": {
            "Type": "AWS::IAM::Policy",
            "Properties": {
                "PolicyName": "TablePolicy",
                "Roles": [{"Ref": "TableRole"}],
                "PolicyDocument": {
                    "Statement": [
                        {"Effect": "Allow", "Action": "dynamodb:Get*", "Resource": {"Fn::GetAtt": ["ToyTable", "Arn"]}}
                    ],
                    "Version": "2012-10-17",
                },
            },
        },
        "WorkDlq": _queue(),
        "WorkQueue": _queue("WorkDlq", visibility=1),
        "WorkMapping": _esm("WorkQueue", "BatchFn", batch_size=3, window=1),
        "FailDlq": _queue(),
        "FailQueue": _queue("FailDlq", visibility=1),
        "FailMapping": _esm("FailQueue", "FailFn", batch_size=5, report_failures=False, max_concurrency=3),
        # ten minutes of visibility: a test moves the system's clock past them instead of waiting
        "SlowFailDlq": _queue(),
        "SlowFailQueue": _queue("SlowFailDlq", visibility=600),
        "SlowFailMapping": _esm("SlowFailQueue", "FailFn", batch_size=1, report_failures=False),
        "InboxQueue": _queue(),
        "InboxQueuePolicy": {
            "Type": "AWS::SQS::QueuePolicy",
            "Properties": {
                "Queues": [{"Ref": "InboxQueue"}],
                "PolicyDocument": {
                    "Statement": [
                        {
                            "Action": "sqs:SendMessage",
                            "Effect": "Allow",
                            "Principal": {"Service": "s3.amazonaws.com"},
                            "Resource": {"Fn::GetAtt": ["InboxQueue", "Arn"]},
                        }
                    ],
                    "Version": "2012-10-17",
                },
            },
        },
        "Inbox": {
            "Type": "AWS::S3::Bucket",
            "Properties": {
                "NotificationConfiguration": {
                    "QueueConfigurations": [
                        {
                            "Event": "s3:ObjectCreated:*",
                            "Queue": {"Fn::GetAtt": ["InboxQueue", "Arn"]},
                            "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": "incoming/"}]}},
                        }
                    ]
                }
            },
            "DependsOn": ["InboxQueuePolicy"],
        },
        # CDK's bucket.add_event_notification shape: a custom resource that moto cannot run
        "CustomInbox": {"Type": "AWS::S3::Bucket"},
        "CustomInboxNotifications": {
            "Type": "Custom::S3BucketNotifications",
            "Properties": {
                "ServiceToken": {"Fn::GetAtt": ["EchoFn", "Arn"]},
                "BucketName": {"Ref": "CustomInbox"},
                "NotificationConfiguration": {
                    "QueueConfigurations": [
                        {
                            "Events": ["s3:ObjectCreated:*"],
                            "QueueArn": {"Fn::GetAtt": ["InboxQueue", "Arn"]},
                            "Filter": {"Key": {"FilterRules": [{"Name": "Prefix", "Value": "incoming/"}]}},
                        }
                    ]
                },
                "Managed": True,
            },
        },
        "Workflow": {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {
                "DefinitionString": _definition(),
                "RoleArn": {"Fn::GetAtt": ["FnRole", "Arn"]},
                "StateMachineType": "EXPRESS",
            },
        },
        "HttpApi": {"Type": "AWS::ApiGatewayV2::Api", "Properties": {"Name": "ToyApi", "ProtocolType": "HTTP"}},
        "HttpApiStage": {
            "Type": "AWS::ApiGatewayV2::Stage",
            "Properties": {"ApiId": {"Ref": "HttpApi"}, "StageName": "$default", "AutoDeploy": True},
        },
        "ApiIntegration": {
            "Type": "AWS::ApiGatewayV2::Integration",
            "Properties": {
                "ApiId": {"Ref": "HttpApi"},
                "IntegrationType": "AWS_PROXY",
                "IntegrationUri": {"Fn::GetAtt": ["ApiFn", "Arn"]},
                "PayloadFormatVersion": "2.0",
            },
        },
        "PostRoute": {
            "Type": "AWS::ApiGatewayV2::Route",
            "Properties": {
                "ApiId": {"Ref": "HttpApi"},
                "RouteKey": "POST /v1/payments",
                "Target": {"Fn::Join": ["", ["integrations/", {"Ref": "ApiIntegration"}]]},
            },
        },
        "GetRoute": {
            "Type": "AWS::ApiGatewayV2::Route",
            "Properties": {
                "ApiId": {"Ref": "HttpApi"},
                "RouteKey": "GET /v1/payments/{payment_order_id}",
                "Target": {"Fn::Join": ["", ["integrations/", {"Ref": "ApiIntegration"}]]},
            },
        },
        "ApiPermission": {
            "Type": "AWS::Lambda::Permission",
            "Properties": {
                "Action": "lambda:InvokeFunction",
                "FunctionName": {"Fn::GetAtt": ["ApiFn", "Arn"]},
                "Principal": "apigateway.amazonaws.com",
                "SourceArn": {
                    "Fn::Join": [
                        "",
                        [
                            "arn:aws:execute-api:",
                            {"Ref": "AWS::Region"},
                            ":",
                            {"Ref": "AWS::AccountId"},
                            ":",
                            {"Ref": "HttpApi"},
                            "/*/*/v1/payments",
                        ],
                    ]
                },
            },
        },
        "TickRule": {
            "Type": "AWS::Events::Rule",
            "Properties": {
                "ScheduleExpression": "rate(1 minute)",
                "State": "ENABLED",
                "Targets": [{"Arn": {"Fn::GetAtt": ["TickFn", "Arn"]}, "Id": "Target0"}],
            },
        },
        "AlarmTopic": {"Type": "AWS::SNS::Topic"},
        "AlarmEmail": {
            "Type": "AWS::SNS::Subscription",
            "Properties": {"TopicArn": {"Ref": "AlarmTopic"}, "Protocol": "email", "Endpoint": "oncall@example.com"},
        },
        "WorkDlqAlarm": {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                "EvaluationPeriods": 1,
                "MetricName": "ApproximateNumberOfMessagesVisible",
                "Namespace": "AWS/SQS",
                "Period": 60,
                "Statistic": "Maximum",
                "Threshold": 1,
                "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["WorkDlq", "QueueName"]}}],
                "AlarmActions": [{"Ref": "AlarmTopic"}],
            },
        },
    }
    outputs = {
        "ApiUrl": {
            "Value": {
                "Fn::Join": [
                    "",
                    [
                        "https://",
                        {"Ref": "HttpApi"},
                        ".execute-api.",
                        {"Ref": "AWS::Region"},
                        ".",
                        {"Ref": "AWS::URLSuffix"},
                        "/",
                    ],
                ]
            }
        },
        "ApiEndpoint": {"Value": {"Fn::GetAtt": ["HttpApi", "ApiEndpoint"]}},
        "WorkQueueUrl": {"Value": {"Ref": "WorkQueue"}},
        "WorkDlqUrl": {"Value": {"Ref": "WorkDlq"}},
        "FailDlqUrl": {"Value": {"Ref": "FailDlq"}},
        "FailQueueUrl": {"Value": {"Ref": "FailQueue"}},
        "SlowFailQueueUrl": {"Value": {"Ref": "SlowFailQueue"}},
        "SlowFailDlqUrl": {"Value": {"Ref": "SlowFailDlq"}},
        "InboxQueueUrl": {"Value": {"Ref": "InboxQueue"}},
        "InboxBucket": {"Value": {"Ref": "Inbox"}},
        "CustomInboxBucket": {"Value": {"Ref": "CustomInbox"}},
        "StateMachineArn": {"Value": {"Ref": "Workflow"}},
        "EchoFunctionName": {"Value": {"Ref": "EchoFn"}},
        "TableFunctionName": {"Value": {"Ref": "TableFn"}},
        "TableName": {"Value": {"Ref": "ToyTable"}},
        "AlarmName": {"Value": {"Ref": "WorkDlqAlarm"}},
    }
    return {
        "Parameters": {
            "BootstrapVersion": {
                "Type": "AWS::SSM::Parameter::Value<String>",
                "Default": "/cdk-bootstrap/hnb659fds/version",
            }
        },
        "Resources": resources,
        "Outputs": outputs,
        "Rules": {
            "CheckBootstrapVersion": {
                "Assertions": [
                    {
                        "Assert": {
                            "Fn::Not": [{"Fn::Contains": [["1", "2", "3", "4", "5"], {"Ref": "BootstrapVersion"}]}]
                        },
                        "AssertDescription": "bootstrap",
                    }
                ]
            }
        },
    }


def write_cdk_out(directory: Path) -> Path:
    """A cdk.out folder: the template, its assets manifest and the two asset directories."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{STACK}.template.json").write_text(json.dumps(template(), indent=1))
    code = directory / f"asset.{CODE_HASH}"
    code.mkdir(exist_ok=True)
    (code / "toy_handlers.py").write_text((CODE_DIR / "toy_handlers.py").read_text())
    layer = directory / f"asset.{LAYER_HASH}" / "python"
    layer.mkdir(parents=True, exist_ok=True)
    (layer / "dep.py").write_text("VALUE = 1\n")
    dest = {"bucketName": "cdk-hnb659fds-assets-${AWS::AccountId}-${AWS::Region}"}
    manifest = {
        "version": "48.0.0",
        "files": {
            h: {
                "source": {"path": f"asset.{h}", "packaging": "zip"},
                "destinations": {"current_account-current_region": {**dest, "objectKey": f"{h}.zip"}},
            }
            for h in (CODE_HASH, LAYER_HASH)
        },
        "dockerImages": {},
    }
    (directory / f"{STACK}.assets.json").write_text(json.dumps(manifest, indent=1))
    return directory
