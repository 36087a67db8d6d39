"""Google login end to end against a real OpenID provider on loopback (oidc-provider-mock), never the internet."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import sqlalchemy as sa

from botcriptofy.testing import wait_until
from botcriptofy_auth._models import Identity

from .conftest import STRONG_PASSWORD, Recorder, bearer, login, signup, verify

CLIENT_ID, CLIENT_SECRET = "botcriptofy-test-client", "test-client-secret"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    """An oidc-provider-mock 0.3.4 server on a free loopback port; its issuer URL."""
    port = _free_port()
    env = {**os.environ, "AUTHLIB_INSECURE_TRANSPORT": "1", "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(
        [sys.executable, "-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port", str(port), "--require-nonce", "true"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    issuer = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"oidc-provider-mock did not start: {process.stderr.read().decode()[-2000:] if process.stderr else ''}")
            time.sleep(0.1)
        yield issuer
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


def google_settings(issuer: str, **extra):
    return {
        "google_client_id": CLIENT_ID,
        "google_client_secret": CLIENT_SECRET,
        "google_discovery_url": f"{issuer}/.well-known/openid-configuration",
        "oidc_cookie_secure": False,
        **extra,
    }


async def _seed(issuer: str, subject: str, claims: dict) -> None:
    async with httpx.AsyncClient() as client:
        assert (await client.put(f"{issuer}/users/{subject}", json=claims)).status_code == 204


async def _google_login(harness, subject: str, *, account_type: str = "trader") -> httpx.Response:
    """Start at our API, consent at the provider as ``subject``, and follow the redirect back to our callback."""
    start = await harness.client.get("/v1/auth/google/start", params={"mode": "json", "account_type": account_type})
    assert start.status_code == 200, start.text
    url = start.json()["authorization_url"]
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"] and query["scope"] == ["openid email profile"]
    async with httpx.AsyncClient() as browser:
        consent = await browser.post(url, data={"sub": subject})
    assert consent.status_code == 302, consent.text
    callback = consent.headers["location"]
    assert callback.startswith("http://testserver/v1/auth/google/callback?")
    return await harness.client.get(callback)


async def test_google_login_creates_an_account(make_auth, provider, monkeypatch):
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    recorder = Recorder()
    harness = await make_auth(plugins={"recorder": recorder}, **google_settings(provider))
    subject = f"google-{uuid.uuid4().hex[:8]}"
    await _seed(provider, subject, {"email": "Gabi@Example.com", "email_verified": True, "name": "Gabi Google"})
    response = await _google_login(harness, subject)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["created"] and not body["linked"] and body["token_type"] == "bearer"
    me = (await harness.client.get("/v1/me", headers=bearer(body["access_token"]))).json()
    assert me["user"]["email"] == "gabi@example.com" and me["user"]["email_verified"] and me["user"]["name"] == "Gabi Google"
    assert me["tenant"]["type"] == "trader"
    # The refresh token works like any other.
    assert (await harness.client.post("/v1/auth/refresh", json={"refresh_token": body["refresh_token"]})).status_code == 200
    # The same Google subject logs into the same account.
    again = (await _google_login(harness, subject)).json()
    assert again["user_id"] == body["user_id"] and not again["created"]


async def test_google_login_links_an_existing_account_by_verified_email(make_auth, provider, monkeypatch):
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    harness = await make_auth(**google_settings(provider))
    existing = await signup(harness.client, "linda@example.com", name="Linda")
    await verify(harness, "linda@example.com")  # only a verified account is linked (see the pre-hijacking test)
    subject = f"google-{uuid.uuid4().hex[:8]}"
    await _seed(provider, subject, {"email": "LINDA@example.com", "email_verified": True, "name": "Linda G"})
    body = (await _google_login(harness, subject)).json()
    assert body["linked"] and not body["created"] and body["user_id"] == existing["user"]["id"]
    # The password still works too.
    assert (await login(harness.client, "linda@example.com", STRONG_PASSWORD)).status_code == 200


async def test_google_login_does_not_hand_over_an_account_pre_registered_with_the_victims_address(make_auth, provider, monkeypatch):
    """Account pre-hijacking: an attacker signs up with the victim's address (never verified) and waits.

    When the victim logs in with Google, the account must not be linked: the attacker still knows its
    password, so the victim would be working in an account someone else controls.
    """
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    harness = await make_auth(**google_settings(provider))
    attacker = await signup(harness.client, "victim@example.com", name="Not The Victim")
    subject = f"google-{uuid.uuid4().hex[:8]}"
    await _seed(provider, subject, {"email": "victim@example.com", "email_verified": True, "name": "Victim"})

    response = await _google_login(harness, subject)
    assert response.status_code == 409, response.text
    problem = response.json()
    assert problem["reason"] == "email_not_verified" and problem["type"].endswith("/email-not-verified")
    assert "access_token" not in problem and "/v1/auth/password/forgot" in problem["detail"]
    async with harness.kernel.database().session(system=True) as session:
        links = (await session.execute(sa.select(Identity.user_id).where(Identity.subject == subject))).all()
    assert links == []
    # The attacker's own login still sees an account without any Google link, and still unverified.
    me = (await harness.client.get("/v1/me", headers=bearer(attacker["tokens"]["access_token"]))).json()
    assert me["user"]["email_verified"] is False

    # The victim takes the address back through the mailbox: the reset link ends the attacker's sessions
    # and verifies the address; Google then links to the account whose password only the victim knows.
    assert (await harness.client.post("/v1/auth/password/forgot", json={"email": "victim@example.com"})).status_code == 202
    await wait_until(lambda: any(n.template == "auth.password_reset" for n in harness.mailbox.notifications))
    token = await harness.mailbox.token_for(harness.kernel, "victim@example.com", "auth.password_reset")
    new_password = "a brand new passphrase only I know"
    reset = await harness.client.post("/v1/auth/password/reset", json={"token": token, "new_password": new_password})
    assert reset.status_code == 200 and reset.json()["revoked"] == 1
    assert (await harness.client.get("/v1/me", headers=bearer(attacker["tokens"]["access_token"]))).status_code == 401
    refreshed = await harness.client.post("/v1/auth/refresh", json={"refresh_token": attacker["tokens"]["refresh_token"]})
    assert refreshed.status_code == 401
    assert (await login(harness.client, "victim@example.com", STRONG_PASSWORD)).status_code == 401
    linked = await _google_login(harness, subject)
    assert linked.status_code == 200 and linked.json()["linked"] and linked.json()["user_id"] == attacker["user"]["id"]


async def test_unverified_google_email_neither_links_nor_creates(make_auth, provider, monkeypatch):
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    harness = await make_auth(**google_settings(provider))
    await signup(harness.client, "victim@example.com")
    subject = f"google-{uuid.uuid4().hex[:8]}"
    await _seed(provider, subject, {"email": "victim@example.com", "email_verified": False})
    response = await _google_login(harness, subject)
    assert response.status_code == 403 and "e-mail" in response.json()["detail"]


async def test_callback_refuses_forged_or_replayed_state(make_auth, provider, monkeypatch):
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    harness = await make_auth(**google_settings(provider))
    subject = f"google-{uuid.uuid4().hex[:8]}"
    await _seed(provider, subject, {"email": "state@example.com", "email_verified": True})
    start = await harness.client.get("/v1/auth/google/start", params={"mode": "json"})
    async with httpx.AsyncClient() as browser:
        consent = await browser.post(start.json()["authorization_url"], data={"sub": subject})
    callback = consent.headers["location"]
    # Another browser (no state cookie) cannot complete this login: login CSRF.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=harness.runtime), base_url="http://testserver") as other:
        forged = await other.get(callback)
    assert forged.status_code == 400 and "state" in forged.json()["title"].lower()
    assert (await harness.client.get(callback)).status_code == 200
    replay = await harness.client.get(callback)  # the state is used up
    assert replay.status_code == 400
    # A made-up code with a valid state is refused by the provider.
    start = await harness.client.get("/v1/auth/google/start", params={"mode": "json"})
    state = parse_qs(urlsplit(start.json()["authorization_url"]).query)["state"][0]
    bogus = await harness.client.get("/v1/auth/google/callback", params={"code": "made-up", "state": state})
    assert bogus.status_code == 401
    # A state that is not even ASCII is a forged state, not a server error.
    start = await harness.client.get("/v1/auth/google/start", params={"mode": "json"})
    odd = await harness.client.get("/v1/auth/google/callback", params={"code": "made-up", "state": "é" * 43})
    assert odd.status_code == 400 and "state" in odd.json()["title"].lower()
    denied = await harness.client.get("/v1/auth/google/callback", params={"error": "access_denied"})
    assert denied.status_code == 401


async def test_id_token_with_another_nonce_is_refused(make_auth, provider, monkeypatch):
    """A code obtained for another login attempt (its ID token carries that attempt's nonce) does not log in here."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    harness = await make_auth(**google_settings(provider))
    subject = f"google-{uuid.uuid4().hex[:8]}"
    await _seed(provider, subject, {"email": "nonce@example.com", "email_verified": True})
    start = await harness.client.get("/v1/auth/google/start", params={"mode": "json"})
    state = parse_qs(urlsplit(start.json()["authorization_url"]).query)["state"][0]
    cache = harness.kernel.cache()
    saved = await cache.get(f"oidc:{state}", namespace="auth")
    await cache.set(f"oidc:{state}", {**saved, "nonce": "another-attempt"}, ttl=60, namespace="auth")
    async with httpx.AsyncClient() as browser:
        consent = await browser.post(start.json()["authorization_url"], data={"sub": subject})
    response = await harness.client.get(consent.headers["location"])
    assert response.status_code == 401 and "nonce" in response.json()["detail"]


async def test_redirect_mode_and_unconfigured(make_auth, provider, monkeypatch):
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    harness = await make_auth()
    assert (await harness.client.get("/v1/auth/google/start")).status_code == 404
    harness = await make_auth(**google_settings(provider))
    response = await harness.client.get("/v1/auth/google/start")
    assert response.status_code == 302 and response.headers["location"].startswith(f"{provider}/oauth2/authorize?")
    assert "bcf_oidc_state" in response.headers["set-cookie"] and "HttpOnly" in response.headers["set-cookie"]
