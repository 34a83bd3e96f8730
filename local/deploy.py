"""Deploy a synthesized CDK template into moto's CloudFormation, as `cdk deploy` would.

`cdk deploy` uploads the file assets to the bootstrap bucket, then creates the stack. Here the same happens
against moto, with one preparation step: moto's CloudFormation silently skips resource types it does not model
(ApiGatewayV2, CloudWatch alarms, SQS queue policies, SNS subscriptions, custom resources), and fails the
whole stack when a Fn::GetAtt (in a resource or an output) names such a skipped resource. Those resources are
taken out of the template handed to moto, every reference to them is replaced by a local stand-in value, and
what matters locally is created beside the stack from the same template:
- CloudWatch alarms through the CloudWatch API;
- bucket notifications (the bucket's NotificationConfiguration, or CDK's Custom::S3BucketNotifications) through
  PutBucketNotificationConfiguration, because moto's S3 ignores NotificationConfiguration in CloudFormation;
- HTTP API routes are served by local.gateway; outputs naming the HTTP API point at the local gateway;
- state machines are copied into moto's executing Step Functions backend (CloudFormation creates them in the
  non-executing one, which the API does not read once execution is on).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import WaiterError
from moto.cloudformation.models import cloudformation_backends
from moto.cloudformation.parsing import NULL_MODELS, clean_json, get_model_map
from moto.sqs.models import sqs_backends
from moto.stepfunctions.models import stepfunctions_backends
from moto.stepfunctions.parser.models import stepfunctions_parser_backends

from local.moto_server import ACCOUNT_ID, REGION
from local.template import Template, getatt_target, referenced_ids

log = logging.getLogger("local.deploy")

BOOTSTRAP_VERSION_PARAMETER = "/cdk-bootstrap/hnb659fds/version"
BOOTSTRAP_VERSION = "27"
API_ID = "localapi"  # stands in for the HTTP API id in ARNs and names
_ZIP_CACHE = Path(tempfile.gettempdir()) / "marketpay-local-assets"

# Alarm properties that PutMetricAlarm takes under the same name.
_ALARM_KEYS = (
    "AlarmName",
    "AlarmDescription",
    "ActionsEnabled",
    "OKActions",
    "AlarmActions",
    "InsufficientDataActions",
    "MetricName",
    "Namespace",
    "Statistic",
    "ExtendedStatistic",
    "Dimensions",
    "Period",
    "Unit",
    "EvaluationPeriods",
    "DatapointsToAlarm",
    "Threshold",
    "ComparisonOperator",
    "TreatMissingData",
    "EvaluateLowSampleCountPercentile",
    "Metrics",
    "ThresholdMetricId",
    "Tags",
)


class DeployError(RuntimeError):
    """The template could not be deployed into moto."""


@dataclass
class DeployedStack:
    """A stack deployed into moto: its outputs and a resolver of template expressions."""

    stack_name: str
    stack_id: str
    template: Template
    moto_template: dict[str, Any]
    outputs: dict[str, str]
    physical_ids: dict[str, str]
    skipped: dict[str, str] = field(default_factory=dict)  # logical id -> type not deployed into moto
    api_url: str = ""

    def resolve(self, expr: Any) -> Any:
        """Evaluate a template expression (Ref, GetAtt, Join, Sub...) against the deployed stack."""
        stack = cloudformation_backends[ACCOUNT_ID][REGION].get_stack(self.stack_id)
        return _plain(clean_json(_substitute_skipped(copy.deepcopy(expr), self._stand_ins), stack.resource_map))

    @property
    def _stand_ins(self) -> dict[str, dict[str, str]]:
        return _stand_in_values(self.template, self.skipped, self.stack_name, self.api_url)


def _plain(value: Any) -> Any:
    """moto answers a Ref to a model without a physical id (e.g. a LayerVersion) with the model: use its ARN."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if hasattr(value, "arn"):
        return value.arn
    raise DeployError(f"cannot resolve {value!r} to a value")


