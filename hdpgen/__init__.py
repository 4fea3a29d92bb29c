"""The ``hdpgen`` command line and the reports it writes.

The top of the layering: it uses ``hw``, ``golden``, ``sim`` and ``synth``; none of those
imports it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hdpgen")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
