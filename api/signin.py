"""Sign-in from an identity provider: a bearer JWT its issuer signed.

Configured by ``LEDGER_JWT_ISSUER``, ``LEDGER_JWT_AUDIENCE`` and ``LEDGER_JWKS_FILE`` (the
issuer's public keys as a JWKS document on disk: nothing is fetched, no network is needed).
A token is accepted when it is signed with RS256 by one of those RSA keys or EdDSA by one of
those Ed25519 keys (by ``kid`` when it names one; each key is tried only with its own algorithm,
and keys of other types, or published for encryption, are not used) and its ``exp``, ``nbf``,
``iss`` and ``aud`` hold; ``sub`` names the person and the ``roles`` claim lists the roles they
hold (the ledger's: system, cs, finance, auditor; others are ignored). Anything else answers
None: the caller is not signed in, whatever the token holds (never an error).

``sub`` must be a plain name (``SUB``: 1-128 printable ASCII characters, no space): it is the
person the events, the logs and four eyes know, so it may carry no control character (a forged
log line), no other spelling of a name (surrounding space), and may not read as someone else:
a role's name is the person of a shared role token, and eight hex digits would make the actor
``cs:1f2e3d4c`` that a shared role token's fingerprint makes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from api.config import Config

ALGORITHMS = ("RS256", "EdDSA")
ROLES = ("system", "cs", "finance", "auditor")
SUB = re.compile(r"[\x21-\x7e]{1,128}")
_FINGERPRINT = re.compile(r"[0-9a-f]{8}")  # a shared role token's, in its actor (api.auth)
LEEWAY_S = 30
ENV = ("LEDGER_JWT_ISSUER", "LEDGER_JWT_AUDIENCE", "LEDGER_JWKS_FILE")


class SignInConfigError(ValueError):
    """The identity provider's settings are unusable: the service does not start."""


@dataclass(frozen=True)
class SignIn:
    issuer: str
    audience: str
    keys: tuple[tuple[str | None, Any, str], ...]  # (kid, public key, its algorithm)

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
            keys = tuple(_usable(jwk) for jwk in document["keys"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError,
                jwt.PyJWTError) as error:
            raise SignInConfigError(f"{path} is not a usable JWKS document: {error}") from None
        usable = tuple(key for key in keys if key is not None)
        if not usable:
            raise SignInConfigError(f"{path} holds no RSA or Ed25519 signing key")
        return cls(issuer, audience, usable)

    def verify(self, token: str) -> tuple[str, tuple[str, ...]] | None:
        """The person (``sub``) and their ledger roles, or None when the token is not valid."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            return None
        for key_id, key, algorithm in self.keys:
            if kid is not None and key_id is not None and kid != key_id:
                continue
            try:  # only the key's own algorithm: another one's code may raise on this key
                claims = jwt.decode(
                    token, key, algorithms=[algorithm], audience=self.audience,
                    issuer=self.issuer, leeway=LEEWAY_S,
                    options={"require": ["exp", "iss", "aud", "sub"]},
                )
            except (jwt.PyJWTError, TypeError, ValueError):  # a token that does not hold: 401
                continue
            return _person(claims)
        return None


def _usable(jwk: dict[str, Any]) -> tuple[str | None, Any, str] | None:
    """A JWK's kid, public key and the algorithm it verifies; None for a key the ledger does
    not use (another type, or published for encryption)."""
    if jwk.get("use", "sig") != "sig":
        return None
    key = jwt.PyJWK(jwk).key
    algorithm = ("RS256" if isinstance(key, RSAPublicKey)
                 else "EdDSA" if isinstance(key, Ed25519PublicKey) else None)
    if algorithm is None:
        return None
    kid = jwk.get("kid")
    return (kid if isinstance(kid, str) else None), key, algorithm


def _person(claims: dict[str, Any]) -> tuple[str, tuple[str, ...]] | None:
    sub, roles = claims.get("sub"), claims.get("roles")
    if not isinstance(sub, str) or not plain_name(sub) or not isinstance(roles, list):
        return None
    held = tuple(role for role in roles if role in ROLES)
    return (sub, held) if held else None


def plain_name(sub: str) -> bool:
    """Whether ``sub`` may name a person (see the module's docstring)."""
    folded = sub.lower()  # a name is one name whatever its case (Finance is finance)
    return (bool(SUB.fullmatch(sub)) and folded not in ROLES
            and not _FINGERPRINT.fullmatch(folded))


