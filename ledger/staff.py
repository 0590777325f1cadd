"""Named staff: the people who use the ledger, each with a role and a bearer token of their own.

A member of staff is an aggregate of their own (one per name): added with a role and a token,
the token rotated, the person revoked. Only a SHA-256 digest of a token is recorded, never the
token; every event records who did it (``actor``) and the request or command that carried it.
The API's staff directory (``projections.staff``) reads these events to know who a token is.

    added ──► (token rotated)* ──► revoked
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from ledger.errors import InvalidInput, InvalidTransition, NotFound
from ledger.identity import Actor

STAFF_ROLES = ("system", "cs", "finance", "auditor")
_NAME = re.compile(r"[a-z][a-z0-9._-]{1,63}")
# What a shared role token's actor shows after its role (``cs:1f2e3d4c``, ``api.auth``).
_FINGERPRINT = re.compile(r"[0-9a-f]{8}")
_STAFF_NAMESPACE = uuid5(NAMESPACE_URL, "ledger:staff")


def staff_name(raw: str) -> str:
    """A person's name in the ledger: 2-64 of ``a-z 0-9 . _ -``, starting with a letter, and
    not a role's name (a shared role token's person is its role)."""
    name = raw.strip().lower() if raw.strip().isascii() else ""
    if not _NAME.fullmatch(name) or name in STAFF_ROLES:
        raise InvalidInput(
            "a name is 2-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter,"
            " and not a role (system, cs, finance, auditor)",
            field="name",
        )
    return name


def staff_role(raw: str) -> str:
    if raw not in STAFF_ROLES:
        raise InvalidInput(f"a role is one of {', '.join(STAFF_ROLES)}", field="role")
    return raw


def staff_id(name: str) -> UUID:
    return uuid5(_STAFF_NAMESPACE, name)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


class Staff(Aggregate):
    TOPIC = "ledger:Staff"

    class Event(Aggregate.Event):
        TOPIC = "ledger:Staff.Event"
        actor: str
        correlation_id: str

    class Created(Event, Aggregate.Created):
        TOPIC = "ledger:Staff.Created"

    class StaffAdded(Created):
        TOPIC = "ledger:Staff.StaffAdded"
        name: str
        role: str
        token_hash: str

    class TokenRotated(Event):
        TOPIC = "ledger:Staff.TokenRotated"
        token_hash: str

    class StaffRevoked(Event):
        TOPIC = "ledger:Staff.StaffRevoked"

    @event(StaffAdded)
    def __init__(
        self, name: str, role: str, token_hash: str, actor: str, correlation_id: str
    ) -> None:
        self.name = name
        self.role = role
        self.token_hash = token_hash
        self.revoked = False

    @classmethod
    def add(cls, name: str, role: str, token_hash: str, *, actor: Actor) -> Staff:
        return cls._create(
            cls.StaffAdded, id=staff_id(name), name=name, role=role, token_hash=token_hash,
            actor=actor.name, correlation_id=actor.request_id,
        )

    def rotate(self, token_hash: str, *, actor: Actor) -> None:
        self._require_active("rotate the token of")
        self._rotate(token_hash, actor.name, actor.request_id)

    @event(TokenRotated)
    def _rotate(self, token_hash: str, actor: str, correlation_id: str) -> None:
        self.token_hash = token_hash

    def revoke(self, *, actor: Actor) -> None:
        self._require_active("revoke")
        self._revoke(actor.name, actor.request_id)

    @event(StaffRevoked)
    def _revoke(self, actor: str, correlation_id: str) -> None:
        self.revoked = True

    def _require_active(self, step: str) -> None:
        if self.revoked:
            raise InvalidTransition(f"cannot {step} {self.name}: revoked", status="revoked")

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "revoked": self.revoked}


# -- commands: each loads what it needs, decides, and hands the new events to ``save`` --------

Load = Callable[[UUID], "Staff | None"]
Save = Callable[["Staff"], None]


def add(load: Load, save: Save, name: str, role: str, *, actor: Actor,
        token: str | None = None) -> str:
    """Adds a person; answers their new token (shown once: only its digest is kept).

    A new name may not be eight hex digits: ``cs:deadbeef`` would read, in every event and
    log line, as the shared cs token whose fingerprint is deadbeef. (Checked here, not in
    ``staff_name``: someone added so before can still be rotated and revoked.)"""
    name, role = staff_name(name), staff_role(role)
    if _FINGERPRINT.fullmatch(name):
        raise InvalidInput(
            "a name may not be 8 hex digits: it would read as a shared role token's "
            "fingerprint (cs:1f2e3d4c)", field="name")
    if load(staff_id(name)) is not None:
        raise InvalidInput(f"{name} is already on the staff", field="name")
    token = token or new_token()
    save(Staff.add(name, role, token_hash(token), actor=actor))
    return token


def rotate(load: Load, save: Save, name: str, *, actor: Actor) -> str:
    """A new token for ``name``; the old one stops working. Answers the new token."""
    person = _existing(load, name)
    token = new_token()
    person.rotate(token_hash(token), actor=actor)
    save(person)
    return token


def revoke(load: Load, save: Save, name: str, *, actor: Actor) -> None:
    person = _existing(load, name)
    person.revoke(actor=actor)
    save(person)


def _existing(load: Load, name: str) -> Staff:
    name = staff_name(name)
    person = load(staff_id(name))
    if person is None:
        raise NotFound(f"no one called {name} is on the staff", name=name)
    return person
