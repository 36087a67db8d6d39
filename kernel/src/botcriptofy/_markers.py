"""The pluggy markers for the ``botcriptofy`` project."""

import pluggy

PROJECT = "botcriptofy"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
