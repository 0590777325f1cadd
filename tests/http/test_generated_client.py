"""A client generated from the served document (openapi-python-client) works: it opens an
account, deposits and reads the balance of a running ``ledger serve``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

from tests.http.conftest import TOKENS, Server

USE_CLIENT = """
import sys, uuid
sys.path.insert(0, sys.argv[1])
from ledger_client import AuthenticatedClient
from ledger_client.api.accounts_and_money import deposit, get_balance, open_account
from ledger_client.models import Deposit, OpenAccount

base_url, token, username = sys.argv[2], sys.argv[3], sys.argv[4]
client = AuthenticatedClient(base_url=base_url, token=token)
opened = open_account.sync_detailed(
    client=client, body=OpenAccount.from_dict({"username": username, "currency": "EUR"}))
assert opened.status_code == 201, opened.content
written = deposit.sync_detailed(username, client=client,
                                body=Deposit.from_dict({"amount": 4321, "reference": "GEN-1"}),
                                idempotency_key=str(uuid.uuid4()))
assert written.status_code == 201, written.content
assert written.parsed.account.posted == 4321, written.parsed
balance = get_balance.sync(username, client=client)
currency = getattr(balance.currency, "value", balance.currency)
print(type(balance).__name__, balance.username, currency, balance.posted, balance.available)
"""


def test_a_generated_client_deposits_and_reads_a_balance(server: Server, tmp_path: Path
                                                         ) -> None:
    request = urllib.request.Request(f"{server.base_url}/openapi.json",
                                     headers={"Authorization": f"Bearer {TOKENS['auditor']}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        (tmp_path / "openapi.json").write_text(json.dumps(json.load(answer)))
    generator = Path(sys.executable).with_name("openapi-python-client")
    assert generator.exists(), "openapi-python-client is a dev dependency: run make install"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                 f"{os.environ.get('PATH', '')}"}
    generated = subprocess.run(
        [str(generator), "generate", "--path", str(tmp_path / "openapi.json"),
         "--output-path", str(tmp_path / "client" / "ledger_client"), "--meta", "none"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    username = f"gen-{uuid.uuid4().hex[:10]}"
    used = subprocess.run(
        [sys.executable, "-c", USE_CLIENT, str(tmp_path / "client"), server.base_url,
         TOKENS["system"], username],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert used.returncode == 0, used.stdout + used.stderr
    assert used.stdout.split() == ["Balance", username, "EUR", "4321", "4321"]
    shutil.rmtree(tmp_path / "client")
