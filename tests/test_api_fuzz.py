"""The whole API, every first-party plugin enabled, fuzzed from /openapi.json: no 5xx for any input."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

BIN = Path(sys.executable).parent
SETTINGS = """\
[default.kernel]
state_dir = "{state}"

[default.ratelimit]
enforce = false

[default.auth]
argon2_time_cost = 1
argon2_memory_cost = 1024
argon2_parallelism = 1
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_fuzzed_api_answers_no_server_error(tmp_path):
    settings = tmp_path / "settings"
    settings.mkdir()
    (settings / "settings.toml").write_text(SETTINGS.format(state=tmp_path / "var"))
    port = free_port()
    # A webhook secret makes the webhook verify signatures (400 for forgeries) instead of answering
    # 503 "not configured"; the routes that call Stripe itself (Checkout, portal, plan changes)
    # answer 503 without keys and are covered against localstripe in tests/plugins/billing.
    env = {**os.environ, "BOTCRIPTOFY_BILLING__WEBHOOK_SECRET": "whsec_fuzz"}
    server = subprocess.Popen(
        [str(BIN / "botcriptofy"), "--settings", str(settings), "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/-/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        # An API key, not a session token: fuzzed logout calls would revoke a session and leave the
        # rest of the run unauthenticated. Influencers are on the Internal plan, which allows keys.
        credentials = {"email": "fuzz@example.com", "password": "correct horse battery staple"}
        signup = httpx.post(f"{base}/v1/auth/signup", json={**credentials, "name": "Fuzz", "account_type": "influencer"})
        assert signup.status_code == 201, signup.text
        session = {"Authorization": f"Bearer {signup.json()['tokens']['access_token']}"}
        # Billing moves an influencer to the Internal plan when the sign-up event reaches it (outbox).
        deadline = time.monotonic() + 30
        while (me := httpx.get(f"{base}/v1/me", headers=session).json())["plan"]["name"] != "internal":
            assert time.monotonic() < deadline, me
            time.sleep(0.1)
        permissions = me["permissions"]
        created = httpx.post(f"{base}/v1/auth/api-keys", headers=session, json={"name": "fuzz", "scopes": permissions})
        assert created.status_code == 201, created.text
        api_key = created.json()["key"]
        fuzz = subprocess.run(
            [
                str(BIN / "schemathesis"),
                "run",
                f"{base}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "25",
                "--seed",
                "20261125",
                "--workers",
                "1",
                "--exclude-path-regex",
                "^/v1/billing/(checkout|portal|subscription/(cancel|change|reactivate))$",
                "-H",
                f"X-API-Key: {api_key}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,  # schemathesis keeps its example database in the working directory
        )
    finally:
        server.terminate()
        log = server.communicate(timeout=15)[0].decode()
    assert fuzz.returncode == 0, fuzz.stdout[-6000:]
    assert "Traceback" not in log, log[-6000:]
