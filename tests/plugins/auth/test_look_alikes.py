"""Look-alike e-mail addresses (Unicode TS #39): a dotless i (U+0131) or a Cyrillic i (U+0456) cannot imitate an address."""

from __future__ import annotations

import pytest

from .conftest import STRONG_PASSWORD, signup

REFUSED = {
    "\u0131mran@example.com": "DOTLESS I",  # Latin only, but reads as imran
    "\u0456van@example.com": "CYRILLIC",  # ivan with a Cyrillic i
    "p\u0430ypal@example.com": "mixes",  # paypal with a Cyrillic a
    "ana@ex\u0430mple.com": "domain",  # a look-alike domain
}
ACCEPTED = ["jos\u00e9@example.com", "m\u00fcller@example.com", "\u0438\u0432\u0430\u043d@example.com", "ana.silva+bots@example.com"]


@pytest.mark.parametrize("email", sorted(REFUSED))
async def test_look_alike_addresses_are_refused_naming_the_field(make_auth, email):
    harness = await make_auth()
    await signup(harness.client, "imran@example.com")
    response = await harness.client.post(
        "/v1/auth/signup", json={"email": email, "password": STRONG_PASSWORD, "name": "Look Alike", "account_type": "trader"}
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["errors"][0]["field"] == "email"
    assert REFUSED[email].lower() in problem["errors"][0]["message"].lower()


@pytest.mark.parametrize("email", ACCEPTED)
def test_single_script_addresses_are_accepted(email):
    from botcriptofy_auth._schemas import SignupIn

    parsed = SignupIn(email=email, password=STRONG_PASSWORD, name="Ana", account_type="trader")
    assert parsed.email == email


async def test_staff_accounts_refuse_look_alikes_too(make_auth):
    from botcriptofy_auth._schemas import StaffIn

    with pytest.raises(ValueError, match="DOTLESS I"):
        StaffIn(email="adm\u0131n@botcriptofy.example", name="x", password=STRONG_PASSWORD, roles={})


_CHILD = r"""
import json, sys
from botcriptofy_auth._schemas import SignupIn

import botcriptofy_auth, botcriptofy_storage  # the plugin as a worker imports it

out = {"imported": "confusable_homoglyphs" in sys.modules}
SignupIn(email="ana.silva@example.com", password=sys.argv[1], name="Ana", account_type="trader")
out["after_ascii"] = "confusable_homoglyphs" in sys.modules
SignupIn(email="jos\u00e9@example.com", password=sys.argv[1], name="Jose", account_type="trader")  # Latin, not ASCII
out["after_latin"] = "confusable_homoglyphs" in sys.modules
try:
    SignupIn(email="p\u0430ypal@example.com", password=sys.argv[1], name="Pay", account_type="trader")
except ValueError as error:
    out["refused"] = "mixes" in str(error)
print(json.dumps(out))
"""


def test_the_unicode_tables_load_only_for_a_non_ascii_address():
    """confusable_homoglyphs holds 16 MB of tables: a worker that never sees a non-ASCII address never loads them."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _CHILD, STRONG_PASSWORD], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "imported": False,
        "after_ascii": False,
        "after_latin": True,
        "refused": True,
    }
