"""Named staff kept as events (ledger.staff), and the directory each server reads them into
(projections.staff), on both stores."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from ledger import staff
from ledger.application import LedgerApplication
from ledger.errors import InvalidInput, InvalidTransition, NotFound
from ledger.identity import Actor
from projections.staff import StaffDirectory
from tests.conftest import load_or_none as load

BOSS = Actor.of_person("grace", "system", "cli-1")


def test_adding_records_only_the_token_s_hash_and_who_added(app: LedgerApplication) -> None:
    token = staff.add(load(app), app.save, "Ann", "finance", actor=BOSS)

    events = list(app.repository.event_store.get(staff.staff_id("ann")))
    assert [type(e).__name__ for e in events] == ["StaffAdded"]
    added: Any = events[0]
    assert (added.name, added.role, added.actor) == ("ann", "finance", "system:grace")
    assert added.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(added.__dict__)


def test_the_directory_follows_additions_rotations_and_revocations(app: LedgerApplication
                                                                   ) -> None:
    directory = StaffDirectory(app)
    first = staff.add(load(app), app.save, "bea", "cs", actor=BOSS)
    directory.refresh()
    found = directory.identify(staff.token_hash(first))
    assert found is not None and (found.name, found.role) == ("bea", "cs")

    second = staff.rotate(load(app), app.save, "bea", actor=BOSS)
    directory.refresh()
    assert directory.identify(staff.token_hash(first)) is None
    assert directory.identify(staff.token_hash(second)) is not None

    staff.revoke(load(app), app.save, "bea", actor=Actor.of_person("hal", "system", "cli-2"))
    directory.refresh()
    assert directory.identify(staff.token_hash(second)) is None
    [person] = directory.people()
    assert (person.revoked, person.added_by, person.changed_by) == (
        True, "system:grace", "system:hal")


@pytest.mark.parametrize("name", ["x", "finance", "9lives", "ann smith", ""])
def test_a_name_is_a_short_lower_case_word_that_is_not_a_role(app: LedgerApplication,
                                                              name: str) -> None:
    with pytest.raises(InvalidInput):
        staff.add(load(app), app.save, name, "cs", actor=BOSS)


def test_a_name_is_taken_once_and_a_revoked_person_stays_revoked(app: LedgerApplication
                                                                 ) -> None:
    staff.add(load(app), app.save, "cy", "auditor", actor=BOSS)
    with pytest.raises(InvalidInput):
        staff.add(load(app), app.save, "cy", "cs", actor=BOSS)
    staff.revoke(load(app), app.save, "cy", actor=BOSS)
    with pytest.raises(InvalidTransition):
        staff.rotate(load(app), app.save, "cy", actor=BOSS)
    with pytest.raises(NotFound):
        staff.revoke(load(app), app.save, "nobody", actor=BOSS)
    with pytest.raises(InvalidInput):
        staff.add(load(app), app.save, "dee", "admin", actor=BOSS)
