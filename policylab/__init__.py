"""policylab: reinforcement learning methods for control research, on one shared core."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("policylab")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

from policylab.core.agent import load  # noqa: E402

__all__ = ["__version__", "load"]
