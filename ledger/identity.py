"""Who did it, and the names that identify customers and their orders."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ledger.errors import InvalidInput

_USERNAME = re.compile(r"[a-z0-9._-]{3,64}")
_REFERENCE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,126}[\x21-\x7e])?")


@dataclass(frozen=True)
class Actor:
    """The caller of a command, and the request that carried it; both go into every event the
    command records. ``name`` is ``role:person`` for a named person (``finance:alice``), and
    role and a short token fingerprint (``cs:1f2e3d4c``) for a shared role token."""

    name: str
    request_id: str
    # The person who acted (a named member of staff, or the ``sub`` of an identity provider's
    # token); None for a shared role token, whose person is its role.
    who: str | None = None

    @property
    def role(self) -> str:
        return self.name.split(":", 1)[0]

    @property
    def person(self) -> str:
        """Who acted: the named person, or the role of a shared role token."""
        return self.who or self.role

    @classmethod
    def of_person(cls, person: str, role: str, request_id: str) -> Actor:
        """A named person acting in ``role``: recorded as ``role:person`` (``finance:alice``)."""
        return cls(f"{role}:{person}", request_id, person)


def username(raw: str) -> str:
    """The shop's login, normalised: trimmed, lower-case, 3-64 of ``a-z 0-9 . _ -``."""
    # Trimmed, then ASCII before case folding: lower() folds some other letters into ASCII
    # ("\u212a" KELVIN SIGN -> "k"), which would give one customer a second spelling.
    trimmed = raw.strip()
    normalised = trimmed.lower() if trimmed.isascii() else ""
    if not _USERNAME.fullmatch(normalised):
        raise InvalidInput(
            "a user name is 3-64 characters of a-z, 0-9, '.', '_' or '-'", field="username"
        )
    return normalised


def reference(raw: str, *, field: str) -> str:
    """An outside identifier (payment reference, order number, payout reference): 1-128
    printable ASCII characters, no surrounding space."""
    if not _REFERENCE.fullmatch(raw):
        raise InvalidInput(
            f"{field} is 1-128 printable ASCII characters without surrounding spaces", field=field
        )
    return raw


def text(raw: str, *, field: str, max_chars: int = 2000) -> str:
    """A note or reason a person wrote: trimmed, at most ``max_chars``."""
    trimmed = raw.strip()
    if len(trimmed) > max_chars:
        raise InvalidInput(f"{field} is at most {max_chars} characters", field=field)
    return trimmed
