"""avalanche-hpc: avalanche debris detection in Sentinel-1 SAR patches, as batch jobs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("avalanche-hpc")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