def deploy(
    cdk_out: str | Path,
    stack_name: str,
    aws_url: str,
    api_url: str,
) -> DeployedStack:
    """Upload assets, create the stack in moto and wait for CREATE_COMPLETE."""
    started = time.monotonic()
    cdk_out = Path(cdk_out)
    template = Template.load(cdk_out / f"{stack_name}.template.json")
    session = boto3.session.Session(region_name=REGION)
    clients = {name: session.client(name, endpoint_url=aws_url) for name in ("s3", "ssm", "cloudformation")}

    clients["ssm"].put_parameter(
        Name=BOOTSTRAP_VERSION_PARAMETER, Value=BOOTSTRAP_VERSION, Type="String", Overwrite=True
    )
    _publish_assets(cdk_out, stack_name, clients["s3"])

    supported = set(get_model_map()) | set(NULL_MODELS)
    skipped = {
        lid: r["Type"]
        for lid, r in template.resources.items()
        if r["Type"] not in supported
        or r["Type"].startswith("Custom::")
        or r["Type"] == "AWS::CloudFormation::CustomResource"
    }
    moto_template = prepare_for_moto(template, skipped, stack_name, api_url)
    cfn = clients["cloudformation"]
    try:
        stack_id = cfn.create_stack(
            StackName=stack_name,
            TemplateBody=json.dumps(moto_template),
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
        )["StackId"]
    except Exception as exc:  # moto raises while creating resources, inside CreateStack
        raise DeployError(f"CreateStack {stack_name} failed in moto: {exc}") from exc
    try:
        waiter = cfn.get_waiter("stack_create_complete")
        waiter.wait(StackName=stack_name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
    except WaiterError as exc:
        raise DeployError(f"stack {stack_name} did not reach CREATE_COMPLETE in moto: {exc}") from exc
    # Before anything can send a message (the S3 test event below does): moto's own SQS trigger would invoke
    # the Lambda inside SendMessage. local.event_sources polls instead.
    disable_moto_sqs_triggers()

    deployed = DeployedStack(
        stack_name=stack_name,
        stack_id=stack_id,
        template=template,
        moto_template=moto_template,
        outputs={},
        physical_ids={},
        skipped=skipped,
        api_url=api_url,
    )
    _copy_state_machines_to_executing_backend(template, deployed)
    _create_alarms(template, deployed, session.client("cloudwatch", endpoint_url=aws_url))
    _attach_layers(template, deployed, session.client("lambda", endpoint_url=aws_url))
    _apply_bucket_notifications(deployed, clients["s3"])

    desc = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    deployed.outputs = {o["OutputKey"]: o["OutputValue"] for o in desc.get("Outputs", [])}
    for page in cfn.get_paginator("list_stack_resources").paginate(StackName=stack_name):
        for res in page["StackResourceSummaries"]:
            deployed.physical_ids[res["LogicalResourceId"]] = res["PhysicalResourceId"]
    counts = Counter(skipped.values())
    log.info("kept out of moto: %s", ", ".join(f"{n} {t}" for t, n in sorted(counts.items())) or "nothing")
    log.info(
        "deployed %s into moto: %d resources, %d outputs, %.2f s",
        stack_name,
        len(deployed.physical_ids),
        len(deployed.outputs),
        time.monotonic() - started,
    )
    return deployed


def disable_moto_sqs_triggers() -> None:
    """Stop moto invoking Lambdas synchronously inside SendMessage (local.event_sources polls instead)."""
    for queue in sqs_backends[ACCOUNT_ID][REGION].queues.values():
        queue.lambda_event_source_mappings.clear()


# --- assets -------------------------------------------------------------------------------------------


def _publish_assets(cdk_out: Path, stack_name: str, s3: Any) -> None:
    manifest_path = cdk_out / f"{stack_name}.assets.json"
    if not manifest_path.exists():
        log.warning("no %s: no assets published", manifest_path.name)
        return
    manifest = json.loads(manifest_path.read_text())
    made_buckets: set[str] = set()
    for asset_hash, asset in manifest.get("files", {}).items():
        source = cdk_out / asset["source"]["path"]
        for dest in asset["destinations"].values():
            bucket = _sub_pseudo(dest["bucketName"])
            if bucket not in made_buckets:
                s3.create_bucket(Bucket=bucket)
                made_buckets.add(bucket)
            if asset["source"].get("packaging") == "zip" or source.is_dir():
                body = _zip_dir(source, asset_hash)
            else:
                body = source.read_bytes()
            s3.put_object(Bucket=bucket, Key=_sub_pseudo(dest["objectKey"]), Body=body)
    if manifest.get("dockerImages"):
        log.warning("docker image assets are not supported locally: %s", list(manifest["dockerImages"]))


def _sub_pseudo(text: str) -> str:
    return (
        text.replace("${AWS::AccountId}", ACCOUNT_ID)
        .replace("${AWS::Region}", REGION)
        .replace("${AWS::Partition}", "aws")
    )


def _zip_dir(directory: Path, asset_hash: str) -> bytes:
    """Zip an asset directory; cached by the asset hash (CDK's hash of the content)."""
    cached = _ZIP_CACHE / f"{asset_hash}.zip"
    if cached.exists():
        return cached.read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path in sorted(directory.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                zf.write(path, path.relative_to(directory).as_posix())
    data = buf.getvalue()
    _ZIP_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(cached)
    return data


# --- preparing the template for moto ------------------------------------------------------------------


def _stand_in_values(
    template: Template, skipped: dict[str, str], stack_name: str, api_url: str
) -> dict[str, dict[str, str]]:
    """For each skipped resource: what its Ref and its attributes stand for locally."""
    values: dict[str, dict[str, str]] = {}
    for lid, rtype in skipped.items():
        if rtype == "AWS::ApiGatewayV2::Api":
            values[lid] = {"Ref": API_ID, "ApiId": API_ID, "ApiEndpoint": api_url.rstrip("/")}
        elif rtype == "AWS::CloudWatch::Alarm":
            name = _alarm_name(template, lid, stack_name)
            values[lid] = {"Ref": name, "Arn": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT_ID}:alarm:{name}"}
        else:
            values[lid] = {"Ref": f"{stack_name}-{lid}-local"}
    return values


def _alarm_name(template: Template, logical_id: str, stack_name: str) -> str:
    name = template.props(logical_id).get("AlarmName")
    return name if isinstance(name, str) else f"{stack_name}-{logical_id}-local"


def _substitute_skipped(expr: Any, stand_ins: dict[str, dict[str, str]]) -> Any:
    if isinstance(expr, dict):
        if len(expr) == 1 and "Ref" in expr and expr["Ref"] in stand_ins:
            return stand_ins[expr["Ref"]]["Ref"]
        if len(expr) == 1 and "Fn::GetAtt" in expr:
            value = expr["Fn::GetAtt"]
            lid, attr = value.split(".", 1) if isinstance(value, str) else value
            if lid in stand_ins:
                return stand_ins[lid].get(attr, f"{stand_ins[lid]['Ref']}.{attr}")
        if len(expr) == 1 and "Fn::Sub" in expr:
            value = expr["Fn::Sub"]
            text = value[0] if isinstance(value, list) else value
            for lid, vals in stand_ins.items():
                text = text.replace("${" + lid + "}", vals["Ref"])
                for attr, attr_value in vals.items():
                    text = text.replace("${" + lid + "." + attr + "}", attr_value)
            if isinstance(value, list):
                return {"Fn::Sub": [text, _substitute_skipped(value[1], stand_ins)]}
            return {"Fn::Sub": text}
        return {k: _substitute_skipped(v, stand_ins) for k, v in expr.items()}
    if isinstance(expr, list):
        return [_substitute_skipped(v, stand_ins) for v in expr]
    return expr


def prepare_for_moto(template: Template, skipped: dict[str, str], stack_name: str, api_url: str) -> dict[str, Any]:
    """The template moto gets: skipped resources removed, references to them replaced by stand-ins."""
    stand_ins = _stand_in_values(template, skipped, stack_name, api_url)
    data = copy.deepcopy(template.data)
    resources = {lid: r for lid, r in data["Resources"].items() if lid not in skipped}
    for resource in resources.values():
        depends = resource.get("DependsOn")
        if isinstance(depends, str):
            depends = [depends]
        if depends is not None:
            kept = [d for d in depends if d not in skipped]
            if kept:
                resource["DependsOn"] = kept
            else:
                resource.pop("DependsOn")
        if resource["Type"] == "AWS::StepFunctions::StateMachine":
            _inline_definition_substitutions(resource["Properties"])
    data["Resources"] = _substitute_skipped(resources, stand_ins)

    apis = {lid for lid, t in skipped.items() if t == "AWS::ApiGatewayV2::Api"}
    outputs = data.get("Outputs") or {}
    for output in outputs.values():
        value = output.get("Value")
        if apis & referenced_ids(value):
            is_endpoint = getatt_target(value) in apis and "Fn::GetAtt" in value
            output["Value"] = api_url.rstrip("/") if is_endpoint else api_url.rstrip("/") + "/"
        else:
            output["Value"] = _substitute_skipped(value, stand_ins)
    data.pop("Rules", None)  # the BootstrapVersion rule: checked by real CloudFormation only
    return data


def _inline_definition_substitutions(props: dict[str, Any]) -> None:
    """moto ignores DefinitionSubstitutions: fold them into DefinitionString as a Fn::Sub."""
    subs = props.pop("DefinitionSubstitutions", None)
    if subs:
        props["DefinitionString"] = {"Fn::Sub": [props["DefinitionString"], subs]}


# --- created beside the stack -------------------------------------------------------------------------


def _copy_state_machines_to_executing_backend(template: Template, deployed: DeployedStack) -> None:
    plain = stepfunctions_backends[ACCOUNT_ID][REGION]
    executing = stepfunctions_parser_backends[ACCOUNT_ID][REGION]
    stack = cloudformation_backends[ACCOUNT_ID][REGION].get_stack(deployed.stack_id)
    for lid in template.of_type("AWS::StepFunctions::StateMachine"):
        sm = stack.resource_map[lid]
        props = template.props(lid)
        executing.create_state_machine(
            name=sm.name,
            definition=sm.definition,
            roleArn=sm.roleArn,
            sm_type=props.get("StateMachineType", "STANDARD"),
        )
        plain.state_machines = [m for m in plain.state_machines if m.arn != sm.arn]


def _attach_layers(template: Template, deployed: DeployedStack, lam: Any) -> None:
    """moto's CloudFormation drops a function's Layers: set them as the template says."""
    for lid in template.of_type("AWS::Lambda::Function"):
        layers = template.props(lid).get("Layers")
        if layers:
            lam.update_function_configuration(
                FunctionName=deployed.resolve({"Ref": lid}), Layers=deployed.resolve(layers)
            )


def _create_alarms(template: Template, deployed: DeployedStack, cloudwatch: Any) -> None:
    for lid, props in ((lid, template.props(lid)) for lid in template.of_type("AWS::CloudWatch::Alarm")):
        resolved = deployed.resolve(props)
        kwargs = {k: resolved[k] for k in _ALARM_KEYS if k in resolved}
        kwargs["AlarmName"] = _alarm_name(template, lid, deployed.stack_name)
        for key in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
            if key in kwargs:
                kwargs[key] = int(kwargs[key])
        if "Threshold" in kwargs:
            kwargs["Threshold"] = float(kwargs["Threshold"])
        cloudwatch.put_metric_alarm(**kwargs)


def bucket_notification_configs(deployed: DeployedStack) -> dict[str, dict[str, Any]]:
    """Bucket name -> notification configuration (S3 API shape) the template asks for."""
    template = deployed.template
    configs: dict[str, dict[str, Any]] = {}
    for lid in template.of_type("AWS::S3::Bucket"):
        cfn_config = template.props(lid).get("NotificationConfiguration")
        if cfn_config:
            bucket = deployed.resolve({"Ref": lid})
            configs[bucket] = _cfn_to_api_notifications(deployed.resolve(cfn_config))
    for resource in template.resources.values():
        if resource["Type"] == "Custom::S3BucketNotifications":
            props = deployed.resolve(resource.get("Properties", {}))
            configs[props["BucketName"]] = _normalize_api_notifications(props.get("NotificationConfiguration", {}))
    return configs


def _apply_bucket_notifications(deployed: DeployedStack, s3: Any) -> None:
    for bucket, config in bucket_notification_configs(deployed).items():
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)


def _filter_rules(rules: list[dict[str, str]]) -> list[dict[str, str]]:
    # moto matches only lower-case rule names; S3 treats them case-insensitively.
    return [{"Name": r["Name"].lower(), "Value": r["Value"]} for r in rules]


def _cfn_to_api_notifications(cfn: dict[str, Any]) -> dict[str, Any]:
    api: dict[str, Any] = {}
    for cfn_key, api_key, arn_key, api_arn_key in (
        ("QueueConfigurations", "QueueConfigurations", "Queue", "QueueArn"),
        ("LambdaConfigurations", "LambdaFunctionConfigurations", "Function", "LambdaFunctionArn"),
        ("TopicConfigurations", "TopicConfigurations", "Topic", "TopicArn"),
    ):
        for item in cfn.get(cfn_key, []):
            entry: dict[str, Any] = {api_arn_key: item[arn_key], "Events": [item["Event"]]}
            rules = item.get("Filter", {}).get("S3Key", {}).get("Rules")
            if rules:
                entry["Filter"] = {"Key": {"FilterRules": _filter_rules(rules)}}
            api.setdefault(api_key, []).append(entry)
    if cfn.get("EventBridgeConfiguration", {}).get("EventBridgeEnabled"):
        api["EventBridgeConfiguration"] = {}
    return api


def _normalize_api_notifications(config: dict[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(config)
    for key in ("QueueConfigurations", "LambdaFunctionConfigurations", "TopicConfigurations"):
        for item in config.get(key, []):
            rules = item.get("Filter", {}).get("Key", {}).get("FilterRules")
            if rules:
                item["Filter"]["Key"]["FilterRules"] = _filter_rules(rules)
    return config
