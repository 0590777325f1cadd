"""The chain key: made on an empty store's first start, outside the database, and required to
match the store's fingerprint ever after, on both stores."""

from __future__ import annotations

import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from projections.seal import read_key
from projections.store import open_application
from tests.conftest import store_settings
from tests.http.conftest import free_port, ledger_command, start_server, store, tokens_env


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_first_start_makes_the_key_and_another_key_is_refused_at_start(
    kind: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "keys" / "chain.key"
    with store(kind, tmp_path) as url:
        # Given a first start on an empty store: the key is made, readable by its owner only
        server = start_server(url, tmp_path, env={"LEDGER_CHAIN_KEY_FILE": str(key_file)})
        server.stop()
        assert key_file.stat().st_mode & 0o777 == 0o600
        key = read_key(key_file)
        # and the store keeps its fingerprint, never the key
        settings = replace(store_settings(url, pool_size=1), chain_key_file=key_file)
        app = open_application(settings, may_create_key=False)
        try:
            assert app.recorder.chain_key == key  # type: ignore[attr-defined]
        finally:
            app.close()

        # When a process starts with another key, or with none where the key should be
        other = tmp_path / "other.key"
        other.write_text("ab" * 32 + "\n")
        other.chmod(0o600)
        for given, says in ((other, "is not the key this store is sealed with"),
                            (tmp_path / "missing.key", "there is no key")):
            started = time.monotonic()
            refused = subprocess.run(
                [*ledger_command(), "serve", "--port", str(free_port())],
                capture_output=True, text=True,
                timeout=60, cwd=tmp_path, check=False,
                env={"PATH": "/usr/bin:/bin", "LEDGER_DATABASE_URL": url,
                     "LEDGER_TOKENS": tokens_env(), "LEDGER_CHAIN_KEY_FILE": str(given)},
            )
            # Then it refuses to start, saying so in one line, and naming the fingerprint
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert says in refused.stderr
            assert key.fingerprint in refused.stderr
            assert "Traceback" not in refused.stderr
            assert time.monotonic() - started < 60
        assert not (tmp_path / "missing.key").exists()  # a sealed store never gets a new key
