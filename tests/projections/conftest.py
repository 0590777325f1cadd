"""The read models over a store of each kind, kept current by a keeper of their own."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from ledger.application import LedgerApplication
from ledger.settings import StoreSettings
from projections.readmodels import ReadModelKeeper, ReadModels, prepare_read_models

WAIT_S = 10.0


def wait_until(condition: Callable[[], bool], timeout_s: float = WAIT_S,
               what: str = "not in time") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture
def read_models(settings: StoreSettings, app: LedgerApplication) -> Iterator[ReadModels]:
    prepare_read_models(settings)
    keeper = ReadModelKeeper(settings)
    keeper.start()
    models = ReadModels(settings, app)
    try:
        yield models
    finally:
        keeper.stop()
        models.close()
