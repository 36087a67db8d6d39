"""Plugin discovery: entry points, manifests, kernel-version checks and hook verification."""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as metadata
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pluggy
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from . import hookspecs
from ._errors import PluginError
from ._markers import PROJECT
from ._types import SettingsSchema
from ._version import __version__

log = logging.getLogger("botcriptofy.plugins")

ENTRY_POINT_GROUP = "botcriptofy"
_HOOK_NAMES = sorted(name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), f"{PROJECT}_spec"))


@dataclass(frozen=True)
class PluginInfo:
    """What the kernel knows of one plugin: its manifest, or why it was refused."""

    name: str
    plugin: Any
    version: str
    distribution: str | None = None
    kernel_requirement: str | None = None
    schema: SettingsSchema | None = None
    hooks: tuple[str, ...] = ()
    builtin: bool = False
    error: str | None = field(default=None, compare=False)
    loaded_version: str | None = field(default=None, compare=False)

    @property
    def running_version(self) -> str:
        """The version of the code this process runs: the one installed when it first imported the plugin."""
        return self.loaded_version or self.version

    @property
    def restart_pending(self) -> bool:
        """Whether another version is installed than the one running (new code needs a restart of the workers)."""
        return self.running_version != self.version

    @property
    def live_keys(self) -> frozenset[str]:
        return self.schema.live if self.schema is not None else frozenset()

    @property
    def guarded_keys(self) -> frozenset[str]:
        return self.schema.guarded if self.schema is not None else frozenset()

    def refused(self, error: BaseException | str) -> PluginInfo:
        return replace(self, error=str(error))


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, which also adds the hook specifications a plugin contributes through ``register_hookspecs``."""

    def register(self, plugin: object, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        for impl in self.hook.register_hookspecs.get_hookimpls():
            if impl.plugin is plugin:
                contributed: Any = impl.function()
                for specs in contributed or ():
                    self.add_hookspecs(specs)
        return registered


def new_plugin_manager() -> pluggy.PluginManager:
    manager = PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def _kernel_requirement(distribution: metadata.Distribution) -> Requirement | None:
    for line in distribution.requires or ():
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(requirement.name) == "botcriptofy" and not requirement.marker:
            return requirement
    return None


def inspect_plugin(
    name: str,
    plugin: Any,
    *,
    version: str = "0",
    distribution: str | None = None,
    kernel_requirement: str | None = None,
    builtin: bool = False,
) -> PluginInfo:
    """Verify ``plugin``'s hooks and read its manifest; return a :class:`PluginInfo` (refused when broken)."""
    info = PluginInfo(
        name=name, plugin=plugin, version=version, distribution=distribution, kernel_requirement=kernel_requirement, builtin=builtin
    )
    if kernel_requirement is not None:
        supported = Requirement(kernel_requirement).specifier
        if not supported.contains(Version(__version__), prereleases=True):
            return info.refused(
                PluginError(
                    name,
                    f"version {version} supports botcriptofy {supported}, but botcriptofy {__version__} is installed.",
                    fix=f"install a release of {distribution or name} that supports botcriptofy {__version__}, or a kernel in its range.",
                )
            )
    manager = new_plugin_manager()
    try:
        manager.register(plugin, name=name)
        manager.check_pending()
    except pluggy.PluginValidationError as error:
        return info.refused(_explain(name, error))
    hooks = tuple(sorted(hook.name for hook in manager.get_hookcallers(plugin) or ()))
    schema: SettingsSchema | None = None
    if "plugin_settings_schema" in hooks:
        try:
            results = manager.hook.plugin_settings_schema()
            schema = results[0] if results else None
        except Exception as error:
            return info.refused(
                PluginError(name, f"raised {error!r}", hook="plugin_settings_schema", fix="fix the plugin's settings model.")
            )
        if schema is not None and not isinstance(schema, SettingsSchema):
            return info.refused(
                PluginError(
                    name,
                    f"returned {type(schema).__name__}, not SettingsSchema",
                    hook="plugin_settings_schema",
                    fix="return botcriptofy.SettingsSchema(model=..., live=...).",
                )
            )
        if schema is not None:
            for kind, keys in (("live", schema.live), ("guarded", schema.guarded)):
                unknown = keys - set(schema.model.model_fields)
                if unknown:
                    return info.refused(
                        PluginError(
                            name,
                            f"declares {kind} keys that are not settings: {', '.join(sorted(unknown))}",
                            hook="plugin_settings_schema",
                            fix=f"list only fields of the settings model in {kind}.",
                        )
                    )
            if schema.live & schema.guarded:
                return info.refused(
                    PluginError(
                        name,
                        f"declares keys both live and guarded: {', '.join(sorted(schema.live & schema.guarded))}",
                        hook="plugin_settings_schema",
                        fix="a guarded key (a backend address) is never live; remove it from live.",
                    )
                )
            try:
                schema.model.model_validate({})
            except Exception as error:
                return info.refused(
                    PluginError(
                        name,
                        f"its settings have no usable defaults: {error}",
                        hook="plugin_settings_schema",
                        fix="give every setting a default so the plugin starts with an empty section.",
                    )
                )
    return replace(info, schema=schema, hooks=hooks)


