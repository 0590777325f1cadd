"""The chain's verifier (``projections.chain.check_chain``), in memory: every way of tampering
with a sealed log is detected, at or before the first position tampered with.

Logs are built of ``Notification``s as the stores return them (ids ascending, with gaps as on
PostgreSQL), sealed with a ``ChainKey`` as the writer seals them. A tampering changes the
events, the stored links, or both, and says where it first becomes evident: the first position
it touched when the database itself holds the evidence; when an insider holding the key rewrote
events and chain together, only digests exported before hold it, so there it is the first
exported digest at or after the first position touched. An event appended after the chain's
head is no legitimate write any more: the writer seals every event it records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from itertools import accumulate
from uuid import UUID

from eventsourcing.persistence import Notification
from hypothesis import event, given, settings
from hypothesis import strategies as st

from projections.chain import Digest, Link, check_chain
from projections.seal import GENESIS, ChainKey

TOPICS = (
    "ledger:Account.Opened",
    "ledger:Account.DepositReceived",
    "ledger:Account.PurchasePaid",
    "ledger:RefundRequest.Requested",
)
STREAMS = tuple(UUID(int=n) for n in (1, 2, 3))

KEY = ChainKey(bytes(range(32)))
Log = list[Notification]
Links = list[Link]
# A tampering: the log and its links in; out the tampered pair, the digests an auditor exported
# before, and the first position where the tampering is evident.
Tampering = Callable[[st.DataObject, Log, Links], tuple[Log, Links, list[Digest], int]]


@st.composite
def linked_logs(draw: st.DrawFn) -> tuple[Log, Links]:
    size = draw(st.integers(2, 25))
    gaps = draw(st.lists(st.integers(1, 3), min_size=size, max_size=size))
    versions: dict[UUID, int] = {}
    log = []
    for n, position in enumerate(accumulate(gaps)):
        stream = draw(st.sampled_from(STREAMS))
        versions[stream] = versions.get(stream, 0) + 1
        payload = draw(st.binary(min_size=0, max_size=24))
        log.append(
            Notification(
                id=position,
                originator_id=stream,
                originator_version=versions[stream],
                topic=draw(st.sampled_from(TOPICS)),
                state=b'{"serial":%d,"x":"' % n + payload.hex().encode() + b'"}',
            )
        )
    return log, chain_of(log)


def chain_of(log: Log, key: ChainKey = KEY) -> Links:
    links, previous = [], GENESIS
    for n in log:
        sealed = key.link(previous, n.id, n.originator_id, n.originator_version, n.topic, n.state)
        links.append(Link(n.id, previous, sealed))
        previous = sealed
    return links


def digest(link: Link) -> Digest:
    return Digest(link.position, link.hash)


def _index(data: st.DataObject, log: Log) -> int:
    return data.draw(st.integers(0, len(log) - 1))


def flip_a_state_byte(
    data: st.DataObject, log: Log, links: Links
) -> tuple[Log, Links, list[Digest], int]:
    i = _index(data, log)
    state = bytearray(log[i].state)
    at = data.draw(st.integers(0, len(state) - 1))
    state[at] ^= data.draw(st.integers(1, 255))
    return _replaced(log, i, state=bytes(state)), links, [], log[i].id


def change_the_topic(
    data: st.DataObject, log: Log, links: Links
) -> tuple[Log, Links, list[Digest], int]:
    i = _index(data, log)
    topic = data.draw(st.sampled_from([t for t in (*TOPICS, "ledger:Forged") if t != log[i].topic]))
    return _replaced(log, i, topic=topic), links, [], log[i].id


def change_the_version(
    data: st.DataObject, log: Log, links: Links
) -> tuple[Log, Links, list[Digest], int]:
    i = _index(data, log)
    version = log[i].originator_version + data.draw(st.sampled_from([-1, 1, 2, 1000]))
    return _replaced(log, i, originator_version=version), links, [], log[i].id


def change_the_stream(
    data: st.DataObject, log: Log, links: Links
) -> tuple[Log, Links, list[Digest], int]:
    i = _index(data, log)
    stream = data.draw(
        st.sampled_from([s for s in (*STREAMS, UUID(int=9)) if s != log[i].originator_id])
    )
    return _replaced(log, i, originator_id=stream), links, [], log[i].id


def change_the_id(
    data: st.DataObject, log: Log, links: Links
) -> tuple[Log, Links, list[Digest], int]:
    i = _index(data, log)
    new_id = data.draw(st.integers(0, log[-1].id + 5).filter(lambda n: n != log[i].id))
    return _replaced(log, i, id=new_id), links, [], log[i].id


def delete_an_event(
    data: st.DataObject, log: Log, links: Links
) -> tuple[Log, Links, list[Digest], int]:
    i = _index(data, log)
    return log[:i] + log[i + 1 :], links, [], log[i].id


def insert_an_event(
    data: st.DataObject, log: Log, links: Links
) -> tuple[Log, Links, list[Digest], int]:
    """Before one of the linked events (after the last one is a legitimate append)."""
    i = _index(data, log)
    low = log[i - 1].id + 1 if i else 1
    forged = Notification(
        id=data.draw(st.integers(low, log[i].id)),
        originator_id=data.draw(st.sampled_from(STREAMS)),
        originator_version=data.draw(st.integers(1, 5)),
        topic=data.draw(st.sampled_from(TOPICS)),
        state=b'{"forged":true}',
    )
    return [*log[:i], forged, *log[i:]], links, [], forged.id


def swap_two_events_bytes(
    data: st.DataObject, log: Log, links: Links
) -> tuple[Log, Links, list[Digest], int]:
    i = _index(data, log)
    j = data.draw(st.integers(0, len(log) - 1).filter(lambda n: n != i))
    i, j = min(i, j), max(i, j)
    tampered = _replaced(_replaced(log, i, state=log[j].state), j, state=log[i].state)
    return tampered, links, [], log[i].id


def reorder_events(
    data: st.DataObject, log: Log, links: Links
) -> tuple[Log, Links, list[Digest], int]:
    start = data.draw(st.integers(0, len(log) - 2))
    part = log[start:]
    shuffled = data.draw(st.permutations(part).filter(lambda p: list(p) != part))
    tampered = log[:start] + list(shuffled)
    first = next(k for k, (a, b) in enumerate(zip(log, tampered, strict=True)) if a != b)
    return tampered, links, [], log[first].id


def truncate_the_log(
    data: st.DataObject, log: Log, links: Links
) -> tuple[Log, Links, list[Digest], int]:
    keep = data.draw(st.integers(0, len(log) - 1))
    return log[:keep], links, [], log[keep].id


def change_a_stored_link(
    data: st.DataObject, log: Log, links: Links
) -> tuple[Log, Links, list[Digest], int]:
    i = _index(data, log)
    forged = data.draw(st.text("0123456789abcdef", min_size=64, max_size=64))
    if forged == links[i].hash:
        forged = ("1" if forged[0] == "0" else "0") + forged[1:]
    tampered = [*links[:i], replace(links[i], hash=forged), *links[i + 1 :]]
    return log, tampered, [], log[i].id


def delete_a_stored_link(
    data: st.DataObject, log: Log, links: Links
) -> tuple[Log, Links, list[Digest], int]:
    i = _index(data, log)
    return log, links[:i] + links[i + 1 :], [], log[i].id


def append_an_event(
    data: st.DataObject, log: Log, links: Links
) -> tuple[Log, Links, list[Digest], int]:
    """After the chain's head: an INSERT by SQL, which no writer sealed."""
    forged = Notification(
        id=log[-1].id + data.draw(st.integers(1, 3)),
        originator_id=data.draw(st.sampled_from(STREAMS)),
        originator_version=data.draw(st.integers(1, 50)),
        topic=data.draw(st.sampled_from(TOPICS)),
        state=b'{"forged":true}',
    )
    return [*log, forged], links, [], forged.id


