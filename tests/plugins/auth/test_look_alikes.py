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
