"""The whole API, every first-party plugin enabled, fuzzed from /openapi.json.

No 5xx for any input, and every response conforms to the document: a status it declares, the
content type and the schema it declares. The stateful phase chains operations through the links
schemathesis infers (Location headers, dependency analysis). Examples are bounded so it stays fast.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyotp
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


CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
# schemathesis reads its configuration from the working directory.
FUZZ_CONFIG = """\
[phases.stateful]
max-steps = 6

[phases.stateful.generation]
max-examples = 15

[phases.stateful.inference]
algorithms = ["location-headers", "dependency-analysis"]
"""


@pytest.mark.slow
@pytest.mark.timeout(480)  # ~1 min on a quiet machine; the shared machine under load stretches it
def test_fuzzed_api_answers_no_server_error_and_conforms_to_its_document(tmp_path):
    settings = tmp_path / "settings"
    settings.mkdir()
    (settings / "settings.toml").write_text(SETTINGS.format(state=tmp_path / "var"))
    port = free_port()
    # A webhook secret makes the webhook verify signatures (400 for forgeries) instead of answering
    # 503 "not configured"; the routes that call Stripe itself (Checkout, portal, plan changes)
    # answer 503 without keys and are covered against localstripe in tests/plugins/billing.
    env = {**os.environ, "BOTCRIPTOFY_BILLING__WEBHOOK_SECRET": "whsec_fuzz"}
    # The log goes to a file: a pipe nobody reads during the run fills up and stalls the server.
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log_file:
        server = subprocess.Popen(
            [str(BIN / "botcriptofy"), "--settings", str(settings), "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # every plugin, the embedded Temporal server included, on a loaded machine
        while True:
            try:
                if httpx.get(f"{base}/-/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None:
                pytest.fail(f"the server exited with {server.returncode}: {log_path.read_text(errors='replace')[-4000:]}")
            assert time.monotonic() < deadline, "the server was not ready within 240 s"
            time.sleep(0.1)
        # An API key, not a session token: fuzzed logout calls would revoke a session and leave the
        # rest of the run unauthenticated. Approved influencers are on the Internal plan, which allows keys.
        credentials = {"email": "fuzz@example.com", "password": "correct horse battery staple"}
        signup = httpx.post(f"{base}/v1/auth/signup", json={**credentials, "name": "Fuzz", "account_type": "influencer"})
        assert signup.status_code == 201, signup.text
        session = {"Authorization": f"Bearer {signup.json()['tokens']['access_token']}"}
        # Influencers start on Free: the super-admin (bootstrapped by the CLI) approves this one, and
        # billing moves it to the Internal plan when the approval event reaches it (outbox).
        made = subprocess.run(
            [
                str(BIN / "botcriptofy"),
                "--settings",
                str(settings),
                "users",
                "create-admin",
                "--email",
                "owner@example.com",
                "--name",
                "Owner",
                "--password-stdin",
            ],
            cwd=tmp_path,
            env=env,
            input=credentials["password"] + "\n",
            capture_output=True,
            text=True,
            check=True,
        )
        secret = next(line.split(":", 1)[1].strip() for line in made.stdout.splitlines() if line.strip().startswith("secret:"))
        # API keys need a verified address: support marks it (the e-mail flow is tested in tests/plugins/auth).
        subprocess.run(
            [str(BIN / "botcriptofy"), "--settings", str(settings), "users", "verify-email", "--email", credentials["email"]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        owner = httpx.post(
            f"{base}/v1/auth/login", json={**credentials, "email": "owner@example.com", "totp_code": pyotp.TOTP(secret).now()}
        )
        assert owner.status_code == 200, owner.text
        approved = httpx.post(
            f"{base}/v1/admin/influencers/{signup.json()['tenant']['id']}/approve",
            headers={"Authorization": f"Bearer {owner.json()['access_token']}"},
        )
        assert approved.status_code == 200, approved.text
        deadline = time.monotonic() + 30
        while (me := httpx.get(f"{base}/v1/me", headers=session).json())["plan"]["name"] != "internal":
            assert time.monotonic() < deadline, me
            time.sleep(0.1)
        permissions = me["permissions"]
        created = httpx.post(f"{base}/v1/auth/api-keys", headers=session, json={"name": "fuzz", "scopes": permissions})
        assert created.status_code == 201, created.text
        api_key = created.json()["key"]
        (tmp_path / "schemathesis.toml").write_text(FUZZ_CONFIG)
        fuzz = subprocess.run(
            [
                str(BIN / "schemathesis"),
                "run",
                f"{base}/openapi.json",
                "--checks",
                CHECKS,
                "--phases",
                "examples,coverage,fuzzing,stateful",
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
        server.wait(timeout=15)
        log = log_path.read_text(errors="replace")
    assert fuzz.returncode == 0, fuzz.stdout[-6000:]
    assert "Traceback" not in log, log[-6000:]