def relink_without_the_key(
    data: st.DataObject, log: Log, links: Links
) -> tuple[Log, Links, list[Digest], int]:
    """Change an event and re-seal everything with a key of the intruder's own."""
    i = _index(data, log)
    tampered = _replaced(log, i, state=log[i].state + b" ")
    return tampered, chain_of(tampered, ChainKey(b"\xff" * 32)), [], log[0].id


def truncate_the_chain_and_rewrite_its_tail(
    data: st.DataObject, log: Log, links: Links
) -> tuple[Log, Links, list[Digest], int]:
    """Cut the stored chain and change an event after the cut: the events after it are
    unsealed from the cut on."""
    keep = data.draw(st.integers(0, len(log) - 1))
    i = data.draw(st.integers(keep, len(log) - 1))
    tampered = _replaced(log, i, state=log[i].state + b" ")
    return tampered, links[:keep], [], log[keep].id


def rewrite_events_and_chain_together(
    data: st.DataObject, log: Log, links: Links
) -> tuple[Log, Links, list[Digest], int]:
    """An insider holding the key changes an event and re-seals everything from the genesis:
    consistent in the database; only the digests exported before tell."""
    i = _index(data, log)
    tampered = _replaced(log, i, state=log[i].state + b" ")
    digests = _exported(data, links, log[i].id)
    return tampered, chain_of(tampered), digests, _first_digest_from(digests, log[i].id)


