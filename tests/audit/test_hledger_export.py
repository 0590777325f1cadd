"""The hledger export (``projections.hledger``): ``hledger check`` (Debian's hledger) accepts it
on a mixed USD/EUR/JPY history with odd user names, with every day's balance assertions, and
hledger's own balances equal the ledger's."""

from __future__ import annotations

import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from ledger.money import MINOR_UNIT_DIGITS
from projections.hledger import account_name, export
from tests.audit.conftest import Ledger
from tests.audit.test_beancount_export import CUSTOMERS, mixed_history
from tests.conftest import IN_CI
from tests.written import written

HLEDGER = shutil.which("hledger")


@pytest.mark.skipif(HLEDGER is None and not IN_CI,
                    reason="hledger is not installed (make test installs it)")
def test_hledger_checks_the_export_and_its_balances_are_the_ledgers(
    ledger: Ledger, tmp_path: Path
) -> None:
    assert HLEDGER is not None, "hledger is required under CI=true and is not installed"
    mixed_history(ledger)
    ledger.settle()
    path = tmp_path / "ledger.journal"
    path.write_text(written(export, ledger.read_models.journal_entries()))

    checked = subprocess.run([HLEDGER, "-f", str(path), "check"], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    text = path.read_text()
    assert "| deposit received" in text and "position:" in text
    assert "payment:PAY-1" in text and "payout:BANK-" in text and "refund_request:" in text
    # the day's balance assertions are checked: one wrong closing balance fails the check
    at = text.index(" = -") + 4  # customers are owed: their balances are negative
    wrong = tmp_path / "wrong.journal"
    wrong.write_text(text[:at] + "1" + text[at:])
    failed = subprocess.run([HLEDGER, "-f", str(wrong), "check"], capture_output=True,
                            text=True, timeout=60)
    assert failed.returncode != 0 and "balance assertion" in failed.stderr.lower()
    for username, currency in CUSTOMERS.items():
        name = account_name(f"customer:{username}")
        answer = subprocess.run(
            [HLEDGER, "-f", str(path), "balance", f"^{name}$", "-N", "--flat", "-O", "csv"],
            capture_output=True, text=True, timeout=60, check=True).stdout
        amount = answer.strip().splitlines()[-1].split(",")[-1].strip('"').split()[0]
        account = ledger.read_models.account(username)
        assert account is not None
        scale = Decimal(10) ** MINOR_UNIT_DIGITS.get(currency, 2)
        assert -Decimal(amount) * scale == account["posted"], username
