"""The outbox's streams (``ob_streams``: who a stream's messages go to, in which currency, for
which order) are sealed by the keeper, on both stores. A keeper that reads a stream's row back
from the store (it started again, or forgot its rows) makes no message from a row changed by
SQL: the read models stop before the event that needs it, and nothing is sealed for the wrong
customer. A store made before the streams were sealed gets its outbox made again from the log."""

from __future__ import annotations

import pytest

from ledger.application import LedgerApplication
from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections import outbox, readmodels
from projections.readmodels import PROJECTIONS, ReadModelKeeper, ReadModels, prepare_read_models
from projections.views import BrokenReadModel
from tests.projections.conftest import WAIT_S, applier, log, read_model_sql, wait_until

DERIVED = ("ob_messages", "ob_seals", "ob_streams")


def outbox_rows(settings: StoreSettings, app: LedgerApplication) -> dict[str, list[dict]]:
    models = ReadModels(settings, app, pool_size=1)
    try:
        view = models.views["outbox"]
        return {table: view.query(f"SELECT * FROM {table} ORDER BY 1") for table in DERIVED}
    finally:
        models.close()


def projected(settings: StoreSettings, app: LedgerApplication) -> None:
    """Every event applied by a keeper that remembers nothing (as one started again)."""
    with applier(settings, app) as batches:
        batches.apply(log(app))


@pytest.fixture
def two_customers(settings: StoreSettings, app: LedgerApplication, system: Actor) -> None:
    """Ann and Mallory have an account each, and the outbox has told each of a deposit."""
    prepare_read_models(settings)
    for name in ("ann", "mallory"):
        app.open_account(name, "USD", actor=system)
        app.deposit(name, 100, f"pay-{name}-1", actor=system)
    projected(settings, app)


def stream_id(settings: StoreSettings, app: LedgerApplication, username: str) -> str:
    [row] = [r for r in outbox_rows(settings, app)["ob_streams"] if r["username"] == username]
    return str(row["id"])


@pytest.mark.parametrize("change", [
    "UPDATE ob_streams SET username = 'mallory' WHERE id = '{ann}'",
    "UPDATE ob_streams SET seal = (SELECT seal FROM ob_streams WHERE id = '{mallory}'),"
    " username = 'mallory' WHERE id = '{ann}'",
    "UPDATE ob_streams SET seal = NULL WHERE id = '{ann}'",
], ids=["the customer changed", "another stream's seal copied", "the seal removed"])
def test_a_stream_changed_by_sql_stops_the_outbox_before_its_next_message(
    settings: StoreSettings, app: LedgerApplication, system: Actor, two_customers: None,
    change: str,
) -> None:
    ids = {name: stream_id(settings, app, name) for name in ("ann", "mallory")}
    before = outbox_rows(settings, app)
    read_model_sql(settings, "outbox", [change.format(**ids)])
    app.deposit("ann", 250, "pay-ann-2", actor=system)

    with applier(settings, app) as batches:
        with pytest.raises(BrokenReadModel, match=f"stream {ids['ann']} .*ob_streams"):
            batches.apply(log(app))
        positions = {rows.view.max_tracking_id("ledger") for _, rows in batches.models}

    after = outbox_rows(settings, app)
    assert after["ob_messages"] == before["ob_messages"]  # no message made, none sealed
    assert after["ob_seals"] == before["ob_seals"]
    assert positions == {log(app)[-2].id}  # every read model stopped before the deposit


def test_a_stream_put_back_as_it_was_lets_the_outbox_go_on(
    settings: StoreSettings, app: LedgerApplication, system: Actor, two_customers: None
) -> None:
    ann = stream_id(settings, app, "ann")
    read_model_sql(settings, "outbox", [f"UPDATE ob_streams SET username = 'x' WHERE id = '{ann}'"])
    app.deposit("ann", 250, "pay-ann-2", actor=system)
    with applier(settings, app) as batches, pytest.raises(BrokenReadModel):
        batches.apply(log(app))

    put_back = f"UPDATE ob_streams SET username = 'ann' WHERE id = '{ann}'"
    read_model_sql(settings, "outbox", [put_back])
    projected(settings, app)

    told = [m for m in outbox_rows(settings, app)["ob_messages"] if m["amount"] == 250]
    assert [(m["type"], m["username"]) for m in told] == [("deposit.recorded", "ann")]


def test_a_store_made_before_streams_were_sealed_gets_its_outbox_made_again_from_the_log(
    settings: StoreSettings, app: LedgerApplication, system: Actor, two_customers: None
) -> None:
    before = outbox_rows(settings, app)
    assert all(row["seal"] for row in before["ob_streams"])
    read_model_sql(settings, "outbox", ["ALTER TABLE ob_streams DROP COLUMN seal",
                                        "UPDATE ob_streams SET username = 'x'"])

    prepare_read_models(settings)  # as a process starting on the old store does
    emptied = outbox_rows(settings, app)
    assert emptied == {table: [] for table in DERIVED}  # nothing of the old rows is trusted
    with applier(settings, app) as batches:
        others = {p.name for p in PROJECTIONS} - {"outbox"}
        assert {name: rows.position for (p, rows) in batches.models
                if (name := p.name) in others | {"outbox"}} == {
            **dict.fromkeys(others, log(app)[-1].id), "outbox": 0}
        batches.apply(log(app))

    assert outbox_rows(settings, app) == before
    models = ReadModels(settings, app, pool_size=1)
    try:
        assert not outbox.seal_streams(models.views["outbox"])  # done once, not at each start
    finally:
        models.close()


def test_a_running_keeper_says_which_stream_it_stops_at_and_goes_on_once_it_is_put_back(
    settings: StoreSettings, app: LedgerApplication, system: Actor, two_customers: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ann = stream_id(settings, app, "ann")
    read_model_sql(settings, "outbox", [f"UPDATE ob_streams SET username = 'x' WHERE id = '{ann}'"])
    keeper = ReadModelKeeper(settings, lock_retry_s=0.1)  # it starts remembering nothing

    def stops() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == readmodels.log.name and r.levelname == "ERROR"]

    try:
        with caplog.at_level("WARNING", readmodels.log.name):
            keeper.start()
            app.deposit("ann", 250, "pay-ann-2", actor=system)
            wait_until(lambda: len(stops()) >= 2)  # at each try, in one line, no traceback
            assert f"stream {ann}" in stops()[0]
            assert all(r.exc_info is None for r in caplog.records if r.levelname == "ERROR")
            models = ReadModels(settings, app, pool_size=1)
            try:
                assert set(models.tracked().values()) == {log(app)[-2].id}
                read_model_sql(settings, "outbox",
                               [f"UPDATE ob_streams SET username = 'ann' WHERE id = '{ann}'"])
                assert models.wait_caught_up(stall_timeout_s=WAIT_S) == log(app)[-1].id
            finally:
                models.close()
    finally:
        keeper.stop()
