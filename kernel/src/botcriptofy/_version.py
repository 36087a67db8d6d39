"""The kernel's version, read from its distribution."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("botcriptofy")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
