"""BotCriptoFy backup plugin: pgBackRest for PostgreSQL, sealed online snapshots for SQLite, scheduled, verified, drilled.

The entry point ``backup`` is :data:`plugin`, a :class:`BackupPlugin`. See docs/backup.md.
"""

from ._keys import KEYS_VARIABLE, PG_CIPHER_VARIABLE
from ._plugin import BackupPlugin
from ._settings import BackupSettings

__version__ = "0.1.0"

plugin = BackupPlugin()

__all__ = ["KEYS_VARIABLE", "PG_CIPHER_VARIABLE", "BackupPlugin", "BackupSettings", "__version__", "plugin"]
