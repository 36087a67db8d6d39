"""The service: the runtime with the kernel's built-in plugin, as the public API offers it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from . import _builtin
from ._runtime import Runtime as _Runtime


class Runtime(_Runtime):
    """The process-wide ASGI application: serves the current generation and applies configuration changes.

    It runs the kernel's built-in plugin (health, readiness, plugin list, configuration admin) beside
    ``plugins`` given in code and, with ``discover``, every installed plugin.
    """

    def __init__(
        self,
        settings_dir: str | os.PathLike[str] | None = None,
        *,
        env: str | None = None,
        plugins: Mapping[str, Any] | None = None,
        discover: bool = True,
        watch: bool = True,
    ) -> None:
        super().__init__(settings_dir, env=env, plugins=plugins, discover=discover, watch=watch, builtin=_builtin)


def create_app(settings_dir: str | None = None, *, env: str | None = None) -> Runtime:
    """Return the ASGI application: a :class:`Runtime` over the settings directory and every installed plugin."""
    return Runtime(settings_dir, env=env)
