"""cdk-nag 3 acknowledgements: each names the rule (and finding, for granular rules) and says why."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct, IConstruct

PACK = "AwsSolutions"


def acknowledge(scope: IConstruct, rule: str, reason: str, *findings: str) -> None:
    """Acknowledge `rule` (e.g. "AwsSolutions-L1") on scope and its children; granular rules (IAM5) need each
    finding spelled out, e.g. "Resource::*"."""
    ids = [f"{PACK}::{rule}[{finding}]" for finding in findings] or [f"{PACK}::{rule}"]
    cdk.Validations.of(scope).acknowledge(*(cdk.Acknowledgment(id=i, reason=reason) for i in ids))


def arn_placeholder(resource: Construct) -> str:
    """How cdk-nag prints `Fn::GetAtt [<logical id>, Arn]` of a resource in a finding: `<LogicalId.Arn>`."""
    stack = cdk.Stack.of(resource)
    return f"<{stack.resolve(stack.get_logical_id(resource.node.default_child))}.Arn>"
