"""The error hierarchy: ``EngagementError`` at the root, every failure a named class.

``retriable`` tells a retry loop whether trying again can help.
"""

from __future__ import annotations


class EngagementError(Exception):
    """Root of every error this project raises on purpose."""

    retriable = False


class ConfigurationError(EngagementError):
    """A setting is missing or invalid; fix the environment and restart."""


class BadDurationError(ConfigurationError, ValueError):
    """A duration could not be parsed."""


class BadInstantError(ConfigurationError, ValueError):
    """A time could not be parsed."""


class StateFormatError(EngagementError):
    """Stored per-user state has an unknown version or a bad length."""


class NewerStateError(StateFormatError):
    """Stored per-user state was written by a newer release (a later format version).

    Reading it would misread fields this release does not know, and writing
    it back would drop them: upgrade this worker or tool (docs/OPERATIONS.md)."""

    def __init__(self, version: int, readable_version: int) -> None:
        super().__init__(
            f"user state in format version {version}, newer than this release reads "
            f"(up to {readable_version}): it was written by a newer worker; upgrade this "
            "one, never downgrade after a newer worker has written a partition "
            "(docs/OPERATIONS.md, rolling upgrade)"
        )
        self.version = version


class TopicMismatchError(EngagementError):
    """An existing topic disagrees with what the deployment needs."""


class ServiceStartError(EngagementError):
    """A process this project starts (broker, Redis) did not come up."""

    retriable = True
