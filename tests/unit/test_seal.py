"""The seals' spelling never changes: every link a store holds was made with it, and an
auditor's own tool recomputes it (``projections.seal``: HMAC-SHA-256 of the length-prefixed
parts). Known answers, computed once with the first implementation (twelve ``update`` calls):
a faster way of computing a seal must give these very texts."""

from __future__ import annotations

from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent

from projections.seal import GENESIS, ChainKey, Sealed, WrittenHere

KEY = ChainKey(bytes(range(32)))


@pytest.mark.parametrize(
    ("previous", "position", "stream", "version", "topic", "state", "link"),
    [
        (GENESIS, 1, UUID(int=1), 1, "ledger.account:Account.Opened", b'{"username":"ann"}',
         "2999a9409cd368b84e0342083b8ec1b23134a4fdf4c954ee08364a67296a9c87"),
        # an id as SQLite stores it (hex), a topic beyond ASCII, the state as a memoryview
        ("ab" * 32, 1234567, "00000000000000000000000000000002", 17, "t\u00e9",
         memoryview(b"\x00\xff"),
         "2587894909764a84780a2d2b996b9deb7007427b843e7739e1c67d64f67e5647"),
        # a state changed behind the service's back into another type: sealed as its text
        ("ab" * 32, 2, UUID(int=3), 2, "x", "not bytes",
         "06f49ba31b8e394f72c5a5ca8c15b4ef9d5c6ec3b542e32340a61012289060f0"),
    ],
)
def test_an_events_link_is_the_one_every_store_was_sealed_with(
    previous: str, position: int, stream: UUID | str, version: int, topic: str, state: object,
    link: str,
) -> None:
    assert KEY.link(previous, position, stream, version, topic, state) == link
    assert KEY.holds(link, previous, position, stream, version, topic, state)
    assert not KEY.holds(link, previous, position + 1, stream, version, topic, state)


def test_a_messages_seal_and_a_key_records_seal_are_the_ones_stored() -> None:
    assert KEY.message_seal('[1,"x"]') == (
        "c8acaf024a851227978aaaa962bb3531347894736a2ae94b306f22827382b9ce")
    assert KEY.key_record_seal("[2]") == (
        "5e4035215848563dad8f67f9480ecfd690063be1bde0fca484d8e3475f0440ff")
    # derived keys of their own: the same text never seals alike as a message and a record
    assert KEY.message_seal("[2]") != KEY.key_record_seal("[2]")


def _stored(n: int) -> StoredEvent:
    return StoredEvent(originator_id=UUID(int=n), originator_version=1, topic="t",
                       state=b"%d" % n)


def test_what_was_written_here_is_answered_once_and_the_oldest_forgotten_past_the_bound() -> None:
    written = WrittenHere(bound=2)
    written.remember([(1, GENESIS, "a" * 64), (2, "a" * 64, "b" * 64)], [_stored(1), _stored(2)])
    written.remember([(3, "b" * 64, "c" * 64)], [_stored(3)])

    assert len(written) == 2
    assert written.take(1) is None  # the oldest, forgotten: checked in full
    assert written.take(3) == Sealed("b" * 64, "c" * 64, UUID(int=3), 1, "t", b"3")
    assert written.take(3) is None  # answered once
    assert written.take(2) is not None and len(written) == 0


def test_a_look_at_what_was_written_here_leaves_it_for_the_notary_to_take() -> None:
    written = WrittenHere(bound=2)
    written.remember([(1, GENESIS, "a" * 64)], [_stored(1)])

    assert written.look(1) == Sealed(GENESIS, "a" * 64, UUID(int=1), 1, "t", b"1")
    assert written.look(1) is not None and len(written) == 1  # the staff directory's look
    assert written.take(1) is not None  # the notary's, after it
    assert written.look(1) is None and written.look(2) is None
