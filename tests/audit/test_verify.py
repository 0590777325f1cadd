"""``ledger verify`` (``projections.audit.verify``) on both stores: a faithful history verifies;
history changed behind the service's back (a row INSERTed by SQL, or its guards switched off, as
the tables' owner could) fails and names every damaged position and what is wrong there; a read
model changed by hand fails and names the read model.
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest

from ledger.errors import HistoryDamaged
from projections.audit import verify
from projections.chain import Chain, Damage, read_digests
from projections.checkpoints import Notary
from projections.notes import load_or_create_signer
from projections.replay import rebuild
from tests.audit.conftest import Intruder, Ledger, dump_read_models
from tests.audit.history import SYSTEM, History, RandomChooser

DEPOSIT = "ledger:Account.DepositReceived"


@pytest.fixture
def audited(ledger: Ledger) -> Ledger:
    """A settled random history (read models and chain at the log's end), the keeper stopped
    so that nothing repairs or extends what the intruder changes."""
    History(ledger.app, RandomChooser(seed=3)).run(35)
    ledger.settle()
    ledger.stop_keeper()
    return ledger


def deposit_positions(ledger: Ledger) -> list[int]:
    log = ledger.app.recorder.select_notifications(start=1, limit=10_000)
    positions = [n.id for n in log if n.topic == DEPOSIT]
    assert len(positions) >= 4, "the history should hold a few deposits"
    return positions


def test_a_faithful_history_verifies(audited: Ledger) -> None:
    report = verify(audited.settings, audited.app)

    assert report.problems == []
    assert report.ok and report.first_bad_position is None
    assert report.events_checked == audited.read_models.log_position() > 30
    assert report.damage == []


def test_a_deposit_inserted_by_sql_is_named_as_unsealed(
    audited: Ledger, intruder: Intruder
) -> None:
    # Given a well-formed deposit of an existing account, its next version, INSERTed by SQL
    forged = intruder.forge_deposit(deposit_positions(audited)[0], 5_000_000, "FORGED-1")

    report = verify(audited.settings, audited.app)

    # Then verify names it, and only it
    assert not report.ok
    assert report.first_bad_position == forged
    assert report.damage == [{"position": forged, "what": "unsealed"}]


def test_a_rebuild_stops_before_a_deposit_inserted_by_sql_and_leaves_the_read_models_alone(
    audited: Ledger, intruder: Intruder
) -> None:
    # Given a well-formed deposit of 5,000,000 INSERTed by SQL, and no keeper running (the
    # rebuild then replays up to the log's head itself)
    before = dump_read_models(audited.settings)
    forged = intruder.forge_deposit(deposit_positions(audited)[0], 5_000_000, "FORGED-1")

    # When an operator rebuilds the read models
    with pytest.raises(HistoryDamaged, match=f"position {forged}: an event with no seal") as told:
        rebuild(audited.settings, audited.app)

    # Then the rebuild names the forged row and swaps nothing in: the forged money shows nowhere
    assert told.value.position == forged
    assert dump_read_models(audited.settings) == before


def test_the_writer_places_its_next_events_after_a_row_forged_at_the_next_position(
    audited: Ledger, intruder: Intruder
) -> None:
    # Given a deposit INSERTed by SQL at the very position the writer would give its next event
    forged = intruder.forge_deposit(deposit_positions(audited)[0], 5_000_000, "FORGED-1")

    # When the service records more
    audited.app.open_account("after-forgery", "EUR", actor=SYSTEM)
    audited.app.deposit("after-forgery", 1_250, "PAY-AFTER", actor=SYSTEM)

    # Then its events come after the forged row, sealed, and only the forged row is named
    after = audited.app.recorder.select_notifications(start=forged + 1, limit=10)
    assert [n.id for n in after] == [forged + 1, forged + 2]
    report = verify(audited.settings, audited.app)
    assert report.damage == [{"position": forged, "what": "unsealed"}]


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_log_cut_behind_the_running_writers_back_is_named_where_it_writes_next(
    audited: Ledger, intruder: Intruder
) -> None:
    # Given the log's last two events deleted with their seals and leaves (guards off), while
    # the service runs (PostgreSQL: the writer gives positions from its own last commit)
    end = audited.read_models.log_position()
    for table, column in ((intruder.events, intruder.key), ("ledger_chain", "position"),
                          ("ledger_merkle_leaves", "position")):
        intruder.run(f"DELETE FROM {table} WHERE {column} >= %s", (end - 1,), unguarded=True)

    # When the service records its next event
    audited.app.open_account("after-cut", "EUR", actor=SYSTEM)

    # Then it lands after the last event the writer wrote, and its seal, made from that event's,
    # names the cut: it does not follow the log as it now stands
    report = verify(audited.settings, audited.app)
    assert not report.ok
    assert report.damage == [{"position": end + 1, "what": "order"}]


def test_an_event_changed_and_its_chain_recomputed_with_plain_sha256_is_named(
    audited: Ledger, intruder: Intruder
) -> None:
    position = deposit_positions(audited)[1]

    intruder.flip_amount_digit(position)
    intruder.relink_with_sha256(position)

    report = verify(audited.settings, audited.app)
    assert not report.ok
    assert report.first_bad_position == position
    # every link recomputed without the key is no seal: each one is named
    log_end = audited.read_models.log_position()
    assert report.damage == [
        {"position": p, "what": "content"} for p in range(position, log_end + 1)
    ]


def test_one_byte_changed_in_one_stored_event_is_named_by_its_position(
    audited: Ledger, intruder: Intruder
) -> None:
    position = deposit_positions(audited)[1]

    intruder.flip_amount_digit(position)

    report = verify(audited.settings, audited.app)
    assert not report.ok
    assert report.first_bad_position == position
    assert report.damage == [{"position": position, "what": "content"}]


@pytest.mark.parametrize("which", ["a middle one", "the last one"])
def test_a_deleted_event_is_named_by_its_position(
    audited: Ledger, intruder: Intruder, which: str
) -> None:
    log_end = audited.read_models.log_position()
    position = deposit_positions(audited)[1] if which == "a middle one" else log_end

    intruder.delete(position)

    assert audited.read_models.log_position() == (
        log_end if which == "a middle one" else log_end - 1
    )
    report = verify(audited.settings, audited.app)
    assert not report.ok
    assert report.first_bad_position == position
    assert report.damage == [{"position": position, "what": "missing"}]


def test_two_events_with_their_bytes_swapped_are_named_by_the_first_of_them(
    audited: Ledger, intruder: Intruder
) -> None:
    first, *_, second = deposit_positions(audited)

    intruder.swap(first, second)

    report = verify(audited.settings, audited.app)
    assert not report.ok
    assert report.first_bad_position == first
    assert report.damage == [
        {"position": first, "what": "content"}, {"position": second, "what": "content"}
    ]


def test_two_events_moved_with_their_seals_are_named_where_they_now_stand(
    audited: Ledger, intruder: Intruder
) -> None:
    first = deposit_positions(audited)[1]
    second = first + 1

    intruder.move_with_seals(first, second)

    # a seal binds its position, so moved along with its event it holds at neither place
    # (`content`), and the event after them no longer follows the seal before it (`order`)
    report = verify(audited.settings, audited.app)
    assert not report.ok
    assert report.first_bad_position == first
    assert report.damage == [
        {"position": first, "what": "content"}, {"position": second, "what": "content"},
        {"position": second + 1, "what": "order"},
    ]


def test_an_event_removed_with_its_seal_is_named_order_at_the_next_one(
    audited: Ledger, intruder: Intruder
) -> None:
    position = deposit_positions(audited)[1]

    intruder.delete(position)
    intruder.run("DELETE FROM ledger_chain WHERE position = %s", (position,), unguarded=True)

    # every remaining seal holds, but the next one does not follow the one before it
    report = verify(audited.settings, audited.app)
    assert not report.ok
    assert report.first_bad_position == position + 1
    assert report.damage == [{"position": position + 1, "what": "order"}]


def test_a_rewrite_of_events_and_chain_together_is_caught_by_the_digests_exported_before(
    ledger: Ledger, intruder: Intruder, tmp_path: Path
) -> None:
    # given digests of the chain's head exported after each of three stretches of history
    exported = tmp_path / "digests.jsonl"
    stretches = []
    history = History(ledger.app, RandomChooser(seed=21))
    for _ in range(3):
        history.run(15)
        ledger.settle()
        digest = Chain(ledger.app.recorder).head()
        stretches.append(digest.position)
        with exported.open("a") as out:
            out.write(digest.to_json() + "\n")
    ledger.stop_keeper()

    # when an insider holding the chain key changes a deposit of the second stretch, re-seals
    # the chain from there and rebuilds the read models, so that the database agrees with itself
    position = next(p for p in deposit_positions(ledger) if stretches[0] < p <= stretches[1])
    intruder.flip_amount_digit(position)
    intruder.relink_with_key(ledger.app.recorder.chain_key, position)  # type: ignore[attr-defined]
    rebuild(ledger.settings, ledger.app)
    assert verify(ledger.settings, ledger.app).ok  # nothing inside the database tells

    # then the digests kept outside tell, at the first one exported after the change
    report = verify(ledger.settings, ledger.app, read_digests(exported))
    assert not report.ok
    assert report.first_bad_position == stretches[1]
    assert report.damage == [
        {"position": stretches[1], "what": "digest"}, {"position": stretches[2], "what": "digest"}
    ]


HAND_CHANGES = {
    "accounts": ("rm_accounts", "UPDATE rm_accounts SET posted = posted + 1"),
    "journal": ("rm_journal", "UPDATE rm_journal SET amount = amount + 1 WHERE leg = 0"),
}


@pytest.mark.parametrize("read_model", HAND_CHANGES)
def test_a_read_model_row_changed_by_hand_fails_verify_naming_the_read_model(
    audited: Ledger, intruder: Intruder, read_model: str
) -> None:
    table, change = HAND_CHANGES[read_model]
    intruder.read_model_sql(read_model, change)

    report = verify(audited.settings, audited.app)

    assert not report.ok
    assert report.first_bad_position is None  # the log itself is sound
    assert report.problems
    assert all(p.startswith(f"read model {read_model}: {table}") for p in report.problems)


def test_a_gap_in_the_log_is_found_at_its_position_whatever_the_range_asked(
    audited: Ledger, intruder: Intruder
) -> None:
    chain = Chain(audited.app.recorder)
    head = audited.read_models.log_position()
    assert chain.first_gap(0, head) is None
    # Given an event deleted with its seal, and a later one deleted without it
    gone, later = deposit_positions(audited)[1], head - 3
    assert gone < later
    intruder.delete_with_seal(gone)
    intruder.delete(later)

    # Then the first position with no event is found, in any range that holds one
    assert chain.first_gap(0, head) == gone
    assert chain.first_gap(gone - 1, gone) == gone
    assert chain.first_gap(gone, head) == later
    assert chain.first_gap(later, head) is None
    assert chain.first_gap(0, gone - 1) is None


@pytest.mark.parametrize("position", [0, -1])
def test_an_event_inserted_below_the_log_is_named_though_no_reader_of_the_log_sees_it(
    audited: Ledger, intruder: Intruder, tmp_path: Path, position: int
) -> None:
    # Given an account's next version INSERTed by SQL at position 0 or below, where the writer
    # never places an event and every reader of the log starts after (loading the account
    # fails on it)
    stream = intruder.forge_at(deposit_positions(audited)[0], position)
    with pytest.raises(HistoryDamaged, match=f"position {position} has no valid seal"):
        audited.app.repository.get(stream if isinstance(stream, UUID) else UUID(stream))

    # When an auditor verifies the history
    report = verify(audited.settings, audited.app)

    # Then verify names the row, and only it, and fails
    assert not report.ok
    assert report.first_bad_position == position
    assert report.damage == [{"position": position, "what": "unsealed"}]
    # and the notary names it too (for /ready), though its tree holds the whole log
    signer = load_or_create_signer(tmp_path / "signing.key", "ledger.test/log", may_create=True)
    notary = Notary(audited.app.recorder, signer, None, interval_s=3600)
    notary.round()
    assert notary.damage == Damage(position, "unsealed")
    assert len(notary.tree) == audited.read_models.log_position()
