"""Google login: OpenID Connect authorization code flow with PKCE, through Authlib.

Authlib builds the authorization request and the token request and validates the ID token's
claims (issuer, audience, expiry, nonce, azp, at_hash); joserfc (Authlib's JOSE engine) checks its
signature against the provider's published keys. The login state (state, nonce, PKCE verifier)
lives in ``kernel.cache()`` for ten minutes, bound to the browser by an HttpOnly cookie holding the
state, and is used once.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.common.urls import url_decode
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from botcriptofy import ProblemError

STATE_TTL = 600.0
METADATA_TTL = 3600.0
ALGORITHMS = ["RS256", "ES256", "EdDSA"]


@dataclass(frozen=True)
class Identity:
    subject: str
    email: str | None
    email_verified: bool
    name: str | None
    issuer: str


class OidcError(Exception):
    """The provider refused, or answered something that must not be trusted; the message is safe to show."""


class OidcClient:
    """One OpenID provider (Google by default): discovery, keys, authorization URL, code exchange, ID token validation."""

    def __init__(self, discovery_url: str, client_id: str, client_secret: str, *, timeout: float = 10.0) -> None:
        self.discovery_url = discovery_url
        self.client_id = client_id
        self.client_secret = client_secret
        self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self._metadata: tuple[float, dict[str, Any]] | None = None
        self._keys: tuple[float, KeySet] | None = None
        self._lock = asyncio.Lock()

    def matches(self, discovery_url: str, client_id: str, client_secret: str) -> bool:
        return (self.discovery_url, self.client_id, self.client_secret) == (discovery_url, client_id, client_secret)

    async def close(self) -> None:
        await self._http.aclose()

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self._http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as error:
            raise OidcError(f"the identity provider did not answer ({type(error).__name__})") from None
        if response.status_code != 200:
            raise OidcError(f"the identity provider answered {response.status_code} for {url}")
        try:
            data = response.json()
        except ValueError:
            raise OidcError("the identity provider answered something that is not JSON") from None
        if not isinstance(data, dict):
            raise OidcError("the identity provider answered an unexpected document")
        return data

    async def metadata(self) -> dict[str, Any]:
        cached = self._metadata
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        async with self._lock:
            cached = self._metadata
            if cached is not None and cached[0] > time.monotonic():
                return cached[1]
            data = await self._get_json(self.discovery_url)
            for key in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(data.get(key), str):
                    raise OidcError(f"the provider's discovery document has no {key}")
            self._metadata = (time.monotonic() + METADATA_TTL, data)
            return data

    async def _keyset(self, *, refresh: bool = False) -> KeySet:
        cached = self._keys
        if cached is not None and cached[0] > time.monotonic() and not refresh:
            return cached[1]
        metadata = await self.metadata()
        keys = KeySet.import_key_set(await self._get_json(metadata["jwks_uri"]))  # type: ignore[arg-type]
        self._keys = (time.monotonic() + METADATA_TTL, keys)
        return keys

    async def authorization_url(self, *, redirect_uri: str, state: str, nonce: str, code_verifier: str) -> str:
        metadata = await self.metadata()
        return str(
            prepare_grant_uri(
                metadata["authorization_endpoint"],
                self.client_id,
                "code",
                redirect_uri=redirect_uri,
                scope="openid email profile",
                state=state,
                nonce=nonce,
                code_challenge=create_s256_code_challenge(code_verifier),
                code_challenge_method="S256",
            )
        )

    async def exchange(self, *, code: str, redirect_uri: str, code_verifier: str, nonce: str) -> Identity:
        """Trade the authorization code for tokens and return the validated identity of the ID token."""
        metadata = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
            "client_id": self.client_id,
        }
        try:
            response = await self._http.post(
                metadata["token_endpoint"], data=form, auth=(self.client_id, self.client_secret), headers={"Accept": "application/json"}
            )
        except httpx.HTTPError as error:
            raise OidcError(f"the identity provider's token endpoint did not answer ({type(error).__name__})") from None
        try:
            body = response.json()
        except ValueError:
            body = dict(url_decode(response.text)) if response.text else {}
        if response.status_code != 200 or not isinstance(body, dict):
            reason = body.get("error", response.status_code) if isinstance(body, dict) else response.status_code
            raise OidcError(f"the identity provider refused the authorization code ({reason})")
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise OidcError("the identity provider returned no ID token")
        claims = await self._validate(id_token, nonce=nonce, access_token=body.get("access_token"), issuer=metadata["issuer"])
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise OidcError("the ID token has no subject")
        email = claims.get("email")
        verified = claims.get("email_verified")
        return Identity(
            subject=subject,
            email=email if isinstance(email, str) else None,
            email_verified=verified is True or verified == "true",
            name=claims.get("name") if isinstance(claims.get("name"), str) else None,
            issuer=metadata["issuer"],
        )

    async def _validate(self, id_token: str, *, nonce: str, access_token: Any, issuer: str) -> dict[str, Any]:
        for attempt in (0, 1):
            keys = await self._keyset(refresh=attempt == 1)
            try:
                token = jose_jwt.decode(id_token, keys, algorithms=ALGORITHMS)
                break
            except JoseError as error:
                if attempt == 1 or ("key" not in type(error).__name__.lower() and "key" not in str(error).lower()):
                    raise OidcError(f"the ID token's signature is not valid ({error.error})") from None
            except ValueError as error:  # joserfc raises ValueError for a kid it does not know
                if attempt == 1:
                    raise OidcError(f"the ID token's signature is not valid ({error})") from None
        claims = CodeIDToken(
            token.claims,
            token.header,
            options={"iss": {"essential": True, "value": issuer}, "aud": {"essential": True, "value": self.client_id}},
            params={
                "nonce": nonce,
                "client_id": self.client_id,
                **({"access_token": access_token} if isinstance(access_token, str) else {}),
            },
        )
        try:
            claims.validate(now=int(time.time()), leeway=60)
        except JoseError as error:
            raise OidcError(f"the ID token is not valid ({error.error}: {error.description or ''})".rstrip(": )") + ")") from None
        return dict(claims)


def new_login_state() -> dict[str, str]:
    return {"state": secrets.token_urlsafe(32), "nonce": secrets.token_urlsafe(32), "verifier": secrets.token_urlsafe(48)}


def same_state(cookie: str | None, query: str | None) -> bool:
    return bool(cookie) and bool(query) and hmac.compare_digest(str(cookie).encode(), str(query).encode())


def not_configured() -> ProblemError:
    return ProblemError(404, "Google login is not configured", "Set auth.google_client_id and auth.google_client_secret to enable it.")
