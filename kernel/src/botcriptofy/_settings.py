"""Settings: Dynaconf layering, validation against every plugin's schema, and error locations."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dynaconf import Dynaconf
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from ._errors import ConfigError
from ._util import flatten

ENVVAR_PREFIX = "BOTCRIPTOFY"
SETTINGS_FILES = ("settings.toml", "settings.local.toml")
SECRETS_FILE = ".secrets.toml"
ENVIRONMENTS = ("development", "testing", "production")
# Keys Dynaconf (or the kernel's own environment variables) put into the settings object.
_NOT_SETTINGS = {"env", "load_dotenv", "settings_dir", "environments", "envvar_prefix", "settings_file", "settings_files"}
_SECRET_KEY = re.compile(r"(secret|password|passwd|token|api_key|private_key|encryption_key|signing_key)", re.I)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)")


class PluginSettings(BaseModel):
    """Base class for plugin settings models: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


OperationsAccess = Literal["public", "loopback", "token", "permission"]


class KernelSettings(PluginSettings):
    """The ``[kernel]`` section."""

    title: str = "BotCriptoFy"
    state_dir: str = Field("var", description="Where the kernel keeps its state (configuration history).")
    max_body_bytes: int = Field(1024 * 1024, ge=1024, description="Largest request body a declared route reads.")
    drain_timeout: float = Field(30.0, gt=0, description="Seconds an old generation may keep serving before its plugins stop.")
    stop_timeout: float = Field(30.0, gt=0, description="Seconds one plugin's shutdown may take before it is abandoned (logged).")
    admin_without_auth: Literal["loopback", "deny"] = Field(
        "loopback", description="Who may use /v1/admin/* while no identity plugin is enabled."
    )
    log_level: str = "INFO"
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks of reverse proxies whose X-Forwarded-For/-Proto headers are honoured (default: none). "
        "Applies at the next restart.",
    )
    start_retry_initial: float = Field(1.0, gt=0, description="Seconds before retrying a plugin that failed to start at boot.")
    start_retry_max: float = Field(60.0, gt=0, description="Longest delay between retries (the delay doubles each time).")
    lazy_formats: bool = Field(
        False,
        description="Let settings files on disk use Dynaconf's lazy formats and converters (@format, @jinja, @read_file, @get, @int, …). "
        "Off: such a value is refused. Settings sent over the API or the CLI never use them.",
    )

    # -- HTTP edge: security headers, CORS, operational endpoints, idempotency (see docs/operations.md) --
    hsts: Literal["tls", "always", "off"] = Field(
        "tls", description="Send Strict-Transport-Security: on requests served over TLS (tls), on every response (always), or never."
    )
    hsts_max_age: int = Field(31_536_000, ge=0, description="max-age of Strict-Transport-Security, in seconds.")
    referrer_policy: str = Field("no-referrer", description="The Referrer-Policy header on every response.")
    content_security_policy: str = Field(
        "default-src 'none'; frame-ancestors 'none'",
        description="The Content-Security-Policy header on responses that do not set their own.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed to call the API from a browser (CORS); empty turns CORS off."
    )
    cors_allow_credentials: bool = Field(False, description="Let browsers send cookies and credentials cross-origin (CORS).")
    operations_access: list[OperationsAccess] = Field(
        default_factory=lambda: list[OperationsAccess](["public"]),
        description="Who may read /metrics, /-/plugins and the detailed /-/ready: any of the listed ways grants access.",
    )
    operations_token: SecretStr = Field(
        SecretStr(""), description="The token for operations_access 'token' (Authorization: Bearer or X-Operations-Token)."
    )
    operations_permission: str = Field("configuration:read", description="The permission for operations_access 'permission'.")
    idempotency_ttl: float = Field(86_400.0, gt=0, description="Seconds an Idempotency-Key and its response are kept.")
    idempotency_lease: float = Field(
        60.0, gt=0, description="Seconds a request in progress holds its Idempotency-Key before a retry may take it over."
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (for example 10.0.0.5 or 10.0.0.0/24)") from None
        return value


class PluginsSection(PluginSettings):
    """The ``[plugins]`` section."""

    disabled: list[str] = Field(default_factory=list, description="Installed plugins to keep switched off.")


RESERVED_SECTIONS: dict[str, type[PluginSettings]] = {"kernel": KernelSettings, "plugins": PluginsSection}


def _lower(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k).lower(): _lower(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lower(v) for v in value]
    return value


def mask_secrets(data: Any, key: str = "") -> Any:
    """Return ``data`` with secret-looking values and URL passwords replaced by ``***``."""
    if isinstance(data, dict):
        return {k: mask_secrets(v, k) for k, v in data.items()}
    if isinstance(data, list):
        return [mask_secrets(v, key) for v in data]
    if key and _SECRET_KEY.search(key) and data not in (None, ""):
        return "***"
    if isinstance(data, str):
        return _URL_PASSWORD.sub(r"\1***\3", data)
    return data


@dataclass(frozen=True)
class RawConfig:
    """A loaded, not yet validated configuration."""

    directory: Path
    env: str
    data: dict[str, Any]
    files: dict[str, str]
    lazy: bool = False

    @property
    def digest(self) -> str:
        """Hash of the settings files (what rollback restores), secrets excluded."""
        blob = json.dumps(self.files, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    @property
    def fingerprint(self) -> str:
        """Hash of the effective settings, environment variables included."""
        return hashlib.sha256(json.dumps(self.data, sort_keys=True, default=str).encode()).hexdigest()

    def section(self, name: str) -> dict[str, Any]:
        value = self.data.get(name, {})
        return value if isinstance(value, dict) else {}

    def locate(self, dotted_key: str) -> str:
        """Name where a key's value came from: an environment variable or the settings file defining most of it."""
        parts = [part for part in re.split(r"\.|\[\d+\]", dotted_key) if part]
        for depth in range(len(parts), 0, -1):
            variable = f"{ENVVAR_PREFIX}_" + "__".join(parts[:depth]).upper()
            if variable in os.environ:
                return f"environment variable {variable}"
        best: tuple[int, str] = (0, str(self.directory / SETTINGS_FILES[0]))
        for name in (*SETTINGS_FILES, SECRETS_FILE):
            path = self.directory / name
            try:
                document = _lower(tomllib.loads(path.read_text(encoding="utf-8")))
            except (OSError, tomllib.TOMLDecodeError):
                continue
            for root in (document.get("default"), document.get(self.env)):
                depth, node = 0, root
                while depth < len(parts) and isinstance(node, dict) and parts[depth] in node:
                    node = node[parts[depth]]
                    depth += 1
                if depth and depth >= best[0]:
                    best = (depth, str(path))
        return best[1]


def _dynaconf_tokens() -> frozenset[str]:
    from dynaconf.utils.parse_conf import converters

    return frozenset(converters)


def _dynamic_value(value: str) -> str | None:
    """Return the Dynaconf token (``@format``, ``@read_file``, …) that ``value`` starts with, if any."""
    head = value.lstrip().lstrip("'").partition(" ")[0].lower()
    return head if head in _dynaconf_tokens() else None


def find_dynamic(document: Any, prefix: str = "") -> tuple[str, str] | None:
    """Return ``(dotted key, what)`` of the first Dynaconf directive in a parsed document: a lazy value or a ``dynaconf_*`` key."""
    if isinstance(document, Mapping):
        for key, value in document.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            if str(key).lower().startswith("dynaconf"):
                return dotted, f"the Dynaconf directive '{key}'"
            found = find_dynamic(value, dotted)
            if found:
                return found
    elif isinstance(document, list):
        for position, value in enumerate(document):
            found = find_dynamic(value, f"{prefix}[{position}]")
            if found:
                return found
    elif isinstance(document, str):
        token = _dynamic_value(document)
        if token:
            return prefix, f"a Dynaconf '{token}' value"
    return None


def _settings_key(dotted: str) -> str:
    """Drop the environment table from a key found in a file (``default.storage.url`` → ``storage.url``)."""
    head, _, rest = dotted.partition(".")
    return rest if head.lower() in (*ENVIRONMENTS, "default") and rest else dotted


def refuse_dynamic(text: str, *, file: str) -> None:
    """Refuse settings text sent over the API or the CLI that Dynaconf would evaluate: it is plain TOML only."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"invalid TOML: {error}", file=file) from None
    found = find_dynamic(document)
    if found:
        key, what = found
        raise ConfigError(
            f"{what} is not accepted in settings sent over the API or the command line: they are plain TOML. "
            "Write the value itself, or put secrets in the environment or .secrets.toml.",
            file=file,
            key=_settings_key(key),
        )


def settings_file_name(name: str) -> str:
    """Return ``name`` if it can be a settings file in the settings directory; raise :class:`ValueError` otherwise."""
    if not name.endswith(".toml") or name.startswith(".") or any(c in name for c in "/\\\0") or not name.isprintable():
        raise ValueError("must be the name of a settings file (*.toml) in the settings directory: no path separators, NUL or dot files")
    return name


def _new_dynaconf(directory: Path, present: list[str], env: str, *, lazy: bool) -> Dynaconf:
    return Dynaconf(
        settings_files=present,
        root_path=str(directory),
        environments=True,
        env=env,
        envvar_prefix=ENVVAR_PREFIX,
        env_switcher=f"{ENVVAR_PREFIX}_ENV",
        merge_enabled=True,
        load_dotenv=False,
        auto_cast=lazy,
    )


def load(directory: Path, env: str | None = None) -> RawConfig:
    """Load the settings directory through Dynaconf; raise :class:`ConfigError` for unreadable files.

    Values are plain: Dynaconf's lazy formats and converters are refused unless ``kernel.lazy_formats``
    (read from the plain files and environment first) lets the files on disk use them.
    """
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise ConfigError("the settings directory does not exist; pass --settings DIR or set BOTCRIPTOFY_SETTINGS_DIR", file=str(directory))
    env = (env or os.environ.get(f"{ENVVAR_PREFIX}_ENV") or "development").lower()
    if env not in ENVIRONMENTS:
        raise ConfigError(f"unknown environment '{env}'; use one of {', '.join(ENVIRONMENTS)}", key=f"{ENVVAR_PREFIX}_ENV")
    files: dict[str, str] = {}
    documents: dict[str, dict[str, Any]] = {}
    present: list[str] = []
    for name in (*SETTINGS_FILES, SECRETS_FILE):
        path = directory / name
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"invalid TOML: {error}", file=str(path)) from None
        unknown_envs = [k for k, v in document.items() if isinstance(v, dict) and k.lower() not in (*ENVIRONMENTS, "default")]
        if unknown_envs:
            raise ConfigError(
                f"top-level table '[{unknown_envs[0]}]' is not an environment; put sections under [default.<section>] "
                f"or one of [{'], ['.join(ENVIRONMENTS)}]",
                file=str(path),
                key=unknown_envs[0],
            )
        present.append(name)
        documents[name] = document
        if name != SECRETS_FILE:
            files[name] = text
    data = _as_dict(_new_dynaconf(directory, present, env, lazy=False), directory)
    kernel_section = data.get("kernel")
    lazy = isinstance(kernel_section, dict) and kernel_section.get("lazy_formats") is True
    if lazy:
        data = _as_dict(_new_dynaconf(directory, present, env, lazy=True), directory)
        return RawConfig(directory=directory, env=env, data=data, files=files, lazy=True)
    for name, document in documents.items():
        found = find_dynamic(document)
        if found:
            key, what = found
            raise ConfigError(
                f"{what} is not evaluated: Dynaconf's lazy formats are off. Write the value itself, "
                "or let the files on disk use them with [kernel] lazy_formats = true (see docs/operations.md).",
                file=str(directory / name),
                key=_settings_key(key),
            )
    raw = RawConfig(directory=directory, env=env, data=data, files=files)
    found = find_dynamic({key: value for key, value in data.items()})
    if found:
        key, what = found
        raise ConfigError(f"{what} is not evaluated: Dynaconf's lazy formats are off. Set the value itself.", file=raw.locate(key), key=key)
    return raw


def _as_dict(dynaconf: Dynaconf, directory: Path) -> dict[str, Any]:
    try:
        data = _lower(dynaconf.as_dict())
    except Exception as error:  # Dynaconf reports bad environment values this way; its message may quote them
        raise ConfigError(
            f"cannot load settings ({type(error).__name__}); check the BOTCRIPTOFY_* environment variables", file=str(directory)
        ) from None
    for key in _NOT_SETTINGS:
        data.pop(key, None)
    return data  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ValidConfig:
    """A configuration validated against the kernel's and every enabled plugin's schema."""

    raw: RawConfig
    kernel: KernelSettings
    disabled: frozenset[str]
    plugins: dict[str, BaseModel | None] = field(default_factory=dict)


def validate(raw: RawConfig, schemas: Mapping[str, Any], installed: set[str], enabled: set[str]) -> ValidConfig:
    """Validate ``raw``: sections must name installed plugins, and enabled plugins' sections must fit their schema.

    ``schemas`` maps plugin names to a :class:`SettingsSchema` or None.
    """
    for name, value in raw.data.items():
        if name in RESERVED_SECTIONS:
            continue
        if name not in installed:
            known = ", ".join(sorted(installed)) or "none"
            raise ConfigError(
                f"unknown plugin '{name}' (installed plugins: {known}); install it or remove the section",
                file=raw.locate(name),
                key=name,
            )
        if not isinstance(value, dict):
            raise ConfigError(f"must be a table of the plugin's settings, not {type(value).__name__}", file=raw.locate(name), key=name)
    reserved = {name: _validate_section(raw, name, model) for name, model in RESERVED_SECTIONS.items()}
    plugins_section = reserved["plugins"]
    assert isinstance(plugins_section, PluginsSection)
    for position, name in enumerate(plugins_section.disabled):
        if name not in installed:
            raise ConfigError(
                f"unknown plugin '{name}' in the disabled list (installed plugins: {', '.join(sorted(installed))})",
                file=raw.locate("plugins.disabled"),
                key=f"plugins.disabled[{position}]",
            )
    validated: dict[str, BaseModel | None] = {}
    for name in sorted(enabled - set(plugins_section.disabled)):
        schema = schemas.get(name)
        if schema is None:
            if raw.section(name):
                raise ConfigError(f"plugin '{name}' takes no settings; remove the section", file=raw.locate(name), key=name)
            validated[name] = None
            continue
        validated[name] = _validate_section(raw, name, schema.model)
        if raw.env == "production":
            _refuse_committed_secrets(raw, name, schema.model)
    kernel_settings = reserved["kernel"]
    assert isinstance(kernel_settings, KernelSettings)
    return ValidConfig(raw=raw, kernel=kernel_settings, disabled=frozenset(plugins_section.disabled), plugins=validated)


def _refuse_committed_secrets(raw: RawConfig, section: str, model: type[BaseModel]) -> None:
    """In production, a ``SecretStr`` setting must come from the environment or ``.secrets.toml``."""
    for field_name, info in model.model_fields.items():
        if "SecretStr" not in repr(info.annotation) or field_name not in raw.section(section):
            continue
        key = f"{section}.{field_name}"
        source = raw.locate(key)
        if source.endswith(SETTINGS_FILES):
            variable = f"{ENVVAR_PREFIX}_{section.upper()}__{field_name.upper()}"
            raise ConfigError(
                f"is a secret: set it with the environment variable {variable} or in {SECRETS_FILE}, never in a committed settings file",
                file=source,
                key=key,
            )


def _validate_section(raw: RawConfig, name: str, model: type[BaseModel]) -> BaseModel:
    try:
        return model.model_validate(raw.section(name))
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        key = ".".join([name, *(str(part) for part in first["loc"])])
        reason = first["msg"]
        if first["type"] == "extra_forbidden":
            reason = f"unknown setting (the '{name}' section accepts: {', '.join(model.model_fields)})"
        source = raw.locate(key)
        if _sensitive(raw, model, first["loc"], source):
            # Never echo what may be a secret, or a value read from the environment or (lazily) from a file.
            if first["type"] in ("value_error", "assertion_error"):
                reason = "invalid value"
            reason = f"{reason} (the value is not shown)"
        elif "input" in first and first["type"] != "missing":
            reason = f"{reason} (got {first['input']!r})"
        raise ConfigError(reason, file=source, key=key) from None


def _sensitive(raw: RawConfig, model: type[BaseModel], loc: tuple[int | str, ...], source: str) -> bool:
    """Whether a value must not appear in an error: a secret field, or a value from the environment or a lazy format."""
    if raw.lazy or source.startswith("environment variable"):
        return True
    if any(isinstance(part, str) and _SECRET_KEY.search(part) for part in loc):
        return True
    field_info = model.model_fields.get(str(loc[0])) if loc else None
    return field_info is not None and "Secret" in repr(field_info.annotation)


def diff(previous: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Return ``{dotted key: {"from": old, "to": new}}`` for every key that differs."""
    old, new = flatten(dict(previous)), flatten(dict(current))
    changes: dict[str, dict[str, Any]] = {}
    for key in sorted(old.keys() | new.keys()):
        if old.get(key, _MISSING) != new.get(key, _MISSING):
            changes[key] = {"from": old.get(key), "to": new.get(key)}
    return changes


_MISSING = object()
