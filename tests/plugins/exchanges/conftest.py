"""Fixtures: a kernel with storage, auth, billing, exchanges and trading on SQLite and PostgreSQL (``make_trading``)."""

from support import make_trading

__all__ = ["make_trading"]
