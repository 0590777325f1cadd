"""Contract fuzzing: schemathesis, every check and every phase (stateful included), against a real
``ledger serve``, from the server's own /openapi.json, as every role; zero failures allowed.

One run per role with that role's token on every call (so every 403 it meets must be
documented too), and one run where each operation is called by a role allowed to (so the
stateful phase can follow the document's links across roles: system opens an account,
deposits and buys, cs opens a case and asks for a refund, finance approves it). Without a
token, and with a wrong one, schemathesis' ``ignored_auth`` check calls every operation too.

``checks = all`` includes ``max_response_time``, set to the request deadline plus a margin: no
answer may take longer than ``api.limits.REQUEST_DEADLINE_S``. Our own check (``hooks.py``)
is loaded beside the built-in ones; ``schemathesis.toml`` says why one built-in check takes
422.

Knobs (environment):
- ``LEDGER_FUZZ_EXAMPLES``: examples per operation and phase (default 10; ``make test``);
  a few hundred for a long run.
- ``LEDGER_FUZZ_SEED``: the seed (default fixed, so a failure is reproducible; ``random`` for
  a fresh one each run, printed).
- ``LEDGER_FUZZ_STORES``: ``sqlite`` (default), ``postgres``, or ``sqlite,postgres``.
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from api.limits import REQUEST_DEADLINE_S
from tests.http.conftest import TOKENS, Server, start_server, store

HERE = Path(__file__).parent
HOOKS = HERE / "hooks.py"
BASE_CONFIG = HERE / "schemathesis.toml"
PHASES = "examples,coverage,fuzzing,stateful"
# Every call of one run answers within the deadline; the run as a whole within this.
RUN_TIMEOUT_S = 1800.0
RESPONSE_MARGIN_S = 5.0
# Who calls an operation in the every-role run: the first of these its roles allow.
PREFERRED = ("system", "finance", "cs", "auditor")
CALLERS = (*TOKENS, "every-role")


def examples() -> int:
    raw = os.environ.get("LEDGER_FUZZ_EXAMPLES", "10")
    if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
        pytest.fail(f"LEDGER_FUZZ_EXAMPLES is a whole number 1..100000, not {raw!r}")
    return int(raw)


@functools.cache
def seed() -> int:
    """One seed for the whole session, so the one printed is the one used."""
    raw = os.environ.get("LEDGER_FUZZ_SEED", "20261126")
    if raw == "random":
        return random.randrange(2**32)
    if not raw.isdigit():
        pytest.fail(f"LEDGER_FUZZ_SEED is a whole number or 'random', not {raw!r}")
    return int(raw)


def stores() -> list[str]:
    kinds = [k.strip() for k in os.environ.get("LEDGER_FUZZ_STORES", "sqlite").split(",")]
    unknown = set(kinds) - {"sqlite", "postgres"}
    if unknown or not kinds:
        pytest.fail(f"LEDGER_FUZZ_STORES is sqlite, postgres or both, not {kinds}")
    return kinds


@pytest.fixture(scope="module", params=stores())
def fuzzed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Server, Path]]:
    """A server of its own, and its document saved to a file."""
    workdir = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    with store(request.param, workdir) as url:
        server = start_server(url, workdir)
        try:
            asked = urllib.request.Request(f"{server.base_url}/openapi.json", headers={
                "Authorization": f"Bearer {TOKENS['auditor']}"})
            with urllib.request.urlopen(asked, timeout=10) as answer:
                document = answer.read()
            schema = workdir / "openapi.json"
            schema.write_bytes(document)
            yield server, schema
        finally:
            server.stop()


def config_for(caller: str, document: Mapping[str, Any]) -> str:
    """The base configuration, plus, for the every-role run, one allowed token per operation."""
    text = BASE_CONFIG.read_text()
    if caller != "every-role":
        return text
    by_role: dict[str, list[str]] = {}
    for operations in document["paths"].values():
        for operation in operations.values():
            roles = operation.get("x-roles")
            if roles:
                role = next(r for r in PREFERRED if r in roles)
                by_role.setdefault(role, []).append(operation["operationId"])
    for role, operation_ids in by_role.items():
        text += (f"\n[[operations]]\ninclude-operation-id = {json.dumps(operation_ids)}\n"
                 f"headers = {{ Authorization = {json.dumps('Bearer ' + TOKENS[role])} }}\n")
    return text


def schemathesis_command(server: Server, schema: Path, config: Path, caller: str,
                         reports: Path) -> list[str]:
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(config),
        "--no-color", "run", str(schema), "--url", server.base_url,
        "--checks", "all", "--phases", PHASES,
        "--max-examples", str(examples()), "--seed", str(seed()),
        "--max-response-time", str(REQUEST_DEADLINE_S + RESPONSE_MARGIN_S),
        "--request-timeout", str(REQUEST_DEADLINE_S + 2 * RESPONSE_MARGIN_S),
        "--generation-database", "none",
        "--report", "junit", "--report-dir", str(reports),
    ]
    if caller != "every-role":
        command += ["--header", f"Authorization: Bearer {TOKENS[caller]}"]
    return command


@pytest.mark.parametrize("caller", CALLERS)
def test_schemathesis_finds_no_failure_in_any_check_or_phase(
    fuzzed: tuple[Server, Path], caller: str, tmp_path: Path,
    record_property: Any, capsys: pytest.CaptureFixture[str],
) -> None:
    server, schema = fuzzed
    config = tmp_path / "schemathesis.toml"
    config.write_text(config_for(caller, json.loads(schema.read_text())))
    command = schemathesis_command(server, schema, config, caller, tmp_path / "reports")
    try:
        finished = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
            env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"schemathesis did not finish in {RUN_TIMEOUT_S:g} s")
    output = finished.stdout + finished.stderr
    generated = re.search(r"(\d+) generated", output)
    assert generated is not None, output[-5000:]
    record_property("generated_cases", int(generated.group(1)))
    with capsys.disabled():
        print(f"\n[{caller}] schemathesis: {generated.group(0)} cases, seed {seed()}, "
              f"{examples()} examples per operation")
    assert finished.returncode == 0, output[-20000:]
    assert server.process.poll() is None, server.log()[-5000:]
