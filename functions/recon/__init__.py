"""Reconciliation of PSP settlement files.

handler (SQS of S3 notifications) → service (survey, duplicate guard, match, report, quarantine) →
parsers (Stripe, Adyen, PayPal: rows) → matching (categories, fixes, carried orders) → report (JSON, CSV);
adapters and store are the AWS side (DynamoDB reads, workflow restarts, ledger fees, review queue, Recon table).
"""
