"""`python -m ops recon internal` on moto: the summary on-call reads, the exit code, the fix through the steps."""

import boto3

from functions.recon import internal
from functions.shared import clock
from functions.shared.config import settings
from functions.shared.tables import WalletTable
from tests.integration.support import paid
from tests.ops.support import cli


def test_recon_internal_names_the_finding_and_fails_without_fix_then_fixes_it(system):
    paid("chk_1", wallet=["chk_1_0"])  # the wallet step died before seller_a's credit
    order_id, seller = "chk_1_0", "seller_a"
    clock.advance(internal.SETTLE.total_seconds() + 1)  # a run after the charge settled

    result = cli("recon", "internal", "--no-fix")
    assert result.exit_code == 1, result.output
    assert "UNEXPLAINED order_success_without_wallet_credit" in result.output and order_id in result.output
    assert "1 findings, 0 fixed, 1 unexplained" in result.output
    assert WalletTable.from_settings().get_movement("payin", order_id) is None

    result = cli("recon", "internal")
    assert result.exit_code == 0, result.output
    assert "fixed order_success_without_wallet_credit" in result.output
    assert WalletTable.from_settings().get_movement("payin", order_id) is not None
    assert WalletTable.from_settings().balances(seller)["USD"]["pending_minor"] == 1234

    result = cli("recon", "internal")
    assert result.exit_code == 0 and "0 findings, 0 fixed, 0 unexplained" in result.output
    keys = [o["Key"] for o in boto3.client("s3", region_name="us-east-1").list_objects_v2(
        Bucket=settings().settlement_bucket, Prefix="reports/internal/")["Contents"]]
    assert {k.rsplit(".", 1)[1] for k in keys} == {"json", "csv", "html"}
