"""Sign-in from an identity provider: a bearer JWT its issuer signed.

Configured by ``LEDGER_JWT_ISSUER``, ``LEDGER_JWT_AUDIENCE`` and ``LEDGER_JWKS_FILE`` (the
issuer's public keys as a JWKS document on disk: nothing is fetched, no network is needed).
A token is accepted when it is signed with RS256 or EdDSA by one of those keys (by ``kid``
when it names one) and its ``exp``, ``nbf``, ``iss`` and ``aud`` hold; ``sub`` names the
person and the ``roles`` claim lists the roles they hold (the ledger's: system, cs, finance,
auditor; others are ignored). Anything else answers None: the caller is not signed in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from api.config import Config

ALGORITHMS = ("RS256", "EdDSA")
ROLES = ("system", "cs", "finance", "auditor")
LEEWAY_S = 30
ENV = ("LEDGER_JWT_ISSUER", "LEDGER_JWT_AUDIENCE", "LEDGER_JWKS_FILE")


class SignInConfigError(ValueError):
    """The identity provider's settings are unusable: the service does not start."""


@dataclass(frozen=True)
class SignIn:
    issuer: str
    audience: str
    keys: tuple[tuple[str | None, Any], ...]  # (kid, public key)

    @classmethod
    def from_config(cls, config: Config) -> SignIn | None:
        """From ``LEDGER_JWT_*``; None when none is set; an error when only some are."""
        values = dict(zip(ENV, (config.jwt_issuer, config.jwt_audience, config.jwks_file),
                          strict=True))
        if not any(values.values()):
            return None
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise SignInConfigError(f"sign-in needs {', '.join(missing)} as well")
        return cls.from_jwks(values["LEDGER_JWT_ISSUER"], values["LEDGER_JWT_AUDIENCE"],
                             Path(values["LEDGER_JWKS_FILE"]))

    @classmethod
    def from_jwks(cls, issuer: str, audience: str, path: Path) -> SignIn:
        try:
            document = json.loads(path.read_text())
            keys = tuple((jwk.get("kid"), jwt.PyJWK(jwk).key) for jwk in document["keys"])
        except (OSError, ValueError, KeyError, TypeError, jwt.PyJWTError) as error:
            raise SignInConfigError(f"{path} is not a usable JWKS document: {error}") from None
        if not keys:
            raise SignInConfigError(f"{path} holds no keys")
        return cls(issuer, audience, keys)

    def verify(self, token: str) -> tuple[str, tuple[str, ...]] | None:
        """The person (``sub``) and their ledger roles, or None when the token is not valid."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            return None
        for key_id, key in self.keys:
            if kid is not None and key_id is not None and kid != key_id:
                continue
            try:
                claims = jwt.decode(
                    token, key, algorithms=list(ALGORITHMS), audience=self.audience,
                    issuer=self.issuer, leeway=LEEWAY_S,
                    options={"require": ["exp", "iss", "aud", "sub"]},
                )
            except jwt.PyJWTError:
                continue
            return _person(claims)
        return None


def _person(claims: dict[str, Any]) -> tuple[str, tuple[str, ...]] | None:
    sub, roles = claims.get("sub"), claims.get("roles")
    if not isinstance(sub, str) or not sub.strip() or not isinstance(roles, list):
        return None
    held = tuple(role for role in roles if role in ROLES)
    return (sub.strip(), held) if held else None


