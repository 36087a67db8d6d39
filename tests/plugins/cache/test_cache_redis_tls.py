"""``rediss://`` as docs/operations.md shows it: the cache and the rate limiter over TLS, verifying the server.

The test makes a CA and a server certificate for 127.0.0.1, starts a TLS-only redis-server of its
own, and connects with ``ssl_cert_reqs=required&ssl_ca_certs=...``. A worker that does not trust
the server's certificate does not talk to it: the cache serves without Redis instead of failing.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import shutil
import subprocess
from pathlib import Path

import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from botcriptofy_ratelimit import RateLimitSettings
from botcriptofy_ratelimit._backend import RedisBackend
from botcriptofy_ratelimit._core import GCRA, NO_PENALTY, Check, interval_of
from botcriptofy_ratelimit._metrics import Metrics

from .conftest import free_port


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def make_certificates(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / f"{name}-ca.pem", directory / f"{name}-server.pem", directory / f"{name}-server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, server_key)
    return ca_path, cert_path, key_path


async def test_rediss_urls_verify_the_server_and_carry_the_cache_and_the_limiter(tmp_path, make_cache):
    ca, cert, key = make_certificates(tmp_path, "redis")
    stranger_ca, _, _ = make_certificates(tmp_path, "stranger")
    port = free_port()
    process = subprocess.Popen(
        [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(ca),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
    try:
        probe = aioredis.Redis.from_url(url)
        try:
            for _ in range(250):
                try:
                    if await probe.ping():
                        break
                except Exception:
                    await asyncio.sleep(0.02)
        finally:
            await probe.aclose()

        one = await make_cache(backend="two-layer", redis_url=url, prefix="tls:")
        two = await make_cache(backend="two-layer", redis_url=url, prefix="tls:")
        assert one.redis_available and two.redis_available
        await one.set("k", {"over": "tls"})
        assert await two.get("k") == {"over": "tls"}

        backend = RedisBackend(RateLimitSettings(backend="redis", redis_url=url, key_prefix="tls:rl:"), Metrics())
        await backend.start()
        try:
            check = Check(GCRA, "tls:rl:ip:203.0.113.9", interval_of(60, 60), 1)
            assert [(await backend.hit([check], NO_PENALTY)).allowed for _ in range(2)] == [True, False]
            assert not backend.degraded
        finally:
            await backend.close()

        # A worker that does not trust this server's certificate never talks to it, and still answers.
        untrusted = await make_cache(backend="two-layer", redis_url=url.replace(str(ca), str(stranger_ca)), prefix="tls:")
        assert not untrusted.redis_available
        assert await untrusted.get_or_set("k", lambda: "from the loader") == "from the loader"
        plain = await make_cache(backend="two-layer", redis_url=f"redis://127.0.0.1:{port}/0", prefix="tls:", redis_timeout=0.5)
        assert not plain.redis_available  # no clear-text access to a TLS-only server
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 10)
