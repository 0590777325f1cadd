"""Who is calling: bearer tokens by role, checked on every request but ``/health``.

- ``LEDGER_TOKENS`` is ``role:token,role:token,...``; roles are system, cs, finance, auditor. A
  role may have several tokens (rotation); a token may not serve two roles. Anything else
  refuses to start.
- Unset, ``ledger serve`` uses ``./var/tokens`` (one token per role, mode 0600), making it with
  fresh random tokens on the first start.
- Every token has at least 16 characters (``MIN_TOKEN_LENGTH``): a shorter one refuses to
  start.
- A presented token is compared with every known token in constant time.
- The actor recorded in events is ``role:<first 8 hex of sha256(token)>``: who, never the secret.
  Such a shared role token's person is its role.
- Named staff (``ledger staff``) have tokens of their own, known through the staff directory
  (``projections.staff``); and with ``LEDGER_JWT_*`` set, a bearer JWT from an identity
  provider signs a person in (``api.signin``). A person's actor is ``role:person``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from api.keys import ACTOR, REQUEST_ID, ROUTE_ROLES, TOKENS
from api.people import identify_person
from api.problems import Forbidden, Unauthorized
from ledger.identity import Actor
from projections.seal import open_to_others, write_secret

SYSTEM, CS, FINANCE, AUDITOR = "system", "cs", "finance", "auditor"
ROLES = (SYSTEM, CS, FINANCE, AUDITOR)
ANY_ROLE = frozenset(ROLES)
DEFAULT_TOKENS_FILE = Path("var/tokens")
_TOKEN = re.compile(r"[\x21-\x7e]{1,256}")
MIN_TOKEN_LENGTH = 16  # guessing one is then out of reach; shorter ones refuse to start


class TokenConfigError(ValueError):
    """The token configuration is unusable: the service does not start."""


@dataclass(frozen=True)
class Tokens:
    """Known tokens, as sha256 digests, with the role each one grants."""

    digests: tuple[tuple[bytes, str], ...]

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> Tokens:
        digests: dict[bytes, str] = {}
        for role, token in pairs:
            if role not in ROLES:
                # Not quoted: a token written where its role goes would be shown.
                raise TokenConfigError(f"a role is not one of {', '.join(ROLES)}")
            if not _TOKEN.fullmatch(token):
                raise TokenConfigError(f"the {role} token is empty or not printable ASCII")
            if len(token) < MIN_TOKEN_LENGTH:
                raise TokenConfigError(
                    f"the {role} token has {len(token)} characters: a token needs at least "
                    f"{MIN_TOKEN_LENGTH} (e.g. python3 -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))')")
            digest = hashlib.sha256(token.encode()).digest()
            if digests.get(digest, role) != role:
                raise TokenConfigError("one token is given to two roles")
            digests[digest] = role
        if not digests:
            raise TokenConfigError("no tokens given")
        return cls(tuple(digests.items()))

    @classmethod
    def parse(cls, text: str) -> Tokens:
        """``role:token`` pairs separated by commas (or newlines, as in the tokens file)."""
        pairs = []
        for item in re.split(r"[,\n]", text):
            if not item.strip():
                continue
            role, sep, token = item.strip().partition(":")
            if not sep:
                raise TokenConfigError("each token is given as role:token")
            pairs.append((role.strip(), token.strip()))
        return cls.from_pairs(pairs)

    def identify(self, token: str) -> str | None:
        """The role of ``token``, or None; every known token is compared, in constant time."""
        presented = hashlib.sha256(token.encode()).digest()
        found = None
        for digest, role in self.digests:
            if hmac.compare_digest(digest, presented):
                found = role
        return found


def load_or_create(path: Path = DEFAULT_TOKENS_FILE) -> tuple[Tokens, Mapping[str, str], bool]:
    """The tokens of ``path``, made with one fresh random token per role when it is missing.

    Returns the tokens, the role -> token pairs to show the operator, and whether they are new.
    A file others may read is refused, as ssh refuses a private key."""
    created = False
    if not path.exists():  # made whole or not at all (a crash leaves no half a file)
        text = "".join(f"{role}:{secrets.token_urlsafe(32)}\n" for role in ROLES)
        created = write_secret(path, text)
    if (shared := open_to_others(path)) is not None:
        raise TokenConfigError(shared)
    text = path.read_text()
    shown = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return Tokens.parse(text), shown, created


def actor_name(role: str, token: str) -> str:
    return f"{role}:{hashlib.sha256(token.encode()).hexdigest()[:8]}"


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    # Tokens are ASCII (ours, and a JWT's base64url): bytes that are no text are no token.
    if scheme.lower() != "bearer" or not token or not token.isascii():
        return None
    return token


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 without a valid token, 403 when the role may not call the route; sets the actor.

    Unknown routes need a token too (401 before 404): only ``/health`` is open."""
    route_name = request.match_info.route.name
    roles = request.app[ROUTE_ROLES].get(route_name or "", ANY_ROLE)
    if roles is None:
        return await handler(request)
    token = _bearer(request.headers.get("Authorization"))
    role = None if token is None else request.app[TOKENS].identify(token)
    if token is not None and role is None:
        person = identify_person(request.app, token)
        if person is not None:
            name, held = person
            role = next((r for r in held if r in roles), held[0])
            request[ACTOR] = Actor.of_person(name, role, request[REQUEST_ID])
    elif token is not None and role is not None:
        request[ACTOR] = Actor(actor_name(role, token), request[REQUEST_ID])
    if token is None or role is None:
        raise Unauthorized("a valid 'Authorization: Bearer <token>' header is required")
    if role not in roles:
        raise Forbidden(f"the {role} role may not do this")
    return await handler(request)
