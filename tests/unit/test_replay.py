"""An aggregate rebuilt from its stored events is the aggregate that recorded them.

This matters because ``@event`` bodies run again on every replay: whatever a body reads (its
version, its clock) must read the same then as it did live.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate

from ledger.account import Account
from ledger.identity import Actor
from ledger.refund_request import RefundRequest


@pytest.fixture
def store() -> Iterator[Application[UUID]]:
    """An in-memory event store that still encodes every event as it would be stored."""
    app: Application[UUID] = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield app
    app.close()


def busy_account(system: Actor, cs: Actor, finance: Actor) -> Account:
    account = Account.open("alice", "EUR", actor=system)
    account.receive_deposit(5_000, "PAY-1", actor=system)
    account.pay_purchase("ORD-1", 1_200, actor=system)
    account.receive_deposit(700, "PAY-2", actor=system)
    account.fail_purchase("ORD-1", 200, "one item out of stock", actor=cs)
    account.hold_for_refund_request("R1", "ORD-1", 300, "a", actor=cs)
    account.hold_for_refund_request("R2", "PAY-2", 400, "b", actor=cs)
    account.release_refund_hold("R1", "rejected", "no", actor=finance)
    account.pay_out_refund("R2", "WIRE-1", actor=finance)
    account.receive_deposit(50, "PAY-3", actor=system)
    account.credit_return_refund("case-1", "ORD-1", 100, actor=cs)
    account.charge_freight("case-1", "ORD-1", 30, actor=cs)
    return account


def state(aggregate: Aggregate) -> dict[str, Any]:
    return {k: v for k, v in vars(aggregate).items() if k != "_pending_events"}


def test_an_account_folded_from_its_events_has_the_live_state(
    system: Actor, cs: Actor, finance: Actor,
) -> None:
    live = busy_account(system, cs, finance)
    events = live.collect_events()

    rebuilt = None
    for domain_event in events:
        rebuilt = domain_event.mutate(rebuilt)

    assert isinstance(rebuilt, Account)
    assert state(rebuilt) == state(live)
    assert rebuilt.snapshot() == live.snapshot()


def test_an_account_loaded_from_a_store_has_the_live_state(
    store: Application[UUID], system: Actor, cs: Actor, finance: Actor,
) -> None:
    live = busy_account(system, cs, finance)
    store.save(live)

    loaded = store.repository.get(live.id)

    assert isinstance(loaded, Account)
    assert state(loaded) == state(live)
    assert (loaded.posted, loaded.held, loaded.available) == (4_420, 0, 4_420)


def test_a_deposit_remembers_its_own_event_s_version_both_live_and_after_replay(
    store: Application[UUID], system: Actor, cs: Actor, finance: Actor,
) -> None:
    live = busy_account(system, cs, finance)
    store.save(live)
    deposit_versions = {
        store.mapper.to_domain_event(stored).reference: stored.originator_version
        for stored in store.recorder.select_events(live.id)
        if stored.topic == "ledger:Account.DepositReceived"
    }

    loaded = store.repository.get(live.id)

    assert deposit_versions == {"PAY-1": 2, "PAY-2": 4, "PAY-3": 10}
    for reference, version in deposit_versions.items():
        assert live.deposit_version(reference) == version
        assert loaded.deposit_version(reference) == version


def test_a_refund_request_loaded_from_a_store_has_the_live_state(
    store: Application[UUID], cs: Actor, finance: Actor,
) -> None:
    live = RefundRequest.request(
        id=uuid4(), username="alice", currency="EUR", order_no="ORD-1", amount=300,
        reason="a", actor=cs,
    )
    live.approve("ok", actor=finance)
    live.pay("WIRE-1", actor=Actor.of_person("bea", "finance", "req-pay"))
    store.save(live)

    loaded = store.repository.get(live.id)

    assert state(loaded) == state(live)


def test_every_stored_event_is_named_by_a_stable_topic_not_a_module_path(
    store: Application[UUID], system: Actor, cs: Actor, finance: Actor,
) -> None:
    account = busy_account(system, cs, finance)
    request = RefundRequest.request(
        id=uuid4(), username="alice", currency="EUR", order_no="ORD-1", amount=1,
        reason="a", actor=cs,
    )
    request.approve("ok", actor=finance)
    store.save(account, request)

    topics = {
        stored.topic
        for aggregate in (account, request)
        for stored in store.recorder.select_events(aggregate.id)
    }

    assert all(topic.startswith("ledger:") for topic in topics), topics
    assert len(topics) == 9 + 2
