"""The ``[default.auth]`` settings section.

Setting names avoid the words the kernel masks as secrets (token, password, api_key, ...) unless
they hold one: ``botcriptofy config show`` masks exactly the secrets.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from botcriptofy import PluginSettings, SettingsSchema

from ._rbac import DEPARTMENTS, ROLES, validate_extra_grants


class AuthSettings(PluginSettings):
    # -- tokens -------------------------------------------------------------------------------
    issuer: str = Field("botcriptofy", min_length=1, description="The 'iss' claim of access tokens.")
    audience: str = Field("botcriptofy-api", min_length=1, description="The 'aud' claim of access tokens.")
    access_ttl: int = Field(900, ge=30, le=86_400, description="Access token lifetime, seconds.")
    refresh_ttl: int = Field(14 * 86_400, ge=60, description="Refresh token lifetime from its issue (sliding), seconds.")
    session_max_age: int = Field(90 * 86_400, ge=60, description="Absolute lifetime of a login session (a refresh token family), seconds.")
    signing_key: str = Field(
        "",
        description="SECRET. PEM private key (Ed25519 or P-256) that signs access tokens. "
        "Empty: a development key generated under the state dir (refused in production).",
    )
    retired_signing_keys: list[str] = Field(
        default_factory=list,
        description="SECRET. PEM keys (private or public) whose tokens "
        "are still accepted and whose public keys stay in the JWKS, for rotation.",
    )
    signing_algorithm: Literal["EdDSA", "ES256"] = Field("EdDSA", description="Algorithm of the generated development key.")
    # -- passwords ----------------------------------------------------------------------------
    pw_min_length: int = Field(12, ge=8, le=128, description="Shortest accepted password, characters.")
    pw_max_length: int = Field(256, ge=16, le=1024, description="Longest accepted password, characters.")
    argon2_time_cost: int = Field(3, ge=1, le=20)
    argon2_memory_cost: int = Field(65_536, ge=1_024, le=1_048_576, description="KiB per hash.")
    argon2_parallelism: int = Field(4, ge=1, le=16)
    hash_concurrency: int = Field(2, ge=1, le=64, description="Password hashes computed at once (each takes argon2_memory_cost).")
    hash_queue_limit: int = Field(
        16, ge=0, le=10_000, description="Password checks that may wait for a turn; past it a login answers 503 with Retry-After."
    )
    # -- brute force --------------------------------------------------------------------------
    lockout_threshold: int = Field(
        5, ge=1, description="Failed logins for one account from one address within lockout_window before that address must wait."
    )
    lockout_window: int = Field(900, ge=1, description="Seconds over which failed logins are counted.")
    lockout_duration: int = Field(
        900, ge=1, description="Seconds an account stays guarded after account_failure_ceiling (known address or TOTP needed)."
    )
    login_delay_base: float = Field(2.0, gt=0, le=3600, description="First wait of a throttled address, seconds; doubles per failure.")
    login_delay_max: float = Field(900.0, gt=0, le=86_400, description="Longest wait of a throttled address, seconds.")
    address_failure_threshold: int = Field(
        20, ge=1, description="Failed logins from one address (any accounts) within lockout_window before it must wait."
    )
    account_failure_ceiling: int = Field(
        50,
        ge=1,
        description="Failed logins for one account from all addresses within lockout_window that guard it for lockout_duration: "
        "then only an address the owner used before, a TOTP code, or a staff unlock logs in.",
    )
    login_ip_limit: int = Field(30, ge=1, description="Login attempts per IP per minute (through the rate limiter plugin).")
    login_ip_burst: int = Field(10, ge=1)
    trusted_proxies: list[str] = Field(default_factory=list, description="Proxy addresses whose X-Forwarded-For is believed.")
    # -- accounts -----------------------------------------------------------------------------
    allow_signup: bool = Field(True, description="Accept POST /v1/auth/signup.")
    staff_totp_required: bool = Field(
        False, description="Refuse staff logins until the staff member has enrolled TOTP (the super-admin always needs TOTP)."
    )
    totp_issuer: str = Field("BotCriptoFy", min_length=1)
    extra_grants: dict[str, list[str]] = Field(
        default_factory=dict, description="Extra permissions by 'trader', 'influencer', 'company' or '<department>:<role>'."
    )
    service_principals: dict[str, str] = Field(
        default_factory=dict,
        description="Plugin or agent name -> '<department>:<role>': the service principal its event handlers run as "
        "(kernel.service_actor). Unmapped names run with no permissions.",
    )
    principal_cache_ttl: float = Field(60.0, ge=0, description="Seconds a resolved caller (user, roles, tenant) stays cached.")
    strict_revocation: bool = Field(
        False,
        description="Also read the revocation marker on every request: with the two-layer "
        "cache a logout then holds on the very next request instead of within the cache's pub/sub "
        "delay (milliseconds), at one Redis read per request.",
    )
    # -- account e-mails ----------------------------------------------------------------------
    account_link_url: str = Field(
        "",
        description="Front-end page the account e-mails link to: <url>/verify-email?token=..., /reset-password, /confirm-email-change, "
        "/review-email-change (confirm or cancel). Empty: the e-mail carries the token and the API call to make.",
    )
    email_verification_ttl: int = Field(3 * 86_400, ge=60, le=30 * 86_400, description="Seconds an e-mail verification link stays valid.")
    password_reset_ttl: int = Field(3_600, ge=60, le=86_400, description="Seconds a password reset link stays valid.")
    email_change_ttl: int = Field(86_400, ge=60, le=7 * 86_400, description="Seconds both links of an e-mail change stay valid.")
    account_mail_interval: float = Field(
        60.0, ge=0, description="Seconds between two account e-mails of one kind to one address (resend, reset requests)."
    )
    account_mail_daily_cap: int = Field(10, ge=1, description="Account e-mails of one kind to one address per 24 hours.")
    # -- API keys -----------------------------------------------------------------------------
    api_key_pepper: str = Field(
        "",
        description="SECRET. HMAC key of stored API key hashes (and refresh token hashes). "
        "Empty: a development pepper under the state dir (refused in production).",
    )
    retired_api_key_peppers: list[str] = Field(default_factory=list, description="SECRET. Earlier peppers, still accepted.")
    apikey_default_days: int = Field(90, ge=1)
    apikey_max_days: int = Field(365, ge=1)
    apikey_touch_interval: float = Field(60.0, ge=0, description="Seconds between writes of an API key's last-used time.")
    # -- field encryption ---------------------------------------------------------------------
    field_encryption_keys: list[str] = Field(
        default_factory=list,
        description="SECRET. 'key_id:base64 of 32 bytes' entries; the "
        "first encrypts, all decrypt. Empty: a development key under the state dir.",
    )
    # -- Google login -------------------------------------------------------------------------
    google_client_id: str = Field("", description="OAuth client id; empty disables Google login.")
    google_client_secret: str = Field("", description="SECRET. OAuth client secret.")
    google_discovery_url: str = Field("https://accounts.google.com/.well-known/openid-configuration")
    google_redirect_uri: str = Field("", description="Absolute callback URL registered with Google; empty: derived from the request.")
    google_signup: bool = Field(True, description="Create a trader account for a verified Google email with no account yet.")
    oidc_cookie_secure: bool = Field(True, description="Mark the login-state cookie Secure (turn off only for plain-http development).")
    oidc_success_redirect: str = Field(
        "", description="Where the browser goes after Google login, tokens in the URL fragment; empty: the callback answers JSON."
    )

    @field_validator("extra_grants")
    @classmethod
    def _grants(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        validate_extra_grants(value)
        return value

    @field_validator("service_principals")
    @classmethod
    def _service_principals(cls, value: dict[str, str]) -> dict[str, str]:
        for name, target in value.items():
            department, _, role = target.partition(":")
            if department not in DEPARTMENTS or role not in ROLES:
                raise ValueError(
                    f"'{name}' = '{target}' is not '<department>:<role>' (departments: {', '.join(DEPARTMENTS)}; roles: {', '.join(ROLES)})"
                )
        return value

    @field_validator("field_encryption_keys")
    @classmethod
    def _field_keys(cls, value: list[str]) -> list[str]:
        from ._fields import parse_key_entry

        seen: set[str] = set()
        for position, entry in enumerate(value):
            key_id, _ = parse_key_entry(entry, position)
            if key_id in seen:
                raise ValueError(f"key id '{key_id}' appears twice")
            seen.add(key_id)
        return value

    @field_validator("signing_key")
    @classmethod
    def _signing_key(cls, value: str) -> str:
        if value:
            from ._keys import load_private_key

            load_private_key(value)
        return value

    @field_validator("retired_signing_keys")
    @classmethod
    def _retired(cls, value: list[str]) -> list[str]:
        from ._keys import load_public_key

        for position, pem in enumerate(value):
            try:
                load_public_key(pem)
            except ValueError as error:
                raise ValueError(f"entry {position}: {error}") from None
        return value


LIVE = frozenset(
    {
        "access_ttl",
        "refresh_ttl",
        "session_max_age",
        "pw_min_length",
        "pw_max_length",
        "argon2_time_cost",
        "argon2_memory_cost",
        "argon2_parallelism",
        "hash_queue_limit",
        "lockout_threshold",
        "lockout_window",
        "lockout_duration",
        "login_delay_base",
        "login_delay_max",
        "address_failure_threshold",
        "account_failure_ceiling",
        "login_ip_limit",
        "login_ip_burst",
        "trusted_proxies",
        "allow_signup",
        "staff_totp_required",
        "totp_issuer",
        "extra_grants",
        "service_principals",
        "principal_cache_ttl",
        "strict_revocation",
        "account_link_url",
        "email_verification_ttl",
        "password_reset_ttl",
        "email_change_ttl",
        "account_mail_interval",
        "account_mail_daily_cap",
        "apikey_default_days",
        "apikey_max_days",
        "apikey_touch_interval",
        "google_client_id",
        "google_client_secret",
        "google_discovery_url",
        "google_redirect_uri",
        "google_signup",
        "oidc_cookie_secure",
        "oidc_success_redirect",
    }
)

SCHEMA = SettingsSchema(model=AuthSettings, live=LIVE)
