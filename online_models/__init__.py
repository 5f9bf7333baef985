"""Online models of customer behaviour over plain dict features; no broker, no cache."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("crm-scorer")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
