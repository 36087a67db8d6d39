"""The auth plugin's building blocks, without a database: keys, tokens, hashes, ciphers, TOTP, policy, settings."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from botcriptofy import ProblemError
from botcriptofy_auth import _totp
from botcriptofy_auth._fields import FieldCipher, FieldDecryptError, new_key_entry
from botcriptofy_auth._keys import InvalidToken, KeyRing, generate_private_key, load_keyring, persistent_secret, private_pem, thumbprint
from botcriptofy_auth._passwords import Passwords, check_policy, normalise_password
from botcriptofy_auth._rbac import DEPARTMENTS, customer_permissions, role_permissions, staff_permissions
from botcriptofy_auth._secrets import Peppers, new_api_key, parse_api_key
from botcriptofy_auth._settings import AuthSettings
from botcriptofy_auth._util import normalise_email

from .conftest import fullwidth

AUD, ISS = "botcriptofy-api", "botcriptofy"


def claims(**overrides):
    now = int(time.time())
    base = {
        "iss": ISS,
        "aud": AUD,
        "sub": "u1",
        "tid": "t1",
        "sid": "s1",
        "typ": "access",
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": "j",
    }
    base.update(overrides)
    return base


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.fixture(params=["EdDSA", "ES256"])
def ring(request):
    return KeyRing(generate_private_key(request.param))


def test_valid_token_verifies_and_is_remembered(ring):
    token = ring.sign(claims())
    assert ring.verify(token, audience=AUD, issuer=ISS, now=time.time())["sub"] == "u1"
    assert token in ring._verified  # the next request skips the signature check
    assert ring.verify(token, audience=AUD, issuer=ISS, now=time.time())["sub"] == "u1"


def test_alg_none_is_refused(ring):
    header = {"alg": "none", "kid": ring.kid, "typ": "at+jwt"}
    forged = f"{b64(header)}.{b64(claims(sub='admin'))}."
    with pytest.raises(InvalidToken, match="algorithm"):
        ring.verify(forged, audience=AUD, issuer=ISS, now=time.time())
    unsigned = jwt.encode(claims(), None, algorithm="none", headers={"kid": ring.kid})
    with pytest.raises(InvalidToken):
        ring.verify(unsigned, audience=AUD, issuer=ISS, now=time.time())


def test_hs256_with_the_public_key_as_secret_is_refused(ring):
    public = ring.signing.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = b64({"alg": "HS256", "kid": ring.kid, "typ": "JWT"})
    body = b64(claims(sub="admin"))
    import hashlib
    import hmac

    signature = base64.urlsafe_b64encode(hmac.new(public, f"{header}.{body}".encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    with pytest.raises(InvalidToken, match="algorithm"):
        ring.verify(f"{header}.{body}.{signature}", audience=AUD, issuer=ISS, now=time.time())


def test_tampered_payload_is_refused(ring):
    token = ring.sign(claims())
    header, _, signature = token.split(".")
    forged = f"{header}.{b64(claims(sub='someone-else'))}.{signature}"
    with pytest.raises(InvalidToken, match="signature"):
        ring.verify(forged, audience=AUD, issuer=ISS, now=time.time())


def test_expired_wrong_audience_wrong_issuer_unknown_kid(ring):
    with pytest.raises(InvalidToken, match="expired"):
        ring.verify(ring.sign(claims(exp=int(time.time()) - 60)), audience=AUD, issuer=ISS, now=time.time())
    with pytest.raises(InvalidToken, match="audience"):
        ring.verify(ring.sign(claims(aud="another-api")), audience=AUD, issuer=ISS, now=time.time())
    with pytest.raises(InvalidToken, match="issuer"):
        ring.verify(ring.sign(claims(iss="evil")), audience=AUD, issuer=ISS, now=time.time())
    other = KeyRing(generate_private_key("EdDSA"))
    with pytest.raises(InvalidToken, match="unknown signing key"):
        ring.verify(other.sign(claims()), audience=AUD, issuer=ISS, now=time.time())
    # Another key claiming our kid: the signature does not verify.
    impostor = jwt.encode(claims(), other.signing, algorithm=other.algorithm, headers={"kid": ring.kid})
    if other.algorithm == ring.algorithm:
        with pytest.raises(InvalidToken, match="signature"):
            ring.verify(impostor, audience=AUD, issuer=ISS, now=time.time())
    with pytest.raises(InvalidToken, match="not an access token"):
        ring.verify(ring.sign(claims(typ="refresh")), audience=AUD, issuer=ISS, now=time.time())
    with pytest.raises(InvalidToken, match="malformed"):
        ring.verify("not.a.jwt", audience=AUD, issuer=ISS, now=time.time())


def test_remembered_token_still_expires(ring):
    token = ring.sign(claims(exp=int(time.time()) + 2))
    ring.verify(token, audience=AUD, issuer=ISS, now=time.time())
    with pytest.raises(InvalidToken, match="expired"):
        ring.verify(token, audience=AUD, issuer=ISS, now=time.time() + 10)


def test_rotation_keeps_old_tokens_valid_and_publishes_both_keys():
    old = generate_private_key("EdDSA")
    old_ring = KeyRing(old)
    token = old_ring.sign(claims())
    new_ring = KeyRing(generate_private_key("ES256"), [old.public_key()])
    assert new_ring.verify(token, audience=AUD, issuer=ISS, now=time.time())["sub"] == "u1"
    jwks = new_ring.jwks()["keys"]
    assert {k["kid"] for k in jwks} == {new_ring.kid, old_ring.kid}
    assert {k["alg"] for k in jwks} == {"EdDSA", "ES256"}
    assert all("d" not in k for k in jwks)  # never a private member
    # The published JWK verifies with a generic JOSE library.
    published = next(k for k in jwks if k["kid"] == old_ring.kid)
    assert jwt.decode(token, jwt.PyJWK(published).key, algorithms=["EdDSA"], audience=AUD)["sub"] == "u1"


def test_kid_is_the_rfc7638_thumbprint():
    # RFC 8037 appendix A.3: the thumbprint of its Ed25519 test key.
    pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n"
    key = serialization.load_pem_public_key(pem.encode())
    assert thumbprint(key) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_dev_key_is_persisted_and_refused_in_production(tmp_path):
    first = load_keyring("", [], state_dir=tmp_path, algorithm="EdDSA", production=False)
    second = load_keyring("", [], state_dir=tmp_path, algorithm="EdDSA", production=False)
    assert first.kid == second.kid
    path = tmp_path / "auth" / "jwt-signing-key-ed25519.pem"
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError, match="BOTCRIPTOFY_AUTH__SIGNING_KEY"):
        load_keyring("", [], state_dir=tmp_path, algorithm="EdDSA", production=True)
    configured = load_keyring(private_pem(generate_private_key("ES256")), [], state_dir=tmp_path, algorithm="EdDSA", production=True)
    assert configured.algorithm == "ES256"


def test_persistent_secret_race_has_one_winner(tmp_path):
    values, path = [], tmp_path / "secret"
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        barrier.wait()
        values.append(persistent_secret(path, lambda: f"value-{i}"))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(values)) == 1


# -- passwords ----------------------------------------------------------------------------


async def test_argon2id_hash_verify_and_rehash():
    weak = Passwords(time_cost=1, memory_cost=1024, parallelism=1, concurrency=2)
    stored = await weak.hash("correct horse battery staple")
    assert stored.startswith("$argon2id$")
    assert await weak.verify(stored, "correct horse battery staple") == (True, None)
    assert await weak.verify(stored, "wrong") == (False, None)
    assert await weak.verify(None, "anything") == (False, None)
    assert await weak.verify("garbage", "anything") == (False, None)
    weak.configure(time_cost=2, memory_cost=2048, parallelism=1)
    matches, upgraded = await weak.verify(stored, "correct horse battery staple")
    assert matches and upgraded is not None and "m=2048,t=2" in upgraded
    weak.close()


async def test_hashing_runs_off_the_event_loop_behind_the_cap():
    passwords = Passwords(time_cost=2, memory_cost=8192, parallelism=1, concurrency=2)
    ticks = 0
    stop = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    running = 0
    peak = 0
    lock = threading.Lock()
    hasher = passwords._hasher

    class Counting:
        def hash(self, password):
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            try:
                return hasher.hash(password)
            finally:
                with lock:
                    running -= 1

    passwords._hasher = Counting()  # type: ignore[assignment]
    task = asyncio.create_task(ticker())
    await asyncio.gather(*(passwords.hash(f"password number {i}") for i in range(8)))
    stop.set()
    await task
    passwords.close()
    assert peak == 2  # two run in parallel, never more: the semaphore caps concurrent hashes (and so their memory)
    assert ticks > 5  # the loop kept running while hashing


def test_password_policy_names_the_field():
    check_policy("a sufficiently long passphrase", min_length=12, max_length=256)
    with pytest.raises(ProblemError) as short:
        check_policy("short", min_length=12, max_length=256)
    assert short.value.status == 422
    assert short.value.errors[0]["field"] == "password"
    assert "at least 12 characters" in short.value.detail
    for bad in ("password1234", "aaaaaaaaaaaaaaaa", "ana.silva-secret-123"):
        with pytest.raises(ProblemError):
            check_policy(bad, min_length=12, max_length=256, email="ana.silva@example.com")
    with pytest.raises(ProblemError) as named:
        check_policy("x" * 300, min_length=12, max_length=256, field="new_password")
    assert named.value.errors[0]["field"] == "new_password"


def test_password_is_nfkc_normalised():
    assert normalise_password(fullwidth("cafe")) == "cafe"
    assert normalise_password("cafe\u0301") == "café"


# -- e-mail ---------------------------------------------------------------------------------


def test_email_normalisation():
    assert normalise_email("  Ana.Silva@Example.COM ") == "ana.silva@example.com"
    assert normalise_email(fullwidth("ANA") + "@" + fullwidth("example") + ".com") == "ana@example.com"  # full-width forms (NFKC)
    assert normalise_email("josé@exemplo.com.br") == normalise_email("jose\u0301@exemplo.com.br")
    for bad in (
        "no-at-sign",
        "a@b",
        "@example.com",
        "a b@example.com",
        "a@exa mple.com",
        "a\u200b@example.com",
        "a@@example.com",
        "x" * 250 + "@example.com",
        "a@-example.com",
        "'; DROP TABLE auth_users; --@example.com",
    ):
        with pytest.raises(ValueError):
            normalise_email(bad)


# -- opaque secrets -------------------------------------------------------------------------


def test_api_keys_and_peppers():
    key, prefix = new_api_key()
    assert parse_api_key(key) == prefix and key.startswith(f"bcf_{prefix}_")
    assert parse_api_key(key + "x") is None and parse_api_key("bcf_zz_abc") is None
    peppers = Peppers("current", ["old"])
    stored = peppers.hash("api-key", key)
    assert stored != Peppers("other").hash("api-key", key)  # keyed: the database alone cannot check a guess
    assert peppers.hash("refresh", key) != stored  # domain-separated by purpose
    assert Peppers("new", ["current"]).candidates("api-key", key)[1] == stored  # a retired pepper still matches


# -- field encryption -----------------------------------------------------------------------


def test_field_encryption_roundtrip_binding_and_rotation():
    k1, k2 = new_key_entry("k1"), new_key_entry("k2")
    cipher = FieldCipher([k1])
    stored = cipher.encrypt("+55 11 91234-5678", context="auth_users.phone:u1")
    assert stored.startswith("v1.k1.") and "91234" not in stored
    assert cipher.decrypt(stored, context="auth_users.phone:u1") == "+55 11 91234-5678"
    with pytest.raises(FieldDecryptError, match="another record"):
        cipher.decrypt(stored, context="auth_users.phone:u2")  # copied to another row
    with pytest.raises(FieldDecryptError, match="another record"):
        cipher.decrypt(stored[:-2] + ("AA" if stored[-2:] != "AA" else "BB"), context="auth_users.phone:u1")
    rotated = FieldCipher([k2, k1])
    assert rotated.needs_rotation(stored)
    again = rotated.encrypt(rotated.decrypt(stored, context="auth_users.phone:u1"), context="auth_users.phone:u1")
    assert again.startswith("v1.k2.") and not rotated.needs_rotation(again)
    with pytest.raises(FieldDecryptError, match="no longer configured"):
        FieldCipher([k2]).decrypt(stored, context="auth_users.phone:u1")


# -- TOTP -----------------------------------------------------------------------------------


def test_totp_accepts_once_within_drift():
    secret = _totp.new_secret()
    moment = 1_800_000_000.0
    code = _totp.code_for(secret, now=moment)
    step = _totp.accept(secret, code, last_step=None, now=moment)
    assert step is not None
    assert _totp.accept(secret, code, last_step=step, now=moment) is None  # replay refused
    assert _totp.accept(secret, code, last_step=None, now=moment + 30) == step  # one step of drift
    assert _totp.accept(secret, code, last_step=None, now=moment + 120) is None
    assert _totp.accept(secret, "12345", last_step=None, now=moment) is None
    assert _totp.accept(secret, "abcdef", last_step=None, now=moment) is None
    assert "otpauth://totp/" in _totp.provisioning_uri(secret, account="ana@example.com", issuer="BotCriptoFy")


# -- RBAC -----------------------------------------------------------------------------------


def test_roles_grant_cumulative_department_permissions():
    assert len(DEPARTMENTS) == 10
    declared = {"finance:member": ["billing:refund"]}  # as the billing plugin declares it (build_catalogue merges it)
    viewer = role_permissions("finance", "viewer", declared)
    member = role_permissions("finance", "member", declared)
    manager = role_permissions("finance", "manager", declared)
    assert "finance:read" in viewer and "finance:act" not in viewer and "billing:refund" not in viewer
    assert viewer < member and "billing:refund" in member and "finance:act" in member
    assert member < manager and "finance:*" in manager
    assert "configuration:manage" not in staff_permissions({"configuration": "member"})
    assert "configuration:*" in staff_permissions({"configuration": "manager"})
    extra = {"finance:viewer": ["reports:export"]}
    assert "reports:export" in role_permissions("finance", "manager", extra)
    assert not any(p.split(":")[0] in DEPARTMENTS for p in customer_permissions("trader"))  # customers never hold staff namespaces
    assert "subscription:*" not in customer_permissions("influencer")  # influencers: no billing


# -- settings -------------------------------------------------------------------------------


def test_settings_refuse_bad_secrets_with_the_key_named():
    AuthSettings()
    with pytest.raises(ValidationError, match="signing_key"):
        AuthSettings(signing_key="not a pem")
    with pytest.raises(ValidationError, match="field_encryption_keys"):
        AuthSettings(field_encryption_keys=["k1:dG9vIHNob3J0"])
    with pytest.raises(ValidationError, match="appears twice"):
        AuthSettings(field_encryption_keys=[new_key_entry("k1"), new_key_entry("k1")])
    with pytest.raises(ValidationError, match="extra_grants"):
        AuthSettings(extra_grants={"finance:owner": ["x:y"]})
    with pytest.raises(ValidationError, match="super-admin"):
        AuthSettings(extra_grants={"trader": ["*"]})
    with pytest.raises(ValidationError, match="retired_signing_keys"):
        AuthSettings(retired_signing_keys=["nope"])
