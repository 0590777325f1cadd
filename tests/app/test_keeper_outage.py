"""A read-model keeper's process that finds the store gone says so once, as the outage, and
ends with a code its parent knows: no traceback, in the child nor in the parent, every time the
parent starts it again while PostgreSQL is down (CI saw both when the keeper was started again
as the cluster stopped)."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest

from ledger.settings import StoreSettings
from projections import children
from projections.readmodels import UNREACHABLE_EXIT, keep_in_child


def a_port_no_one_listens_on() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_keepers_process_that_cannot_reach_the_store_ends_quietly_with_its_own_code(
    tmp_path: Path, capfd: pytest.CaptureFixture[str],
) -> None:
    port = a_port_no_one_listens_on()
    settings = replace(StoreSettings.from_url(f"postgresql://postgres@127.0.0.1:{port}/gone"),
                       chain_key_file=tmp_path / "chain.key")
    child, ours = children.spawn(keep_in_child, "read-model-keeper",
                                 (settings, 100, 0.05, 0.0, None))
    try:
        child.join(60)
        assert not child.is_alive(), "the keeper's process went on without its store"
    finally:
        children.end(child, ours, 5)
    said = capfd.readouterr().err
    assert child.exitcode == UNREACHABLE_EXIT, said
    assert "refuses connections" in said  # the outage's own line, once
    assert "Traceback" not in said

