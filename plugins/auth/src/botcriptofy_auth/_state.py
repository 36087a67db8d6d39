"""The plugin's running state, kept in ``kernel.stash``: keys, peppers, ciphers and the password hasher."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botcriptofy import Kernel, PluginError, StashKey

from ._fields import FieldCipher, new_key_entry
from ._keys import KeyRing, load_keyring, persistent_secret
from ._passwords import Passwords
from ._rbac import Catalogue
from ._secrets import Peppers, new_pepper
from ._settings import AuthSettings

if TYPE_CHECKING:
    from ._oidc import OidcClient

PLUGIN = "auth"
CACHE_NAMESPACE = "auth"
PRINCIPALS_TAG = "auth:principals"


@dataclass
class AuthState:
    keyring: KeyRing
    peppers: Peppers
    cipher: FieldCipher
    passwords: Passwords
    oidc: OidcClient | None = None
    catalogue: Catalogue | None = None
    catalogue_generation: int = -1
    service_actors: dict[str, Any] = field(default_factory=dict)
    touched: dict[str, float] = field(default_factory=dict)
    # Credentials resolved in this worker: token or API key -> (cache key, cached entry the actor was built from, actor, expiry).
    resolved: dict[str, tuple[str, Any, Any, float]] = field(default_factory=dict)
    # GET /v1/me documents by cached caller: (caller, entitlements, (auth, permissions), encoded body).
    me_bodies: dict[int, tuple[Any, Any, Any, bytes]] = field(default_factory=dict)
    background: set[Any] = field(default_factory=set)
    reset_slots: Any = None  # an asyncio.Semaphore, made in the serving loop (password reset work)


STATE: StashKey[AuthState] = StashKey("auth.state")


def settings_of(kernel: Kernel) -> AuthSettings:
    settings = kernel.settings_for(PLUGIN)
    assert isinstance(settings, AuthSettings)
    return settings


def state_of(kernel: Kernel) -> AuthState:
    return kernel.stash[STATE]


def build_state(kernel: Kernel) -> AuthState:
    """Load every secret from the settings, or the development ones from the state dir; refuse weak set-ups in production."""
    settings = settings_of(kernel)
    production = kernel.env == "production"
    secrets_dir = kernel.state_dir / "auth"

    def refuse(key: str, what: str) -> PluginError:
        return PluginError(
            PLUGIN,
            f"auth.{key} is empty, and development secrets are refused in production.",
            hook="startup",
            fix=f"set BOTCRIPTOFY_AUTH__{key.upper()} (or {key} under [production.auth] in settings/.secrets.toml) to {what}.",
        )

    try:
        keyring = load_keyring(
            settings.signing_key,
            settings.retired_signing_keys,
            state_dir=kernel.state_dir,
            algorithm=settings.signing_algorithm,
            production=production,
        )
    except ValueError as error:
        if production and not settings.signing_key:
            raise refuse("signing_key", "a PEM Ed25519 or P-256 private key") from None
        raise PluginError(PLUGIN, str(error), hook="startup", fix="fix auth.signing_key.") from None

    pepper = settings.api_key_pepper
    if not pepper:
        if production:
            raise refuse("api_key_pepper", "at least 32 random bytes, base64")
        pepper = persistent_secret(secrets_dir / "api-key-pepper", new_pepper).strip()
    field_keys = list(settings.field_encryption_keys)
    if not field_keys:
        if production:
            raise refuse("field_encryption_keys", "a list like ['k1:<base64 of 32 random bytes>']")
        field_keys = [persistent_secret(secrets_dir / "field-encryption-key", lambda: new_key_entry("dev1")).strip()]
    return AuthState(
        keyring=keyring,
        peppers=Peppers(pepper, settings.retired_api_key_peppers),
        cipher=FieldCipher(field_keys),
        passwords=Passwords(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_cost,
            parallelism=settings.argon2_parallelism,
            concurrency=settings.hash_concurrency,
            queue_limit=settings.hash_queue_limit,
        ),
    )