def _exported(data: st.DataObject, links: Links, tampered_at: int) -> list[Digest]:
    """Some links exported before the tampering, at least one of them at or after it."""
    later = [digest(d) for d in links if d.position >= tampered_at]
    some = data.draw(st.lists(st.sampled_from([digest(d) for d in links]), max_size=4))
    return sorted({data.draw(st.sampled_from(later)), *some}, key=lambda d: d.position)


def _first_digest_from(digests: list[Digest], position: int) -> int:
    return min(d.position for d in digests if d.position >= position)


TAMPERINGS: tuple[Tampering, ...] = (
    flip_a_state_byte,
    change_the_topic,
    change_the_version,
    change_the_stream,
    change_the_id,
    delete_an_event,
    insert_an_event,
    swap_two_events_bytes,
    reorder_events,
    truncate_the_log,
    change_a_stored_link,
    delete_a_stored_link,
    append_an_event,
    relink_without_the_key,
    truncate_the_chain_and_rewrite_its_tail,
    rewrite_events_and_chain_together,
)


def _replaced(log: Log, i: int, **changes: object) -> Log:
    return [*log[:i], replace(log[i], **changes), *log[i + 1 :]]


@settings(max_examples=1_000, deadline=None)
@given(logged=linked_logs(), tampering=st.sampled_from(TAMPERINGS), data=st.data())
def test_every_tampering_is_detected_no_later_than_where_it_is_evident(
    logged: tuple[Log, Links], tampering: Tampering, data: st.DataObject
) -> None:
    # given a sealed log that verifies, also against a digest of its head
    log, links = logged
    untouched = check_chain(KEY, log, links, [digest(links[-1])])
    assert untouched.ok and untouched.events_checked == len(log)

    # when it is tampered with
    event(tampering.__name__)
    tampered_log, tampered_links, digests, evident_at = tampering(data, log, links)

    # then the verifier names a position no later than where the tampering is evident
    check = check_chain(KEY, tampered_log, tampered_links, digests)
    assert not check.ok, f"{tampering.__name__} went unnoticed"
    assert check.first_bad_position is not None
    assert check.first_bad_position <= evident_at


def log_of(size: int) -> Log:
    return [
        Notification(
            id=n, originator_id=STREAMS[0], originator_version=n, topic=TOPICS[1], state=b"{}"
        )
        for n in range(1, size + 1)
    ]


def test_a_chain_cut_short_names_each_event_left_unsealed() -> None:
    log = log_of(5)

    check = check_chain(KEY, log, chain_of(log)[:2])

    assert [(d.position, d.what) for d in check.damage] == [(3, "unsealed"), (4, "unsealed"),
                                                            (5, "unsealed")]


def test_each_kind_of_damage_is_named_at_its_own_position_without_cascading() -> None:
    log = log_of(8)
    links = chain_of(log)
    forged = Notification(id=9, originator_id=STREAMS[1], originator_version=1,
                          topic=TOPICS[0], state=b"{}")
    tampered = [
        *log[:1],
        replace(log[1], state=b'{"changed":1}'),  # 2: content
        *log[2:4],                                  # 5: gone, its link kept
        *log[5:],
        forged,                                     # 9: unsealed
    ]

    check = check_chain(KEY, tampered, links)

    assert [(d.position, d.what) for d in check.damage] == [
        (2, "content"), (5, "missing"), (9, "unsealed")
    ]
