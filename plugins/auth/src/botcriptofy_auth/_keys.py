"""Signing keys for access tokens: asymmetric (Ed25519 or P-256), named by RFC 7638 thumbprints.

The current key signs; retired keys still verify, so a rotation never logs anybody out. Every
public key is published at ``/.well-known/jwks.json``. Verification pins the algorithm to the key
named by ``kid``: a token's own ``alg`` header (``none``, ``HS256`` with the public key as secret)
is never trusted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_private_key(pem: str) -> PrivateKey:
    """Load a PEM private key; raise ``ValueError`` unless it is Ed25519 or EC P-256."""
    try:
        key = serialization.load_pem_private_key(pem.strip().encode(), password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(f"not a PEM private key without passphrase ({error})") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValueError(f"a {type(key).__name__} cannot sign access tokens; use an Ed25519 or EC P-256 key")


def load_public_key(pem: str) -> PublicKey:
    """Load a PEM public key, or the public half of a PEM private key."""
    text = pem.strip()
    if "PRIVATE KEY" in text:
        return load_private_key(text).public_key()
    try:
        key = serialization.load_pem_public_key(text.encode())
    except (ValueError, TypeError) as error:
        raise ValueError(f"not a PEM public or private key ({error})") from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValueError(f"a {type(key).__name__} is not an Ed25519 or EC P-256 key")


def public_jwk(key: PublicKey) -> dict[str, str]:
    """The public JWK of ``key`` (members in RFC 7638 order), without ``kid``/``alg``/``use``."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": _b64(raw)}
    numbers = key.public_numbers()
    return {"crv": "P-256", "kty": "EC", "x": _b64(numbers.x.to_bytes(32, "big")), "y": _b64(numbers.y.to_bytes(32, "big"))}


def thumbprint(key: PublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256), used as the key id."""
    canonical = json.dumps(public_jwk(key), separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())


def algorithm_of(key: PrivateKey | PublicKey) -> str:
    return "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey) else "ES256"


def generate_private_key(algorithm: str) -> PrivateKey:
    return ed25519.Ed25519PrivateKey.generate() if algorithm == "EdDSA" else ec.generate_private_key(ec.SECP256R1())


def private_pem(key: PrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def persistent_secret(path: Path, make: Any) -> str:
    """Read a development secret from ``path``, creating it (mode 0600) with ``make()`` the first time.

    Safe when several workers start at once: the first writer wins and the others read its file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        pass
    value: str = make()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)
    try:
        os.link(temporary, path)  # atomic, fails if another worker won the race
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)
    return path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class VerifyingKey:
    kid: str
    algorithm: str
    key: PublicKey


class InvalidToken(Exception):
    """An access token that must be refused; the message is safe to show."""


class KeyRing:
    """The signing key and every key that still verifies, with a small cache of verified tokens."""

    def __init__(self, signing: PrivateKey, retired: list[PublicKey] | None = None, *, verified_cache: int = 4096) -> None:
        self.signing = signing
        self.algorithm = algorithm_of(signing)
        self.kid = thumbprint(signing.public_key())
        self.keys: dict[str, VerifyingKey] = {self.kid: VerifyingKey(self.kid, self.algorithm, signing.public_key())}
        for key in retired or ():
            kid = thumbprint(key)
            self.keys.setdefault(kid, VerifyingKey(kid, algorithm_of(key), key))
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._verified_max = verified_cache

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [{**public_jwk(k.key), "kid": k.kid, "alg": k.algorithm, "use": "sig"} for k in self.keys.values()]}

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.signing, algorithm=self.algorithm, headers={"kid": self.kid, "typ": "at+jwt"})

    def verify(self, token: str, *, audience: str, issuer: str, now: float) -> dict[str, Any]:
        """Return the claims of a valid access token or raise :class:`InvalidToken`.

        Verified tokens are remembered (bounded LRU) until they expire, so a hot token costs a
        dictionary lookup instead of a signature check; the expiry is checked on every call.
        """
        cached = self._verified.get(token)
        if cached is not None:
            if cached["exp"] > now:
                return cached
            self._verified.pop(token, None)
            raise InvalidToken("the access token has expired")
        if len(token) > 8192:
            raise InvalidToken("the access token is too long")
        header = _unverified_header(token)
        kid = header.get("kid")
        verifying = self.keys.get(kid) if isinstance(kid, str) else None
        if verifying is None:
            raise InvalidToken("the access token names an unknown signing key")
        if header.get("alg") != verifying.algorithm:
            raise InvalidToken("the access token's algorithm does not match its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                verifying.key,
                algorithms=[verifying.algorithm],
                audience=audience,
                issuer=issuer,
                options={"require": ["exp", "iat", "sub", "aud", "iss", "jti"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the access token has expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("the access token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("the access token is from another issuer") from None
        except jwt.PyJWTError:
            raise InvalidToken("the access token's signature or claims are invalid") from None
        if claims.get("typ") != "access":
            raise InvalidToken("the token is not an access token")
        self._verified[token] = claims
        if len(self._verified) > self._verified_max:
            self._verified.popitem(last=False)
        return claims


def _unverified_header(token: str) -> dict[str, Any]:
    """The header of ``token``, read only to choose the verifying key; ``jwt.decode`` then checks the whole token strictly.

    PyJWT's own reader (``jwt.get_unverified_header``) checks every character of all three segments in
    Python, about 30 µs per token, and ``jwt.decode`` does it again: a forged token paid it twice.
    """
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except ValueError:  # binascii.Error, UnicodeDecodeError and json's errors are ValueErrors
        raise InvalidToken("the access token is malformed") from None
    if not isinstance(header, dict) or token.count(".") != 2:
        raise InvalidToken("the access token is malformed")
    return header


def load_keyring(signing_pem: str, retired: list[str], *, state_dir: Path, algorithm: str, production: bool) -> KeyRing:
    """Build the key ring from settings; without a configured key, use (or create) the development key."""
    if signing_pem:
        signing = load_private_key(signing_pem)
    else:
        if production:
            raise ValueError(
                "auth.signing_key is empty; in production set BOTCRIPTOFY_AUTH__SIGNING_KEY "
                "(or signing_key in settings/.secrets.toml) to a PEM Ed25519 or P-256 private key"
            )
        name = "jwt-signing-key-ed25519.pem" if algorithm == "EdDSA" else "jwt-signing-key-p256.pem"
        signing = load_private_key(persistent_secret(state_dir / "auth" / name, lambda: private_pem(generate_private_key(algorithm))))
    return KeyRing(signing, [load_public_key(pem) for pem in retired])
