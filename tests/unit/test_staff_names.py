"""Staff names (ledger.staff): a person's actor never reads as a shared role token's."""

from __future__ import annotations

import pytest

from ledger import staff
from ledger.application import LedgerApplication
from ledger.errors import InvalidInput
from ledger.identity import Actor
from tests.conftest import load_or_none as load

BOSS = Actor.of_person("grace", "system", "cli-1")


@pytest.mark.parametrize("name", ["deadbeef", "abcdef12", "DEADBEEF"])
def test_a_name_shaped_like_a_role_token_s_fingerprint_is_refused(app: LedgerApplication,
                                                                  name: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        staff.add(load(app), app.save, name, "cs", actor=BOSS)
    assert refused.value.field == "name"  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["deadbeefs", "dead-bee", "abcdefgh", "ann"])
def test_other_names_are_still_taken(app: LedgerApplication, name: str) -> None:
    staff.add(load(app), app.save, name, "cs", actor=BOSS)
