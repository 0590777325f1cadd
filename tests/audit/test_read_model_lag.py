"""How far behind the log the read models are, in seconds, on both stores: the age of the oldest
event the furthest-behind read model has not applied (``ReadModels.status``, the
``ledger_read_model_lag_seconds`` metric, ``/ready``). Under a steady stream of writes the read
models are rarely at the log's head at any one moment, but never far behind it: a lag counted
from the last moment they were at the head would grow for as long as the writes go on, and page
an operator (``deploy/prometheus/alerts.yml``) while nothing is wrong."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from eventsourcing.persistence import Notification

from api.gauges import lag_seconds
from api.observability import Metrics
from ledger.application import LedgerApplication
from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections.batches import BatchApplier
from projections.readmodels import (
    PROJECTIONS,
    ReadModels,
    close_views,
    open_views,
    prepare_read_models,
)
from tests.audit.conftest import Intruder


def log(app: LedgerApplication) -> Sequence[Notification]:
    return app.recorder.select_notifications(0, 1000, inclusive_of_start=False)


def apply(settings: StoreSettings, app: LedgerApplication, events: Sequence[Notification]) -> None:
    """The read models brought up to the last of ``events``, as a keeper would, then left."""
    views = open_views(settings, pool_size=2)
    try:
        BatchApplier(app.mapper, [(p, views[p.name]) for p in PROJECTIONS],
                     key=app.recorder.chain_key).apply(events)  # type: ignore[attr-defined]
    finally:
        close_views(views)


@contextmanager
def behind_by_two(settings: StoreSettings, app: LedgerApplication,
                  system: Actor) -> Iterator[tuple[ReadModels, Notification]]:
    """Read models that applied an account and a deposit, and not the two deposits after
    them (no keeper runs); with the oldest event they have not applied."""
    prepare_read_models(settings)
    app.open_account("ann", "USD", actor=system)
    app.deposit("ann", 100, "pay-1", actor=system)
    applied = log(app)
    apply(settings, app, applied)
    models = ReadModels(settings, app, pool_size=1)
    try:
        assert models.status()["lag"] == 0 and models.status()["lag_seconds"] == 0.0
        app.deposit("ann", 50, "pay-2", actor=system)
        app.deposit("ann", 25, "pay-3", actor=system)
        oldest = next(e for e in log(app) if e.id > applied[-1].id)
        yield models, oldest
    finally:
        models.close()


def recorded_at(app: LedgerApplication, event: Notification) -> Any:
    return app.mapper.to_domain_event(event).timestamp  # type: ignore[attr-defined]


def test_the_lag_in_seconds_is_the_age_of_the_oldest_event_not_yet_applied(
    settings: StoreSettings, app: LedgerApplication, system: Actor
) -> None:
    with behind_by_two(settings, app, system) as (models, oldest):
        # When 90 s have passed since the oldest event they have not applied was recorded
        status = models.status(now=recorded_at(app, oldest) + timedelta(seconds=90))
        # Then they are two events and 90 seconds behind, however long ago they were current
        assert (status["lag"], status["lag_seconds"], status["damage"]) == (2, 90.0, None)
        # And once they have every event, none
        apply(settings, app, [e for e in log(app) if e.id >= oldest.id])
        assert (models.status()["lag"], models.status()["lag_seconds"]) == (0, 0.0)


def test_an_event_whose_seal_does_not_hold_gives_no_time_to_trust(
    settings: StoreSettings, app: LedgerApplication, system: Actor, intruder: Intruder
) -> None:
    with behind_by_two(settings, app, system) as (models, oldest):
        # When the oldest event they have not applied is changed behind the service's back
        intruder.flip_amount_digit(oldest.id)
        status = models.status(now=recorded_at(app, oldest) + timedelta(seconds=90))
        # Then its stored time is not believed: no age, and the damage is named
        assert status["lag"] == 2 and status["lag_seconds"] is None
        assert status["damage"] == {"position": oldest.id, "what": "content"}


def test_the_metric_counts_from_when_this_process_saw_them_behind_a_time_it_cannot_trust() -> None:
    metrics = Metrics()
    # current, or behind an event whose age is known: that age
    assert lag_seconds(metrics, 0, 0.0, now=100.0) == 0.0
    assert lag_seconds(metrics, 40, 0.05, now=101.0) == 0.05
    # behind an event whose time cannot be trusted: from the first time this process saw it
    assert lag_seconds(metrics, 40, None, now=102.0) == 0.0
    assert lag_seconds(metrics, 40, None, now=109.5) == 7.5
    # and counted afresh once an age is known again
    assert lag_seconds(metrics, 40, 0.2, now=110.0) == 0.2
    assert lag_seconds(metrics, 40, None, now=120.0) == 0.0
