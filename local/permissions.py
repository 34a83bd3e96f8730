"""What each function's code asks of AWS, and whether its role in the template allows it.

moto enforces no IAM. The runtime records, per function, every AWS call made inside that function's scope as
the IAM actions and resources AWS would authorize (`calls_as_iam`: TransactWriteItems is one action per item,
an S3 multipart upload is s3:PutObject, SendMessageBatch is sqs:SendMessage...), and `Roles` reads each
function's role policies from the template, resolved against the deployed stack, to say which recorded calls
no statement grants. Conditions are not evaluated (an Allow with a condition counts as granted).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from local.moto_server import ACCOUNT_ID, REGION


@dataclass(frozen=True, order=True)
class Call:
    """One IAM authorization: `service:Action` on a resource ARN ("*" when the call names none)."""

    action: str
    resource: str = "*"

    def __str__(self) -> str:
        return f"{self.action} on {self.resource}"


# IAM prefixes that differ from botocore's signing name.
_IAM_PREFIX = {"monitoring": "cloudwatch"}
# Operations authorized under another action of the same service.
_AS_ACTION = {
    ("sqs", "SendMessageBatch"): "SendMessage",
    ("sqs", "DeleteMessageBatch"): "DeleteMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "ChangeMessageVisibility",
    ("s3", "HeadObject"): "GetObject",
    ("s3", "CreateMultipartUpload"): "PutObject",
    ("s3", "UploadPart"): "PutObject",
    ("s3", "CompleteMultipartUpload"): "PutObject",
    ("s3", "ListObjectsV2"): "ListBucket",
    ("s3", "ListObjects"): "ListBucket",
    ("s3", "HeadBucket"): "ListBucket",
}
_DYNAMODB_ITEM_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                          "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}


def calls_as_iam(signing_name: str, operation: str, params: dict[str, Any]) -> list[Call]:
    """The authorizations AWS checks for one API call."""
    service = _IAM_PREFIX.get(signing_name, signing_name)
    if service == "dynamodb":
        return list(_dynamodb(operation, params))
    if service == "s3":
        return list(_s3(operation, params))
    action = f"{service}:{_AS_ACTION.get((service, operation), operation)}"
    return [Call(action, _resource(service, params))]


def _table_arn(name: str, index: str | None = None) -> str:
    arn = name if name.startswith("arn:") else f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}"
    return f"{arn}/index/{index}" if index else arn


def _dynamodb(operation: str, params: dict[str, Any]) -> Iterator[Call]:
    if operation in ("TransactWriteItems", "TransactGetItems"):
        for item in params.get("TransactItems", []):
            for kind, request in item.items():
                yield Call(f"dynamodb:{_DYNAMODB_ITEM_ACTIONS[kind]}", _table_arn(request["TableName"]))
    elif operation in ("BatchGetItem", "BatchWriteItem"):
        for table in params.get("RequestItems", {}):
            yield Call(f"dynamodb:{operation}", _table_arn(table))
    elif "TableName" in params:
        yield Call(f"dynamodb:{operation}", _table_arn(params["TableName"], params.get("IndexName")))
    else:
        yield Call(f"dynamodb:{operation}")


def _s3(operation: str, params: dict[str, Any]) -> Iterator[Call]:
    bucket, key = params.get("Bucket"), params.get("Key")
    target = f"arn:aws:s3:::{bucket}/{key}" if key is not None else f"arn:aws:s3:::{bucket}" if bucket else "*"
    if operation in ("CopyObject", "UploadPartCopy"):
        source = params.get("CopySource")
        if isinstance(source, dict):
            source = f"{source['Bucket']}/{source['Key']}"
        yield Call("s3:GetObject", f"arn:aws:s3:::{unquote(str(source).lstrip('/').split('?')[0])}")
        yield Call("s3:PutObject", target)
        return
    yield Call(f"s3:{_AS_ACTION.get(('s3', operation), operation)}", target)


def _resource(service: str, params: dict[str, Any]) -> str:
    if service == "sqs" and "QueueUrl" in params:
        name = urlparse(params["QueueUrl"]).path.rstrip("/").rsplit("/", 1)[-1]
        return f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}"
    if service == "states":
        for key in ("stateMachineArn", "executionArn"):
            if key in params:
                return str(params[key])
    if service == "ssm" and "Name" in params:
        name = str(params["Name"])
        return name if name.startswith("arn:") else f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter/{name.lstrip('/')}"
    return "*"


# --- the roles of the template -------------------------------------------------------------------------------


def _pattern(text: str, ignore_case: bool) -> re.Pattern[str]:
    """An IAM wildcard (`*` any run, `?` one character) as a regular expression."""
    body = re.escape(text).replace(r"\*", ".*").replace(r"\?", ".")
    return re.compile(f"^{body}$", re.IGNORECASE if ignore_case else 0)


@dataclass(frozen=True)
class Statement:
    effect: str
    actions: tuple[re.Pattern[str], ...]
    resources: tuple[re.Pattern[str], ...]

    @classmethod
    def parse(cls, statement: dict[str, Any]) -> Statement:
        if "NotAction" in statement or "NotResource" in statement or "Principal" in statement:
            raise ValueError(f"statement not understood locally: {statement}")
        return cls(
            statement.get("Effect", "Allow"),
            tuple(_pattern(a, ignore_case=True) for a in _as_list(statement.get("Action"))),
            tuple(_pattern(r, ignore_case=False) for r in _as_list(statement.get("Resource", "*"))),
        )

    def covers(self, call: Call) -> bool:
        if not any(p.match(call.action) for p in self.actions):
            return False
        # A call whose resource is not known locally ("*") is judged on its action alone.
        return call.resource == "*" or any(p.match(call.resource) for p in self.resources)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def allowed(statements: Iterable[Statement], call: Call) -> bool:
    statements = list(statements)
    if any(s.effect == "Deny" and s.covers(call) for s in statements):
        return False
    return any(s.effect == "Allow" and s.covers(call) for s in statements)


class Roles:
    """Function name (as deployed) -> the statements of its role: inline Policies, and every AWS::IAM::Policy
    attached to it. A managed policy is not readable locally and makes the check refuse."""

    def __init__(self, statements: dict[str, list[Statement]]) -> None:
        self.statements = statements

    @classmethod
    def of(cls, deployed: Any) -> Roles:
        template = deployed.template
        found: dict[str, list[Statement]] = {}
        for lid in template.of_type("AWS::Lambda::Function"):
            function_name = deployed.physical_ids.get(lid) or deployed.resolve({"Ref": lid})
            role = template.props(lid).get("Role")
            role_id = role.get("Fn::GetAtt", [None])[0] if isinstance(role, dict) else None
            found[function_name] = [Statement.parse(s) for s in cls._documents(deployed, role_id)]
        return cls(found)

    @staticmethod
    def _documents(deployed: Any, role_id: str | None) -> list[dict[str, Any]]:
        template = deployed.template
        if role_id is None or role_id not in template.resources:
            raise ValueError(f"role {role_id!r} is not in the template: cannot check its permissions")
        props = template.props(role_id)
        if props.get("ManagedPolicyArns"):
            raise ValueError(f"{role_id} has managed policies, which cannot be read locally")
        documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
        for policy in template.of_type("AWS::IAM::Policy").values():
            if {"Ref": role_id} in policy["Properties"].get("Roles", []):
                documents.append(policy["Properties"]["PolicyDocument"])
        return [s for d in documents for s in _as_list_of_dicts(deployed.resolve(d).get("Statement"))]

    def ungranted(self, calls: dict[str, set[Call]]) -> dict[str, list[Call]]:
        """Function -> the recorded calls its role does not grant (functions not in the template: all)."""
        missing = {}
        for function, made in calls.items():
            statements = self.statements.get(function, [])
            refused = sorted(c for c in made if not allowed(statements, c))
            if refused:
                missing[function] = refused
        return missing


def _as_list_of_dicts(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
