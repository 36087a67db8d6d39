"""Where the CEO agent keeps its :class:`botcriptofy_agents.Ticker` when no workflow engine runs its schedule."""

from __future__ import annotations

from botcriptofy import StashKey
from botcriptofy_agents import Ticker

TICKER: StashKey[Ticker] = StashKey("botcriptofy_agent_ceo.ticker")