def _explain(name: str, error: pluggy.PluginValidationError) -> PluginError:
    message = str(error)
    for word in message.replace("'", " ").replace('"', " ").split():
        if word.isidentifier() and word not in _HOOK_NAMES and word != name:
            close = difflib.get_close_matches(word, _HOOK_NAMES, n=1)
            if close:
                return PluginError(name, message, hook=word, fix=f"did you mean '{close[0]}'? The hooks are listed in docs/hooks.md.")
    return PluginError(name, message, fix="match the hook's name and arguments to docs/hooks.md.")


_loaded: dict[tuple[str, str, str], Any] = {}
_first_loaded: dict[str, str] = {}


def discover() -> dict[str, PluginInfo]:
    """Find every installed plugin through the ``botcriptofy`` entry-point group.

    Safe to call while serving: a distribution installed since the last call is found.
    """
    importlib.invalidate_caches()
    found: dict[str, PluginInfo] = {}
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        distribution = entry_point.dist
        dist_name = distribution.metadata["Name"] if distribution is not None else None
        version = distribution.version if distribution is not None else "0"
        requirement = _kernel_requirement(distribution) if distribution is not None else None
        name = entry_point.name
        if name in found:
            found[name] = found[name].refused(
                PluginError(
                    name, f"is provided by two distributions ({found[name].distribution} and {dist_name}).", fix="uninstall one of them."
                )
            )
            continue
        cache_key = (name, dist_name or "", version)
        try:
            plugin = _loaded.get(cache_key) or entry_point.load()
        except Exception as error:
            found[name] = PluginInfo(name=name, plugin=None, version=version, distribution=dist_name).refused(
                PluginError(
                    name, f"cannot be imported: {error!r}.", fix=f"reinstall {dist_name or name} or disable it in plugins.disabled."
                )
            )
            continue
        _loaded[cache_key] = plugin
        # Python imports a module once: a version installed later is not the code that runs until a restart.
        loaded_version = _first_loaded.setdefault(getattr(plugin, "__name__", name), version)
        found[name] = replace(
            inspect_plugin(
                name, plugin, version=version, distribution=dist_name, kernel_requirement=str(requirement) if requirement else None
            ),
            loaded_version=loaded_version,
        )
    for info in found.values():
        if info.error:
            log.error("refused %s", info.error, extra={"plugin": info.name})
    return found


def merge(discovered: Mapping[str, PluginInfo], extra: Mapping[str, PluginInfo]) -> dict[str, PluginInfo]:
    merged = dict(discovered)
    merged.update(extra)
    return merged
