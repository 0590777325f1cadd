"""The read models over a store of each kind, kept current by a keeper of their own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ledger.application import LedgerApplication
from ledger.settings import StoreSettings
from projections.readmodels import ReadModelKeeper, ReadModels, prepare_read_models


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
