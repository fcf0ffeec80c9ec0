"""Errors the station and the pipeline raise for bad input.

Every error names the file or field at fault and says what to do, so an
operator or an ML engineer can act on the message alone.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class LineguardError(Exception):
    """Base class: a problem with input that the user can fix."""


class ImageError(LineguardError):
    """An image file or frame cannot be decoded or has the wrong shape."""


class RoiError(LineguardError):
    """The region of interest does not fit inside the image."""


class BundleError(LineguardError):
    """An engine bundle is missing, tampered with, or from another schema."""


class DatasetError(LineguardError):
    """A dataset folder is missing, empty, or inconsistent."""


class ConfigError(LineguardError):
    """A parameter or config field has a value that cannot work."""


def exit_code(command: Callable[[], int]) -> int:
    """Run a CLI command; a :class:`LineguardError` becomes one line on stderr and exit code 2, never a traceback."""
    try:
        return command()
    except LineguardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
