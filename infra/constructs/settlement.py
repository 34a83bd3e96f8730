"""The settlement bucket: PSP files land under incoming/, and each new object notifies ReconQueue.

The notification is a plain property of AWS::S3::Bucket, not `bucket.add_event_notification` (that creates a
Lambda-backed custom resource the local stack cannot run). S3 checks the queue's policy when the bucket is
created, so the bucket depends on the policy; the policy therefore names the bucket by its (deterministic)
name instead of referencing the bucket resource, which would be a cycle.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import names


class Settlement(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, recon_queue: sqs.Queue, removal_policy: RemovalPolicy
    ) -> None:
        super().__init__(scope, construct_id)
        # One settlement bucket per account and region; the name is needed before the bucket exists (above).
        bucket_name = f"marketpay-settlement-{Aws.ACCOUNT_ID}-{Aws.REGION}"
        bucket_arn = f"arn:{Aws.PARTITION}:s3:::{bucket_name}"

        self.access_logs = s3.Bucket(
            self,
            names.ACCESS_LOG_BUCKET,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(400))],
            removal_policy=removal_policy,
        )
        self.bucket = s3.Bucket(
            self,
            names.SETTLEMENT_BUCKET,
            bucket_name=bucket_name,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="settlement/",
            # Parts of an interrupted multipart upload (a large report) are billed until aborted.
            lifecycle_rules=[s3.LifecycleRule(abort_incomplete_multipart_upload_after=Duration.days(7))],
            removal_policy=removal_policy,
        )

        recon_queue.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowSettlementBucketNotifications",
                principals=[iam.ServicePrincipal("s3.amazonaws.com")],
                actions=["sqs:SendMessage"],
                resources=[recon_queue.queue_arn],
                conditions={
                    "ArnEquals": {"aws:SourceArn": bucket_arn},
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                },
            )
        )
        cfn_bucket = self.bucket.node.default_child
        assert isinstance(cfn_bucket, s3.CfnBucket)
        cfn_bucket.add_property_override(
            "NotificationConfiguration.QueueConfigurations",
            [
                {
                    "Event": "s3:ObjectCreated:*",
                    "Queue": recon_queue.queue_arn,
                    "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": names.INCOMING_PREFIX}]}},
                }
            ],
        )
        # The queue's AWS::SQS::QueuePolicy, created by enforce_ssl and the statement above.
        queue_policy = recon_queue.node.find_child("Policy").node.default_child
        assert isinstance(queue_policy, sqs.CfnQueuePolicy)
        cfn_bucket.add_resource_dependency(queue_policy)
