"""The local stack: the deployed topology (cdk.out) on one machine, no AWS account, no Docker."""
