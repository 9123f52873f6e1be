"""Exceptions the engine raises at its boundary.

Peer behaviour (refusals, failure statuses, timeouts) is never raised: it comes back as data.
"""
from __future__ import annotations


class EngineError(Exception):
    """Base class for engine errors."""


class UserFacingError(EngineError):
    """An error whose text is written for the person running the tool and shown verbatim."""


class ConfigError(UserFacingError):
    """Invalid settings or command-line values (exit code 2)."""


class DestinationUnreachable(UserFacingError):
    """The destination refused the connection or the association (exit code 3)."""


def describe_os_error(exc: OSError) -> str:
    """A sentence for a folder or file the system refused (missing, not writable, a file)."""
    where = " (%s)" % exc.filename if exc.filename else ""
    return ("The computer refused a file operation%s: %s. Check the path and that you may "
            "write there." % (where, exc.strerror or exc))


class ManifestError(UserFacingError):
    """The manifest database cannot be opened or is not ours."""
