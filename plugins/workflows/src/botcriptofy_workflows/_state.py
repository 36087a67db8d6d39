"""Where the running engine lives on a kernel generation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botcriptofy import StashKey

if TYPE_CHECKING:
    from ._engine import Engine

ENGINE: StashKey[Engine] = StashKey("workflows")
